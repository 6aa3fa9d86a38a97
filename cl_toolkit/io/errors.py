"""The two kinds of failure every layer raises: bad input (exit 2) and failure inside the work (exit 1)."""

from __future__ import annotations

import os


class InputError(Exception):
    """Bad input or bad usage. The CLI prints ``str(err)`` as one line and exits 2."""

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 line: int | None = None, field: str | None = None):
        where = str(path) if path is not None else ""
        if line is not None:
            where += f":{line}"
        if field is not None:
            message = f"field '{field}': {message}"
        super().__init__(f"{where}: {message}" if where else message)


class TrainingError(Exception):
    """Failure inside the work (exit 1), e.g. a NaN loss."""

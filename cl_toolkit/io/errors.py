"""The two kinds of failure every layer raises: bad input (exit 2) and failure inside the work (exit 1)."""

from __future__ import annotations

import math
import os
from typing import Any


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


def check_range(option: str, value: Any, kind: type = float, lo: float | None = None, lo_inclusive: bool = True,
                hi: float | None = None, hi_inclusive: bool = True) -> None:
    """``value`` is a finite ``kind`` (int or float) within [lo, hi] (open ends where not
    inclusive; None = unbounded), or one InputError naming ``option``: the one numeric validator
    of the command line, the config and the method settings."""
    ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise InputError(f"{option} must be {'an integer' if kind is int else 'a finite number'}, got {value!r}")
    low = lo is None or (value >= lo if lo_inclusive else value > lo)
    high = hi is None or (value <= hi if hi_inclusive else value < hi)
    if not (low and high):
        parts = ([] if lo is None else [f"{'>=' if lo_inclusive else '>'} {lo}"]) + (
            [] if hi is None else [f"{'<=' if hi_inclusive else '<'} {hi}"])
        raise InputError(f"{option} must be {' and '.join(parts)}, got {value!r}")

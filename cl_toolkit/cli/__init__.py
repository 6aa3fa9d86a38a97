"""The ``cltk`` command line: parse, call the library, print JSON. Nothing else lives here.

Exit codes: 0 success, 1 failure inside the work, 2 bad usage or bad input (one line on
stderr), 130 interrupted (a checkpoint was written; continue with ``--resume``).

Commands import the library inside their bodies, not at the top of these modules: every
command module is imported to build ``cltk --help``, and importing torch, the trainer or Faiss
there would cost every command, ``--help`` included, seconds of start-up (measured in
docs/benchmarks.md, "Start-up"). A command loads only the layers it uses.
"""

from __future__ import annotations

import sys

import typer

from ..io import InputError, TrainingError, disk_full
from . import apps, evaluate, rec, train, vectors  # noqa: F401  (each registers its commands on ``app``)
from .common import app

FULL = "no space left on the device (or over the file-size limit) while writing; nothing half-written is left"


def _fail(msg: str, code: int) -> None:
    sys.stderr.write(f"cltk: error: {msg}\n")
    sys.exit(code)


def main() -> None:
    """Entry point: run the app, turning library errors into one line and an exit code."""
    try:
        rc = app(standalone_mode=False)
    except InputError as e:
        _fail(str(e), 2)
    except OSError as e:   # a file that could not be read or written: one line, not a traceback
        if disk_full(e):
            _fail(f"{e.filename + ': ' if e.filename else ''}{FULL}", 1)
        _fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}", 2)
    except TrainingError as e:
        _fail(str(e), 1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.stderr.write("cltk: aborted\n")
        sys.exit(130)
    except typer.TyperException as e:   # bad options and values (typer's own click): one line, as all bad input
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            sys.exit(0)
        _fail(" ".join(e.format_message().split()), getattr(e, "exit_code", 2))
    except RuntimeError as e:        # torch makes a RuntimeError of a full disk under its writers
        if not disk_full(e):
            raise
        _fail(FULL, 1)
    sys.exit(rc if isinstance(rc, int) else 0)


__all__ = ["app", "main"]

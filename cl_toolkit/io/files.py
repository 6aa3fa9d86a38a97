"""Atomic outputs: every file or folder is written to a temporary sibling and renamed into place, so a
failed run never leaves a half-written output behind; existing outputs need ``force``. And
``available_cpus``, the cores this process may use (here so that the Faiss tooling, which imports no
torch, shares it with the trainer)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError, TrainingError


def available_cpus() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a container's
    cpuset), which can be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_count(threads: int | None = None, processes: int = 1) -> int:
    """Compute threads for this process: ``threads`` (``--threads``) when given, else
    ``OMP_NUM_THREADS`` when set, else this process's share of the cores it may run on when
    ``processes`` share them (torchrun ranks on one machine)."""
    if threads:
        return int(threads)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, available_cpus() // max(1, processes))


def _proc_stat() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine since boot, from /proc/stat (Linux)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)          # idle + iowait
    total = sum(fields[:8])                                           # guest time is inside user
    return total - idle, total


class CpuShare:
    """How many cores other processes used since the last call: the machine's busy CPU time
    (/proc/stat) minus this process's own (os.times), over the wall time between samples.
    ``threads()`` turns it into the thread count that keeps this process off the cores others
    hold: on a busy machine, threads that wait at every parallel region for a core another
    process holds waste most of it (docs/benchmarks.md, "A busy CPU")."""

    def __init__(self, cores: int):
        self.cores = max(1, cores)
        self._sample = self._now()

    @staticmethod
    def _now() -> tuple[float, tuple[int, int] | None, float]:
        t = os.times()
        return time.monotonic(), _proc_stat(), t.user + t.system

    def others(self) -> float | None:
        """Cores used by other processes since the previous call (None where unknown)."""
        (t0, s0, own0), now = self._sample, self._now()
        self._sample = now
        t1, s1, own1 = now
        if s0 is None or s1 is None or t1 - t0 <= 0 or s1[1] <= s0[1]:
            return None
        machine = (os.cpu_count() or 1) * (s1[0] - s0[0]) / (s1[1] - s0[1])
        return max(0.0, machine - (own1 - own0) / (t1 - t0))

    def threads(self) -> int | None:
        """The cores left free by others, at least one (None where unknown)."""
        others = self.others()
        return None if others is None else max(1, min(self.cores, round(self.cores - others)))


def auto_threads(sample_seconds: float = 0.2) -> int:
    """The thread count for short work (embedding, tagging, index building) when no ``--threads``
    and no ``OMP_NUM_THREADS`` is given: the cores other processes leave free over a short sample."""
    n = thread_count(None)
    if os.environ.get("OMP_NUM_THREADS"):
        return n
    share = CpuShare(n)
    time.sleep(sample_seconds)
    return share.threads() or n


FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
FULL_MESSAGES = ("No space left", "File too large", "Disk quota")


def disk_full(e: BaseException | None) -> bool:
    """True when ``e``, or an exception it was raised from or during, says the disk is full or a
    file-size limit was reached (an OSError, or the RuntimeError torch and numpy make of one)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in FULL_ERRNOS:
            return True
        text = str(e)
        if any(m in text for m in FULL_MESSAGES) or re.search(r"\d+ requested and \d+ written", text):
            return True
        e = e.__cause__ or e.__context__
    return False


def full_error(path: str | os.PathLike) -> TrainingError:
    return TrainingError(f"{path}: no space left on the device (or over the file-size limit) while writing it; "
                         "nothing half-written is left")


def check_writable(path: str | os.PathLike) -> None:
    """Refuse an output whose nearest existing parent folder this process cannot write to."""
    p = Path(path).absolute()
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write here ({parent} is not a writable folder)", path)


def check_output(path: str | os.PathLike, force: bool) -> None:
    """Refuse to overwrite an existing output unless ``force``, and an output that cannot be written."""
    if str(path) == "-":
        return
    if Path(path).exists() and not force:
        raise InputError("already exists; pass --force to overwrite", path)
    check_writable(path)


def _umask_mode(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, force: bool = False, binary: bool = False) -> Iterator[Any]:
    """Write a file via a temporary sibling and rename it into place on success."""
    path = Path(path)
    check_output(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            yield f
        os.chmod(tmp, _umask_mode(0o666))  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if disk_full(e):
            raise full_error(path) from None
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Build an output folder in a temporary sibling and move it into place on success;
    on failure nothing is left behind and an existing folder is untouched."""
    path = Path(path)
    check_output(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _umask_mode(0o777))  # mkdtemp creates 0700
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(e):
            raise full_error(path) from None
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_file(path, force=True) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")

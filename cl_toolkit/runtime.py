"""Where and how the work runs: device, precision, threads, seeds and RNG states, the environment
a run records (versions, git commit), and the one progress bar. Used by the trainer, finetune,
embed, eval and the CLI, so that a command that does not train never imports the trainer."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .io import InputError, auto_threads, available_cpus, thread_count

# Two per-shape caches on the CPU's bf16 path: oneDNN's compiled primitives
# (ONEDNN_PRIMITIVE_CACHE_CAPACITY) and ideep's prepared matmuls (LRU_CACHE_CAPACITY), 1,024
# entries each by default. Text batches pad to their own longest text, so every new length adds
# entries, and CD-TOM's heap grew step after step through its first epoch (docs/benchmarks.md,
# "Memory"); ideep's cache was the one that grew it. A fixed model's steps need far fewer. Read
# once, at the first use; a user's own setting wins.
for _cache in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
    os.environ.setdefault(_cache, "64")

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# ---------------------------------------------------------------- device, precision, threads

def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N`` -> a torch device; anything
    else, or CUDA where there is none, is one clear InputError."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, _, index = name.partition(":")
    if base not in ("cpu", "cuda") or (index and not (base == "cuda" and index.isdigit())):
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if base == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but CUDA is not available on this machine")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16
    autocast measurably speeds up convolutions (docs/benchmarks.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on CUDA (fp16 where bf16 is missing) and on CPUs with native bf16, else fp32."""
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def set_threads(threads: int | None = None, processes: int = 1) -> int:
    """Torch's intra-op threads for this process (``io.thread_count``: ``--threads``, else
    ``OMP_NUM_THREADS``, else this process's share of its cores). Returns the count."""
    n = thread_count(threads, processes)
    torch.set_num_threads(n)
    return n


def use_threads(threads: int | None = None) -> int:
    """Torch's threads for short work (embedding, tagging): ``threads`` when asked for, else
    ``io.auto_threads`` (the cores other processes leave free). Returns the count."""
    n = threads or auto_threads()
    torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------- memory

_LIBC: Any = None


def release_free_memory() -> None:
    """Give the C heap's free memory back to the OS (glibc's ``malloc_trim``; a no-op where
    there is none). Training steps whose tensors change shape every time (text batches padded to
    their own length) free memory that glibc keeps for reuse but rarely can reuse, so resident
    memory grew by gigabytes over a CD-TOM run; the trainer calls this about once a second
    (docs/benchmarks.md, "Memory")."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC(0)


# ---------------------------------------------------------------- seeds and RNG states

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


# ---------------------------------------------------------------- environment

def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode(errors="replace") if out.returncode == 0 else None


def git_state() -> dict:
    """The code a result came from: ``git_commit``, ``git_dirty`` (uncommitted changes to tracked
    files) and, when dirty, ``git_diff_sha256`` (a hash of ``git diff HEAD``). Nones outside a checkout."""
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    diff = _git("diff", "HEAD") or ""
    state: dict[str, Any] = {"git_commit": commit, "git_dirty": bool(diff)}
    if diff:
        state["git_diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()[:16]
    return state


def environment(device: torch.device | str = "cpu", precision: str = "fp32") -> dict:
    """What ``env.json`` and every benchmark JSON record: versions, code, device, threads, machine."""
    import torchvision  # its version only; see encoders.image for the import's cost

    device = torch.device(device)
    return {
        "cltk": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, **git_state(), "device": str(device),
        "precision": precision, "threads": torch.get_num_threads(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "cpus_available": available_cpus(),
        "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "argv": sys.argv,
    }


# ---------------------------------------------------------------- the progress bar

class ProgressBar:
    """A rich progress bar on stderr when it is a terminal and not ``quiet``; nothing otherwise
    (pipes and CI logs stay clean). ``advance(n)`` for counted work, ``update(done, info)`` for
    the trainer's steps or seconds. A context manager."""

    def __init__(self, label: str, total: float | None = None, quiet: bool = False, transient: bool = True):
        self._p = None
        if quiet or not sys.stderr.isatty():
            return
        from rich.console import Console  # only on a terminal: pipes never pay for rich's import
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(TextColumn(label), BarColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                           console=Console(stderr=True), transient=transient)
        self._task = self._p.add_task(label, total=total or None, info="")
        self._p.start()

    @property
    def advance(self):
        """A callback ``advance(n)`` for library functions, or None when there is no bar."""
        if self._p is None:
            return None
        return lambda n: self._p.advance(self._task, n)

    def update(self, done: float, info: str = "") -> None:
        if self._p is not None:
            self._p.update(self._task, completed=done, info=info)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

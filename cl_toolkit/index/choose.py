"""Choosing an index: factory strings by size and memory budget, memory estimates, vector preparation."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable

import faiss
import numpy as np

from ..io import InputError, auto_threads

FORMAT = 1
RECALL_K = 10
MAX_QUERIES = 1000
FLAT_MAX = 50_000        # below this many vectors exact search is fast enough (auto -> Flat)
HNSW_MAX = 2_000_000     # above this HNSW build time on a CPU gets long; auto prefers IVF
HNSW_M = 32
ADD_BATCH = 65_536
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}

Progress = Callable[[int], None] | None


# ---------------------------------------------------------------- inputs

def parse_memory(text: str | int | None) -> int | None:
    """``512M``, ``2G``, ``1.5GB``, ``300MiB`` or a byte count -> bytes (K/M/G/T are powers of 1024)."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise InputError(f"--max-memory: cannot read {text!r}; use e.g. 512M, 2G or a byte count")
    return int(float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))


def default_memory() -> int:
    """The budget when none is given: half of this machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 1024 ** 3



def prepare(emb: np.ndarray, normalize: bool) -> np.ndarray:
    """float32, C-contiguous copy, rows L2-normalised when ``normalize`` (cosine as inner product)."""
    x = np.array(emb, dtype=np.float32, order="C", copy=True)
    if normalize:
        faiss.normalize_L2(x)
    return x


# ---------------------------------------------------------------- choosing

def _nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: about 4*sqrt(n) as a power of two, with at least 39
    training points per list (Faiss' minimum) and at least 16 lists."""
    p = 2 ** round(math.log2(4 * math.sqrt(n)))
    cap = 2 ** int(math.log2(max(n // 39, 16)))
    return int(max(16, min(p, cap)))


def estimate_memory(factory: str, n: int, d: int) -> int:
    """Rough resident size in bytes of the indexes ``choose_factory`` produces."""
    nlist = int(m.group(1)) if (m := re.search(r"IVF(\d+)", factory)) else 0
    fixed = nlist * d * 4
    if factory == "Flat":
        per = 4 * d
    elif factory.startswith("HNSW"):
        per = 4 * d + 2 * HNSW_M * 4 * 1.05 + 16
    elif factory.endswith(",Flat"):
        per = 4 * d + 8
    elif "SQ8" in factory:
        per = d + 8
    elif "SQ4" in factory:
        per = d / 2 + 8
    elif m := re.search(r"PQ(\d+)", factory):
        per = int(m.group(1)) + 8
        if o := re.match(r"OPQ\d+_(\d+)", factory):
            fixed += d * int(o.group(1)) * 4 + int(o.group(1)) * 256 * 4
    else:
        per = 4 * d
    return int(n * per + fixed)


def choose_factory(n: int, d: int, metric: str = "ip", max_memory: int | None = None) -> str:
    """The ``--kind auto`` rule (measured in benchmarks/index.py, documented in docs/index.md):

    - fewer than FLAT_MAX (50k) vectors: ``Flat``, exact search is fast enough;
    - raw vectors (+ graph links) fit the budget and n <= HNSW_MAX: ``HNSW32``, fastest search
      at high recall;
    - raw vectors fit: ``IVF{nlist},Flat`` (nlist ~ 4*sqrt(n));
    - one byte per dimension fits: ``IVF{nlist},SQ8`` (4x smaller, recall close to Flat);
    - else ``OPQ{m}_{d'},IVF{nlist},PQ{m}`` with the largest m (bytes per vector) that fits.

    ``metric`` does not change the choice today; it is part of the signature because a rule
    that depends on it should not need a new API.
    """
    del metric
    budget = max_memory if max_memory is not None else default_memory()
    if n < FLAT_MAX:
        for f in ("Flat", "SQ8", "SQ4"):
            if estimate_memory(f, n, d) <= budget:
                return f
        return f"PQ{_pq_m(d, budget // max(n, 1) - 8) or 4}"
    hnsw = f"HNSW{HNSW_M}"
    if n <= HNSW_MAX and estimate_memory(hnsw, n, d) <= budget:
        return hnsw
    return choose_ivf_factory(n, d, budget)


def choose_ivf_factory(n: int, d: int, max_memory: int | None = None) -> str:
    """The IVF part of the auto rule (also what ``--shards`` picks, whatever ``n``):
    ``IVF{nlist},Flat`` if the raw vectors fit, else ``IVF{nlist},SQ8``, else OPQ + IVF-PQ with
    the most bytes per vector that fit."""
    budget = max_memory if max_memory is not None else default_memory()
    nlist = _nlist(n)
    for f in (f"IVF{nlist},Flat", f"IVF{nlist},SQ8"):
        if estimate_memory(f, n, d) <= budget:
            return f
    for m in (64, 48, 32, 24, 16, 8, 4):
        dp = min(d, 4 * m) // m * m
        f = f"OPQ{m}_{dp},IVF{nlist},PQ{m}"
        if dp and estimate_memory(f, n, d) <= budget:
            return f
    return f"OPQ4_16,IVF{nlist},PQ4"


def _pq_m(d: int, nbytes: int) -> int | None:
    """The largest number of PQ sub-quantizers dividing ``d`` that fits ``nbytes`` per vector."""
    for m in range(min(d, max(nbytes, 0)), 0, -1):
        if d % m == 0:
            return m
    return None


def make_index(factory: str, d: int, metric: str) -> faiss.Index:
    """``faiss.index_factory`` with its errors turned into one user-facing line."""
    try:
        return faiss.index_factory(d, factory, METRICS[metric])
    except RuntimeError as e:
        raise InputError(f"--kind: unknown or invalid Faiss factory string {factory!r} for dimension {d} "
                         f"({_faiss_msg(e)})") from None


def use_threads(threads: int | None = None) -> int:
    """Faiss's OpenMP threads: ``threads`` when asked for, else the cores other processes leave
    free (``io.auto_threads``). Returns the count."""
    n = threads or auto_threads()
    faiss.omp_set_num_threads(n)
    return n


def write_index(index: faiss.Index, path) -> None:
    """``faiss.write_index`` through a Python file, so that a full disk is an OSError naming the
    file rather than a C++ message on stderr and a RuntimeError."""
    with open(path, "wb") as f:
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))


def _faiss_msg(e: Exception) -> str:
    """The useful last line of a Faiss C++ exception."""
    text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return text.split(": ", 1)[-1] if "Error in" in text else text

"""Faiss indexes over embeddings: choose a type from size and memory, train, add, measure recall
against exact search, tune the search-time knob, search and match.

The index folder (DESIGN.md) is ``index.faiss``, ``meta.jsonl`` (one record per index row: the
id and the fields passed through from the embeddings folder) and ``info.json`` (factory string,
metric, dim, count, producing model, search parameters, measured recall@10, QPS, memory, build
seconds).

How recall is measured (``build``): ``nq`` rows (1,000, or a tenth of a smaller set) are held
out, the index is built from the other rows, the held-out rows are searched and their top 10
compared with exact ``IndexFlat`` search over the same rows (recall@10 = share of the exact top
10 found). The knob (``nprobe`` for IVF, ``efSearch`` for HNSW, and ``k_factor_rf`` for a
refining index) is swept upwards and bisected to the smallest value whose recall reaches the
target with margin (mean minus two standard errors over the queries, so that other queries from
the same distribution reach it too), and the fastest such setting is kept. Then the held-out
rows are added as the *last* ``nq`` rows of the index, so the final index holds every vector and
the measurement is reproducible: the held-out rows are the last ``recall.queries`` rows of
``meta.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .io import InputError, atomic_dir, available_cpus, public, read_jsonl, write_jsonl

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


def check_vectors(emb: np.ndarray, meta: list[dict] | None = None, where: str | os.PathLike | None = None) -> None:
    """Refuse what Faiss would silently accept or crash on: not 2-D, empty, NaN/inf, ids count
    different from the vector count, duplicate ids."""
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise InputError(f"expected a non-empty 2-D array of vectors, got shape {tuple(emb.shape)}", where)
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        rid = f" (id {meta[row]['id']!r})" if meta is not None and row < len(meta) else ""
        raise InputError(f"{int(bad.sum())} vector(s) contain NaN or infinite values, first at row {row}{rid}",
                         where)
    if meta is not None:
        if len(meta) != len(emb):
            raise InputError(f"{len(meta)} ids for {len(emb)} vectors", where)
        ids = [str(r["id"]) for r in meta]
        if len(set(ids)) != len(ids):
            raise InputError("duplicate ids", where)


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


def _faiss_msg(e: Exception) -> str:
    """The useful last line of a Faiss C++ exception."""
    text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return text.split(": ", 1)[-1] if "Error in" in text else text


# ---------------------------------------------------------------- knobs, recall, tuning

def _unwrap(index: faiss.Index) -> tuple[faiss.Index, bool]:
    """The index under pre-transforms (OPQ) and refinement, and whether there is a refinement."""
    index, refine = faiss.downcast_index(index), False
    while True:
        if isinstance(index, faiss.IndexPreTransform):
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexRefine):
            refine, index = True, faiss.downcast_index(index.base_index)
        else:
            return index, refine


def knob(index: faiss.Index, k: int = RECALL_K) -> tuple[str | None, int, int]:
    """The search-time knob and its range: ``nprobe`` 1..nlist for IVF, ``efSearch`` k..2048 for
    HNSW, None for exact or knob-less indexes."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return "nprobe", 1, int(ivf.nlist)
    base, _ = _unwrap(index)
    if isinstance(base, faiss.IndexHNSW):
        return "efSearch", max(k, 16), 2048
    return None, 0, 0


def set_params(index: faiss.Index, params: dict[str, float]) -> None:
    """Apply search parameters (``{"nprobe": 24}``) through ``faiss.ParameterSpace``."""
    ps = faiss.ParameterSpace()
    for name, value in params.items():
        try:
            ps.set_index_parameter(index, name, float(value))
        except RuntimeError as e:
            raise InputError(f"cannot set search parameter {name}={value} ({_faiss_msg(e)})") from None


def per_query_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|found_i ∩ truth_i| / |truth_i| per query (k-recall@k, as in the Faiss wiki); -1 entries
    (no result) never match."""
    k = truth.shape[1]
    hits = ((found[:, :k, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)).any(axis=1)
    return hits.sum(axis=1) / np.maximum((truth >= 0).sum(axis=1), 1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of ``per_query_recall``."""
    return float(per_query_recall(found, truth).mean())


def lower_bound(per_query: np.ndarray) -> float:
    """Mean recall minus two standard errors: the tuned setting must reach the target with this,
    so that it still does on other queries from the same distribution (~97.5% one-sided)."""
    n = len(per_query)
    return float(per_query.mean() - (2 * per_query.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0))


def measure_recall(index: faiss.Index, queries: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, float]:
    """(per-query recall@k of ``index`` against the exact neighbour ids ``truth`` [nq, k], queries
    per second of that one batched search)."""
    t0 = time.perf_counter()
    _, found = index.search(queries, truth.shape[1])
    dt = time.perf_counter() - t0
    return per_query_recall(found, truth), len(queries) / max(dt, 1e-9)


def measure_qps(index: faiss.Index, queries: np.ndarray, k: int, min_seconds: float = 0.5) -> float:
    """Queries per second of batched ``k``-NN search, repeated for at least ``min_seconds``."""
    reps, t0 = 0, time.perf_counter()
    while True:
        index.search(queries, k)
        reps += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return reps * len(queries) / dt


def exact_neighbors(base: np.ndarray, queries: np.ndarray, k: int, metric: str,
                    min_seconds: float = 0.5) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact k-NN, the ground truth: ``faiss.knn`` is what ``IndexFlat.search`` runs, without
    copying ``base`` into an index. Returns (scores, ids, queries per second), the speed measured
    like ``measure_qps`` (batched, repeated for at least ``min_seconds``)."""
    reps, t0 = 0, time.perf_counter()
    while True:
        scores, ids = faiss.knn(queries, base, k, metric=METRICS[metric])
        reps += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return scores, ids, reps * len(queries) / dt


def tune(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, target: float = 0.95) -> dict:
    """Find the fastest search setting whose recall reaches ``target`` with margin (``lower_bound``:
    mean minus two standard errors over the queries): for each refinement factor (if the index
    refines), sweep the knob upwards by doubling, then bisect to the smallest value that passes
    (recall grows with nprobe/efSearch); time the candidates and keep the fastest. When nothing
    passes, keep the setting with the highest recall.
    Returns ``{"params", "recall", "recall_lower_bound", "qps", "target_met", "sweep"}`` with
    ``params`` applied."""
    name, lo, hi = knob(index, truth.shape[1])
    _, refine = _unwrap(index)
    sweep: list[dict] = []

    def trial(params: dict) -> float:
        set_params(index, params)
        per_query, qps = measure_recall(index, queries, truth)
        r, lb = float(per_query.mean()), lower_bound(per_query)
        sweep.append({**params, "recall": round(r, 4), "lower_bound": round(lb, 4), "qps": round(qps, 1)})
        seen[tuple(sorted(params.items()))] = (r, lb)
        return lb

    seen: dict[tuple, tuple[float, float]] = {}

    candidates = []
    for kf in ((2, 4, 8, 16) if refine else (None,)):
        fixed = {} if kf is None else {"k_factor_rf": kf}
        if name is None:
            candidates.append((fixed, trial(fixed)))
            continue
        v, fail = lo, None
        while True:
            r = trial({**fixed, name: v})
            if r >= target or v >= hi:
                break
            fail, v = v, min(2 * v, hi)
        if r >= target and fail is not None:
            a, b = fail, v
            while b - a > 1:
                mid = (a + b) // 2
                if trial({**fixed, name: mid}) >= target:
                    b = mid
                else:
                    a = mid
            v = b
            r = seen[tuple(sorted({**fixed, name: v}.items()))][1]
        candidates.append(({**fixed, name: v}, r))
        if len(candidates) >= 2 and r >= target and candidates[-2][1] >= target:
            break                                   # larger refinement factors only cost more
    meeting = [c for c in candidates if c[1] >= target]
    timed = []
    for params, r in meeting or [max(candidates, key=lambda c: c[1])]:
        set_params(index, params)
        timed.append((measure_qps(index, queries, truth.shape[1]), params, r))
    qps, params, lb = max(timed, key=lambda t: t[0])
    set_params(index, params)
    r = seen[tuple(sorted(params.items()))][0]
    return {"params": params, "recall": round(r, 4), "recall_lower_bound": round(lb, 4), "qps": round(qps, 1),
            "target_met": bool(meeting), "sweep": sweep}


# ---------------------------------------------------------------- build

def _n_queries(n: int) -> int:
    """Held-out queries for the recall measurement: 1,000, or a tenth of a small set."""
    return min(MAX_QUERIES, n // 10)


def _train_size(index: faiss.Index, n: int) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    return min(n, max(30_000, 50 * int(ivf.nlist))) if ivf is not None else min(n, 100_000)


def _hold_out(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(the held-out rows, sorted; the index row order: the other rows in order, then the held-out
    rows). The first draw from ``rng`` of a build; sharded builds make the same one."""
    nq = _n_queries(n)
    held = np.sort(rng.choice(n, nq, replace=False)) if nq else np.zeros(0, np.int64)
    return held, np.concatenate([np.setdiff1d(np.arange(n), held), held])


def _train_sample(index: faiss.Index, n_base: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions (among the ``n_base`` non-held-out rows) of the training sample: the
    second draw from ``rng``."""
    return np.sort(rng.choice(n_base, _train_size(index, n_base), replace=False))


def _train(index: faiss.Index, sample: np.ndarray, factory: str) -> None:
    try:
        index.train(sample)
    except RuntimeError as e:
        raise InputError(f"cannot train {factory!r} on {len(sample)} vectors ({_faiss_msg(e)})") from None


def _gpu(index: faiss.Index) -> faiss.Index | None:
    """A GPU copy of ``index`` when GPU Faiss and a GPU are present (faiss-gpu), else None."""
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() <= 0:
        return None
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError:                            # e.g. HNSW has no GPU version
        return None


def _add(index: faiss.Index, x: np.ndarray, progress: Progress) -> None:
    """Add in batches of ADD_BATCH (for the progress bar), except HNSW: one ``add`` call per graph,
    because inserting in several calls gives a measurably worse graph (recall@10 at efSearch=64 on
    the benchmark mixture, 150k vectors: 0.973 in one call, 0.948 in three; 0.85 in five at 300k)."""
    batch = len(x) if isinstance(_unwrap(index)[0], faiss.IndexHNSW) else ADD_BATCH
    for i in range(0, len(x), max(batch, 1)):
        index.add(x[i:i + batch])
        if progress is not None:
            progress(len(x[i:i + batch]))


def model_identity(model: str | None) -> str | None:
    """A comparable name for the model that produced vectors: the absolute run dir when ``model``
    is a run dir or encoder folder (both towers of a two-tower run share it), else the string
    as given. None when unknown."""
    if not model:
        return None
    from .encoders import resolve_encoder_dir

    try:
        enc = resolve_encoder_dir(model).resolve()
    except InputError:
        return _strip_encoder(os.path.normpath(str(model)))
    return _strip_encoder(str(enc))


def _strip_encoder(path: str) -> str:
    parts = Path(path).parts
    if "encoder" in parts[-2:]:
        parts = parts[:len(parts) - 1 - parts[::-1].index("encoder")]
    return str(Path(*parts)) if parts else path


def same_model(a: str | None, b: str | None) -> bool:
    """True when two model identities can be the same model (unknown counts as the same; a
    relative path matches an absolute one ending with it)."""
    if a is None or b is None or a == b:
        return True
    pa, pb = Path(a), Path(b)
    if pa.is_absolute() != pb.is_absolute():
        rel, full = (pb, pa) if pa.is_absolute() else (pa, pb)
        return full.parts[-len(rel.parts):] == rel.parts
    return False


def _exact_reconstructible(index: faiss.Index) -> bool:
    base, refine = _unwrap(index)
    if refine or isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):
        return False
    return isinstance(base, (faiss.IndexFlat, faiss.IndexHNSWFlat, faiss.IndexIVFFlat))


def _reconstruct_all(index: faiss.Index) -> np.ndarray:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    x = index.reconstruct_n(0, index.ntotal)
    if ivf is not None:
        ivf.set_direct_map_type(faiss.DirectMap.NoMap)
    return x


def build(emb: np.ndarray, meta: list[dict], out: str | os.PathLike, *, kind: str = "auto",
          metric: str | None = None, target_recall: float = 0.95, max_memory: int | str | None = None,
          append: bool = False, emb_info: dict | None = None, seed: int = 0, progress: Progress = None,
          force: bool = False) -> dict:
    """Build (or with ``append`` extend) the index folder ``out`` from vectors ``emb`` [N, D] whose
    rows are described by ``meta`` (dicts with ``id``). ``kind`` is ``auto`` or a Faiss factory
    string; ``metric`` ``ip`` (cosine: vectors are L2-normalised) or ``l2``; ``emb_info`` is the
    embeddings folder's info.json (its ``model`` is recorded and checked on append). Measures
    recall@10 against exact search on held-out rows, tunes the search knob to ``target_recall``
    and returns the info.json written. The folder appears atomically; a refused append leaves
    the existing index untouched."""
    emb_info = emb_info or {}
    check_vectors(emb, meta, emb_info.get("source"))
    if metric is not None and metric not in METRICS:
        raise InputError(f"--metric must be ip or l2, got {metric!r}")
    if not 0 < target_recall <= 1:
        raise InputError(f"--target-recall must be in (0, 1], got {target_recall}")
    model = model_identity(emb_info.get("model"))
    t_start = time.time()
    rng = np.random.default_rng(seed)
    if append:
        return _append(emb, meta, Path(out), kind, metric, target_recall, model, emb_info, rng, progress, t_start)

    from .io import check_output

    check_output(out, force)
    metric = metric or "ip"
    n, d = emb.shape
    budget = parse_memory(max_memory) if max_memory is not None else default_memory()
    factory = choose_factory(n, d, metric, budget) if kind == "auto" else kind
    index = make_index(factory, d, metric)
    held, order = _hold_out(n, rng)
    nq = len(held)
    x = prepare(emb, metric == "ip")[order]               # index row order: the held-out rows last
    base, queries = x[:n - nq], x[n - nq:]

    t0 = time.time()
    gpu, train_n = _gpu(index), 0
    work = gpu if gpu is not None else index
    if not index.is_trained:
        sample = base[_train_sample(index, len(base), rng)]   # never trained on the held-out queries
        train_n = len(sample)
        _train(work, sample, factory)
        del sample
    t_train = time.time() - t0
    t0 = time.time()
    _add(work, base, progress)
    if gpu is not None:
        index = faiss.index_gpu_to_cpu(gpu)
    t_add = time.time() - t0

    t0 = time.time()
    recall = _measure(index, base, queries, metric, target_recall)
    t_tune = time.time() - t0
    _add(index, queries, progress)
    info = {
        "format": FORMAT, "factory": factory, "kind": kind, "metric": metric, "normalized": metric == "ip",
        "dim": d, "count": int(index.ntotal), "model": model, "model_given": emb_info.get("model"),
        "encoder": emb_info.get("encoder"), "source": emb_info.get("source"),
        "search_params": recall.pop("params"), **_summary(recall),
        "recall": recall, "max_memory": budget, "memory_estimate": estimate_memory(factory, n, d),
        "train_size": train_n, "seed": seed, "gpu": gpu is not None,
        "threads": faiss.omp_get_max_threads(), "faiss_version": faiss.__version__,
        "build_seconds": {"train": round(t_train, 2), "add": round(t_add, 2), "tune": round(t_tune, 2)},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write(out, index, [meta[i] for i in order], info, t_start, force)
    return info


def _measure(index: faiss.Index, base: np.ndarray, queries: np.ndarray, metric: str, target: float) -> dict:
    """Exact neighbours of the held-out ``queries`` among ``base`` (the rows in ``index``), then tune."""
    if len(queries) == 0 or len(base) == 0:
        return {"params": {}, "k": 0, "queries": 0, "recall_at_10": None, "target": target, "target_met": None,
                "note": "too few vectors to hold out queries; not measured"}
    k = min(RECALL_K, len(base))
    _, truth, flat_qps = exact_neighbors(base, queries, k, metric)
    t = tune(index, queries, truth, target)
    return {"params": t["params"], "k": k, "queries": len(queries), "recall_at_10": t["recall"],
            "recall_lower_bound": t["recall_lower_bound"], "target": target, "target_met": t["target_met"],
            "criterion": "mean recall - 2 standard errors >= target", "qps": t["qps"], "flat_qps": round(flat_qps, 1),
            "speedup_vs_flat": round(t["qps"] / flat_qps, 2), "held_out": "last rows of meta.jsonl",
            "ground_truth": "exact IndexFlat search over the other rows", "sweep": t["sweep"]}


def _summary(recall: dict) -> dict:
    return {key: recall.get(key) for key in ("recall_at_10", "qps", "flat_qps", "speedup_vs_flat")}


def _write(out: str | os.PathLike, index: faiss.Index, meta: list[dict], info: dict, t_start: float,
           force: bool) -> None:
    with atomic_dir(out, force=force) as tmp:
        faiss.write_index(index, str(tmp / "index.faiss"))
        with (tmp / "meta.jsonl").open("w", encoding="utf-8") as f:
            write_jsonl(f, ({"id": str(r["id"]), **{k: v for k, v in public(r).items() if k != "id"}}
                            for r in meta))
        info["index_bytes"] = (tmp / "index.faiss").stat().st_size
        info["build_seconds"]["total"] = round(time.time() - t_start, 2)
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")


def _append(emb: np.ndarray, meta: list[dict], out: Path, kind: str, metric: str | None, target: float,
            model: str | None, emb_info: dict, rng: np.random.Generator, progress: Progress,
            t_start: float) -> dict:
    """Add vectors to an existing index folder; everything is checked before anything is written."""
    index, old_meta, info = load(out)
    d = emb.shape[1]
    if d != info["dim"]:
        raise InputError(f"cannot append: the index has dimension {info['dim']}, these vectors have {d}", out)
    if metric is not None and metric != info["metric"]:
        raise InputError(f"cannot append: the index uses metric {info['metric']}, not {metric}", out)
    if kind not in ("auto", info["factory"]):
        raise InputError(f"cannot append: the index is {info['factory']!r}, not {kind!r}", out)
    if not same_model(info.get("model"), model):
        raise InputError(f"cannot append: the index holds vectors of model {info.get('model')}, "
                         f"these come from {model}", out)
    old_ids = {r["id"] for r in old_meta}
    dup = next((str(r["id"]) for r in meta if str(r["id"]) in old_ids), None)
    if dup is not None:
        raise InputError(f"cannot append: id {dup!r} is already in the index", out)
    x = prepare(emb, info["normalized"])
    n_old, n = index.ntotal, len(x)
    exact = _exact_reconstructible(index)
    nq = _n_queries(n_old + n) if exact else 0
    nq = min(nq, n // 2)
    held = np.sort(rng.choice(n, nq, replace=False)) if nq else np.zeros(0, np.int64)
    order = np.concatenate([np.setdiff1d(np.arange(n), held), held])
    old_x = _reconstruct_all(index) if exact and nq else None
    t0 = time.time()
    _add(index, x[order[:n - nq]], progress)
    t_add = time.time() - t0
    t0 = time.time()
    if old_x is not None:
        recall = _measure(index, np.concatenate([old_x, x[order[:n - nq]]]), x[held], info["metric"], target)
        info["search_params"] = recall.pop("params")
        info["recall"] = recall
        info.update(_summary(recall))
    else:
        info["recall"]["stale"] = f"measured before appending {n} vectors (index cannot return exact vectors)"
    _add(index, x[held], progress)
    info["count"] = int(index.ntotal)
    info.setdefault("appends", []).append({"count": n, "source": emb_info.get("source"),
                                           "add_seconds": round(t_add, 2), "tune_seconds": round(time.time() - t0, 2),
                                           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    info["build_seconds"] = dict(info.get("build_seconds", {}))
    _write(out, index, old_meta + [meta[i] for i in order], info, t_start, force=True)
    return info


# ---------------------------------------------------------------- sharded builds

PLAN = "sharding.json"
TRAINED = "trained.faiss"


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4): shard 2 of 4, counted from 0."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not int(m.group(1)) < int(m.group(2)):
        raise InputError(f"--shard must be I/K with 0 <= I < K (e.g. 0/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def open_vectors(source: str | os.PathLike) -> np.ndarray:
    """The vectors of an embeddings folder or ``.npy``, memory-mapped: a shard build reads only
    its own rows."""
    p = Path(source)
    npy = p / "embeddings.npy" if p.is_dir() else p
    if not npy.is_file():
        raise InputError("not an embeddings folder or .npy file", source)
    try:
        emb = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read embeddings ({e})", npy) from None
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise InputError(f"expected a non-empty 2-D array, got shape {emb.shape}", npy)
    return emb


def _rows(emb: np.ndarray, rows: np.ndarray | slice, normalize: bool) -> np.ndarray:
    """float32 copy of ``emb[rows]``, L2-normalised when ``normalize`` (row by row, so the values
    equal those of ``prepare(emb)[rows]``)."""
    x = np.ascontiguousarray(emb[rows], dtype=np.float32)
    if normalize:
        faiss.normalize_L2(x)
    return x


def _rows_sha256(emb: np.ndarray, start: int, stop: int) -> str:
    """Fingerprint of rows start..stop as float32: a shard checks it reads the vectors the plan saw."""
    h = hashlib.sha256()
    for a in range(start, stop, ADD_BATCH):
        h.update(np.ascontiguousarray(emb[a:min(a + ADD_BATCH, stop)], dtype=np.float32).data)
    return h.hexdigest()


def _ids_sha256(meta: list[dict]) -> str:
    return hashlib.sha256("\n".join(str(r["id"]) for r in meta).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_plan(work: str | os.PathLike) -> dict:
    """The plan of a sharded build in progress (``sharding.json`` next to ``trained.faiss``)."""
    p = Path(work)
    if not (p / PLAN).is_file() or not (p / TRAINED).is_file():
        raise InputError(f"not a sharded build in progress (no {PLAN} and {TRAINED}); start one with "
                         "`cltk build-index EMB --out IDX --shards K --train-only`", p)
    try:
        return json.loads((p / PLAN).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"corrupt {PLAN} ({type(e).__name__})", p) from None


def _shard_file(work: Path, i: int) -> Path:
    return work / "shards" / f"shard-{i:04d}.faiss"


def train_shared(emb: np.ndarray, meta: list[dict], out: str | os.PathLike, *, shards: int, kind: str = "auto",
                 metric: str | None = None, max_memory: int | str | None = None, emb_info: dict | None = None,
                 seed: int = 0, force: bool = False) -> dict:
    """Step 1 of a sharded build: choose an IVF factory (``auto``: ``choose_ivf_factory``), hold
    out the recall queries and train the index on a sample exactly as ``build`` does (same seed,
    same draws: the same trained quantizer), and write the folder ``out`` with ``trained.faiss``
    (trained, empty), ``sharding.json`` (the plan: factory, held-out rows, the K row ranges and
    fingerprints of their vectors and of the ids) and an empty ``shards/``. Returns the plan."""
    emb_info = emb_info or {}
    check_vectors(emb, meta, emb_info.get("source"))
    if metric is not None and metric not in METRICS:
        raise InputError(f"--metric must be ip or l2, got {metric!r}")
    n, d = emb.shape
    if not 1 <= shards <= n:
        raise InputError(f"--shards must be between 1 and the number of vectors ({n}), got {shards}")
    from .io import check_output

    check_output(out, force)
    metric = metric or "ip"
    budget = parse_memory(max_memory) if max_memory is not None else default_memory()
    factory = choose_ivf_factory(n, d, budget) if kind == "auto" else kind
    index = make_index(factory, d, metric)
    if faiss.try_extract_index_ivf(index) is None or _unwrap(index)[1]:
        raise InputError(f"--shards needs an IVF index (e.g. IVF1024,Flat or auto), {factory!r} is not one")
    rng = np.random.default_rng(seed)
    held, order = _hold_out(n, rng)
    t0 = time.time()
    sample = _rows(emb, order[_train_sample(index, n - len(held), rng)], metric == "ip")
    gpu = _gpu(index)
    _train(gpu if gpu is not None else index, sample, factory)
    if gpu is not None:
        index = faiss.index_gpu_to_cpu(gpu)
    t_train = time.time() - t0
    bounds = [n * i // shards for i in range(shards + 1)]
    plan = {
        "format": FORMAT, "shards": shards, "factory": factory, "kind": kind, "metric": metric,
        "normalized": metric == "ip", "dim": d, "count": n, "held_out": held.tolist(),
        "ranges": [[bounds[i], bounds[i + 1]] for i in range(shards)],
        "rows_sha256": [_rows_sha256(emb, bounds[i], bounds[i + 1]) for i in range(shards)],
        "ids_sha256": _ids_sha256(meta), "model": model_identity(emb_info.get("model")),
        "model_given": emb_info.get("model"), "encoder": emb_info.get("encoder"), "source": emb_info.get("source"),
        "max_memory": budget, "memory_estimate": estimate_memory(factory, n, d), "train_size": len(sample),
        "seed": seed, "gpu": gpu is not None, "train_seconds": round(t_train, 2),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_dir(out, force=force) as tmp:
        faiss.write_index(index, str(tmp / TRAINED))
        plan["trained_sha256"] = _file_sha256(tmp / TRAINED)
        (tmp / PLAN).write_text(json.dumps(plan, indent=2) + "\n")
        (tmp / "shards").mkdir()
    return plan


def build_shard(work: str | os.PathLike, emb: np.ndarray, shard: int, *, shards: int | None = None,
                progress: Progress = None, force: bool = False) -> dict:
    """Step 2, once per shard, on any machine holding a copy of the folder ``work`` (from
    ``train_shared``) and of the embeddings (``emb`` may be memory-mapped: only this shard's rows
    are read): ``trained.faiss`` + ``add_with_ids`` of the rows of range ``shard``, the held-out
    rows skipped, each row under its final index row number. Writes
    ``work/shards/shard-NNNN.faiss`` and its record ``.json``; returns the record."""
    from .io import atomic_file, check_output

    work = Path(work)
    plan = read_plan(work)
    k = plan["shards"]
    if shards is not None and shards != k:
        raise InputError(f"--shard {shard}/{shards}: this build has {k} shards", work)
    if not 0 <= shard < k:
        raise InputError(f"shard {shard} does not exist; this build has shards 0..{k - 1}", work)
    if emb.shape != (plan["count"], plan["dim"]):
        raise InputError(f"these embeddings have shape {tuple(emb.shape)}, the plan was made for "
                         f"({plan['count']}, {plan['dim']})", work)
    path = _shard_file(work, shard)
    record_path = path.with_suffix(".json")
    check_output(record_path, force)
    t0 = time.time()
    if _file_sha256(work / TRAINED) != plan.get("trained_sha256"):
        raise InputError(f"{TRAINED} is not the one {PLAN} was written with (an incomplete copy?)", work)
    index = faiss.read_index(str(work / TRAINED))
    held = np.asarray(plan["held_out"], dtype=np.int64)
    start, stop = plan["ranges"][shard]
    h, count = hashlib.sha256(), 0
    for a in range(start, stop, ADD_BATCH):
        b = min(a + ADD_BATCH, stop)
        chunk = np.ascontiguousarray(emb[a:b], dtype=np.float32)
        h.update(chunk.data)
        rows = np.setdiff1d(np.arange(a, b), held, assume_unique=True)
        if len(rows):
            x = chunk[rows - a]
            if plan["normalized"]:
                faiss.normalize_L2(x)
            index.add_with_ids(x, rows - np.searchsorted(held, rows))    # the row's place in meta.jsonl
            count += len(rows)
        if progress is not None:
            progress(len(rows))
    if h.hexdigest() != plan["rows_sha256"][shard]:
        raise InputError(f"rows {start}..{stop} of these embeddings differ from those the shard plan was made "
                         "from", work)
    first = start - int(np.searchsorted(held, start))
    record = {"shard": shard, "shards": k, "rows": [start, stop], "ids": [first, first + count], "count": count,
              "trained_sha256": plan["trained_sha256"], "add_seconds": round(time.time() - t0, 2),
              "threads": faiss.omp_get_max_threads(), "host": platform.node(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    record["file_sha256"] = _file_sha256(path)
    with atomic_file(record_path, force=True) as f:           # the record marks the shard complete
        f.write(json.dumps(record, indent=2) + "\n")
    return record


def merge_shards(work: str | os.PathLike, emb: np.ndarray, meta: list[dict], *, out: str | os.PathLike | None = None,
                 target_recall: float = 0.95, progress: Progress = None, force: bool = False,
                 t_start: float | None = None) -> dict:
    """Step 3: merge the K shards of ``work`` in order (``IndexIVF.merge_from``, in memory: each
    inverted list gets shard 0's entries, then shard 1's, ..., i.e. the order an unsharded build
    adds them in), measure recall@10 of the held-out rows against exact search and tune the knob
    like ``build``, add the held-out rows last, and write the normal index folder to ``out``
    (default: replace ``work`` itself). Returns the info.json written."""
    t_start = time.time() if t_start is None else t_start
    work = Path(work)
    plan = read_plan(work)
    out = work if out is None else Path(out)
    if not 0 < target_recall <= 1:
        raise InputError(f"--target-recall must be in (0, 1], got {target_recall}")
    n, k = plan["count"], plan["shards"]
    check_vectors(emb, meta, plan.get("source"))
    if emb.shape != (n, plan["dim"]) or _ids_sha256(meta) != plan["ids_sha256"]:
        raise InputError("these embeddings (vectors or ids) are not the ones the shard plan was made from", work)
    if out != work:
        from .io import check_output

        check_output(out, force)
    records = []
    for i in range(k):
        path = _shard_file(work, i).with_suffix(".json")
        try:
            records.append(json.loads(path.read_text()) if path.is_file() else None)
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"corrupt shard record ({type(e).__name__})", path) from None
    missing = [i for i, r in enumerate(records) if r is None]
    if missing:
        raise InputError(f"missing shard(s) {', '.join(map(str, missing))} of {k} in {work / 'shards'}; build them "
                         f"with `cltk build-index EMB --out {work} --shard I/{k}`")
    for r in records:
        if r["trained_sha256"] != plan["trained_sha256"]:
            raise InputError(f"shard {r['shard']} was built from another trained index", work)
    for i, (a, b) in enumerate(plan["ranges"]):
        if _rows_sha256(emb, a, b) != plan["rows_sha256"][i]:
            raise InputError(f"rows {a}..{b} of these embeddings differ from those the shard plan was made from",
                             work)
    t0 = time.time()
    index = ivf = None
    for i, r in enumerate(records):
        path = _shard_file(work, i)
        try:
            part = faiss.read_index(str(path))
        except (RuntimeError, MemoryError) as e:
            raise InputError(f"corrupt or unreadable shard file ({_faiss_msg(e)})", path) from None
        if part.ntotal != r["count"]:
            raise InputError(f"holds {part.ntotal} vectors, its record says {r['count']}", path)
        if index is None:
            index, ivf = part, faiss.extract_index_ivf(part)
        else:
            ivf.merge_from(faiss.extract_index_ivf(part), 0)      # moves the entries; ids are kept
            del part
    index.ntotal = ivf.ntotal                                      # a wrapper (OPQ) keeps its own count
    held = np.asarray(plan["held_out"], dtype=np.int64)
    nq = len(held)
    if index.ntotal != n - nq:
        raise InputError(f"the shards hold {index.ntotal} vectors, expected {n - nq}", work)
    t_merge = time.time() - t0

    t0 = time.time()
    order = np.concatenate([np.setdiff1d(np.arange(n), held), held])
    recall = _measure(index, _rows(emb, order[:n - nq], plan["normalized"]), _rows(emb, held, plan["normalized"]),
                      plan["metric"], target_recall)
    t_tune = time.time() - t0
    _add(index, _rows(emb, held, plan["normalized"]), progress)
    adds = [r["add_seconds"] for r in records]
    info = {
        "format": FORMAT, **{key: plan[key] for key in ("factory", "kind", "metric", "normalized", "dim")},
        "count": int(index.ntotal), **{key: plan[key] for key in ("model", "model_given", "encoder", "source")},
        "search_params": recall.pop("params"), **_summary(recall), "recall": recall,
        **{key: plan[key] for key in ("max_memory", "memory_estimate", "train_size", "seed", "gpu")},
        "threads": faiss.omp_get_max_threads(), "faiss_version": faiss.__version__,
        "build_seconds": {"train": plan["train_seconds"], "add": max(adds), "add_all_shards": round(sum(adds), 2),
                          "merge": round(t_merge, 2), "tune": round(t_tune, 2)},
        "sharding": {"shards": k, "merge": "in memory, IndexIVF.merge_from in shard order",
                     "trained_sha256": plan["trained_sha256"],
                     "per_shard": [{key: r[key] for key in ("shard", "rows", "ids", "count", "add_seconds", "host")}
                                   for r in records]},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write(out, index, [meta[i] for i in order], info, t_start, force=force or out == work)
    return info


def _shard_job(args: tuple[str, str, int, int]) -> dict:
    """One shard in its own process (``build_sharded``): memory-map the vectors, build, return the record."""
    work, source, shard, threads = args
    faiss.omp_set_num_threads(threads)
    return build_shard(work, open_vectors(source), shard, force=True)


def build_sharded(emb: np.ndarray, meta: list[dict], out: str | os.PathLike, *, shards: int,
                  source: str | os.PathLike | None = None, kind: str = "auto", metric: str | None = None,
                  target_recall: float = 0.95, max_memory: int | str | None = None, emb_info: dict | None = None,
                  seed: int = 0, progress: Progress = None, force: bool = False, jobs: int | None = None) -> dict:
    """The three steps on one machine (``cltk build-index --shards K``): ``train_shared`` into a
    temporary folder beside ``out``, the K ``build_shard`` calls in K separate processes (at most
    ``jobs`` at a time, default one per available core; each reads its rows from ``source``, the
    embeddings folder or ``.npy`` holding ``emb``, memory-mapped, or from a temporary copy when
    there is none), then ``merge_shards`` into ``out``. Returns the info.json written."""
    import multiprocessing
    import shutil
    import tempfile

    from .io import check_output

    t_start = time.time()
    check_output(out, force)
    if not 0 < target_recall <= 1:
        raise InputError(f"--target-recall must be in (0, 1], got {target_recall}")
    if not 1 <= shards <= len(emb):
        raise InputError(f"--shards must be between 1 and the number of vectors ({len(emb)}), got {shards}")
    parent = Path(out).parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{Path(out).name}.shards-", dir=parent))
    try:
        work = tmp / "work"
        train_shared(emb, meta, work, shards=shards, kind=kind, metric=metric, max_memory=max_memory,
                     emb_info=emb_info, seed=seed)
        if source is None:
            source = tmp / "vectors.npy"
            np.save(source, np.asarray(emb, dtype=np.float32))
        jobs = max(1, min(shards, jobs or available_cpus()))
        threads = max(1, faiss.omp_get_max_threads() // jobs)
        ctx = multiprocessing.get_context("spawn")      # a fresh process per shard (no fork of OpenMP threads)
        with ctx.Pool(jobs, maxtasksperchild=1) as pool:
            for rec in pool.imap_unordered(_shard_job, [(str(work), str(source), i, threads) for i in range(shards)]):
                if progress is not None:
                    progress(rec["count"])
        return merge_shards(work, emb, meta, out=out, target_recall=target_recall, progress=progress, force=force,
                            t_start=t_start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- load and search

def load(idx_dir: str | os.PathLike) -> tuple[faiss.Index, list[dict], dict]:
    """Read an index folder; the tuned search parameters from info.json are applied.
    Returns (index, meta, info)."""
    p = Path(idx_dir)
    if not (p / "index.faiss").is_file():
        raise InputError("not an index folder (no index.faiss)", p)
    try:
        info = json.loads((p / "info.json").read_text())
        info["dim"], info["metric"]  # noqa: B018
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"missing or corrupt info.json ({type(e).__name__})", p) from None
    try:
        index = faiss.read_index(str(p / "index.faiss"))
    except (RuntimeError, MemoryError) as e:
        raise InputError(f"corrupt or unreadable index.faiss ({_faiss_msg(e)})", p) from None
    meta = [public(r) for r in read_jsonl(p / "meta.jsonl")]
    if index.ntotal != len(meta):
        raise InputError(f"index.faiss has {index.ntotal} vectors but meta.jsonl has {len(meta)} ids", p)
    if index.d != info["dim"]:
        raise InputError(f"index.faiss has dimension {index.d} but info.json says {info['dim']}", p)
    set_params(index, info.get("search_params") or {})
    return index, meta, info


def search(index: faiss.Index, queries: np.ndarray, k: int, normalize: bool,
           batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Batched k-NN search: (scores [Q, k], row ids [Q, k], -1 where fewer than k were found).
    Scores are inner products (cosine when ``normalize``) or squared L2 distances."""
    if queries.ndim != 2 or queries.shape[1] != index.d:
        raise InputError(f"queries have dimension {queries.shape[-1]} but the index has {index.d}")
    k = max(1, min(k, index.ntotal))
    scores, ids = [], []
    for i in range(0, len(queries), batch_size):
        s, j = index.search(prepare(queries[i:i + batch_size], normalize), k)
        scores.append(s)
        ids.append(j)
    return np.concatenate(scores), np.concatenate(ids)


def check_compatible(info: dict, dim: int, model: str | None, what: str = "queries") -> None:
    """Refuse vectors of another dimension or another model than the index's."""
    if dim != info["dim"]:
        raise InputError(f"{what} have dimension {dim} but the index has {info['dim']} "
                         f"(built from model {info.get('model')})")
    if not same_model(info.get("model"), model_identity(model)):
        raise InputError(f"the index holds vectors of model {info.get('model')}, {what} come from "
                         f"{model_identity(model)}")


def read_queries(spec: str, model: str | None = None, device: str = "cpu",
                 batch_size: int = 256, field: str | None = None) -> tuple[np.ndarray, list[dict], dict]:
    """Queries for ``match``: an embeddings folder or ``.npy``; or JSONL (``-`` = stdin) whose
    lines carry ``embedding`` (what ``cltk embed --out -`` prints); or JSONL records embedded on
    the fly with ``model`` (image records ``{"id", "image"}``). Returns (vectors, meta, info)."""
    p = Path(spec)
    if spec != "-" and (p.is_dir() or p.suffix == ".npy"):
        from .embed import read_embeddings

        emb, meta, info = read_embeddings(p)
        check_vectors(emb, meta, spec)
        return emb, meta, {**info, "model": model or info.get("model")}
    recs = read_jsonl(spec)
    name = "<stdin>" if spec == "-" else spec
    with_emb = [("embedding" in r) for r in recs]
    if any(with_emb):
        if not all(with_emb):
            r = recs[with_emb.index(False)]
            raise InputError("missing (some lines have embeddings, this one does not)", name, r["_line"], "embedding")
        return _embeddings_from_records(recs, name), [_strip(r) for r in recs], {"model": model}
    if model is None:
        raise InputError("records have no 'embedding'; pass --model RUN to embed them", name)
    return _embed_records(recs, name, model, device, batch_size, field)


def _strip(rec: dict) -> dict:
    return {k: v for k, v in public(rec).items() if k != "embedding"}


def _embeddings_from_records(recs: list[dict], name: str) -> np.ndarray:
    d = None
    rows = []
    for r in recs:
        v = r["embedding"]
        if not isinstance(v, list) or not v or not all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                                         for t in v):
            raise InputError("must be a non-empty list of numbers", name, r["_line"], "embedding")
        if d is not None and len(v) != d:
            raise InputError(f"has {len(v)} numbers, earlier lines have {d}", name, r["_line"], "embedding")
        d = len(v)
        rows.append(v)
    x = np.asarray(rows, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InputError("NaN or infinite values", name, recs[int(np.flatnonzero(bad)[0])]["_line"], "embedding")
    return x


def _embed_records(recs: list[dict], name: str, model: str, device: str, batch_size: int,
                   field: str | None = None) -> tuple[np.ndarray, list[dict], dict]:
    """Embed query records with a model: their ``image`` with an image encoder, their ``text``
    with a text encoder; ``field`` says which when records have both (and picks the tower of
    a two-tower run)."""
    from .data import decode
    from .embed import embed_images
    from .encoders import load_encoder
    from .io import ImageSource

    tower = field or ("image" if "image" in recs[0] else "text")
    encoder, spec = load_encoder(model, device, tower=tower if Path(model, "encoder", tower).is_dir() else None)
    if field is not None and (field == "image") != (spec.get("modality", "image") == "image"):
        raise InputError(f"--field {field}: the model embeds {spec.get('modality', 'image')}", model)
    if spec.get("modality", "image") == "text":
        for r in recs:
            if not isinstance(r.get("text"), str) or not r["text"].strip():
                hint = " (the record has 'image' but the model embeds text)" if "image" in r else ""
                raise InputError(f"missing or empty{hint}", name, r["_line"], "text")
        emb = encoder.encode([r["text"] for r in recs], min(batch_size, 256), device=device)
        return emb, [public(r) for r in recs], {"model": model, "dim": int(emb.shape[1])}
    base = Path.cwd() if name == "<stdin>" else Path(name).parent
    for r in recs:
        if "image" not in r:
            hint = " (the record has 'text' but the model embeds images)" if "text" in r else ""
            raise InputError(f"missing{hint}", name, r["_line"], "image")
        if not isinstance(r["image"], str):
            raise InputError("must be a path string", name, r["_line"], "image")
        path = Path(r["image"])
        r["_path"] = str(path if path.is_absolute() else base / path)
        if not Path(r["_path"]).is_file():
            raise InputError(f"image file not found: {r['_path']}", name, r["_line"], "image")
    src = ImageSource(name, [{**r, "image": r["_path"], "_src": name} for r in recs])
    inp = spec["input"]
    images = decode(src, inp["channels"], inp["image_size"])
    emb = embed_images(encoder, images, batch_size, normalize=spec.get("normalize", True), device=device)
    return emb, [public(r) for r in recs], {"model": model, "dim": int(emb.shape[1])}


def match(queries: np.ndarray, qmeta: list[dict], index: faiss.Index, meta: list[dict], info: dict,
          k: int = 10, exclude_self: bool = False, batch_size: int = 4096) -> Iterator[dict]:
    """Nearest neighbours of each query, one output record per query:
    ``{"id", ..query fields.., "neighbors": [{"id", "score", ..target fields..}, ...]}``.
    ``exclude_self`` drops a neighbour whose id equals the query id (k+1 are searched)."""
    extra = 1 if exclude_self else 0
    targets = [{k2: v for k2, v in r.items() if k2 != "id"} for r in meta]
    for i in range(0, len(queries), batch_size):
        scores, ids = search(index, queries[i:i + batch_size], k + extra, info.get("normalized", False))
        for q, srow, irow in zip(qmeta[i:i + batch_size], scores, ids, strict=True):
            qid = str(q["id"])
            neigh = []
            for s, j in zip(srow, irow, strict=True):
                if j < 0 or (exclude_self and meta[j]["id"] == qid):
                    continue
                neigh.append({"id": meta[j]["id"], "score": round(float(s), 6), **targets[j]})
            yield {"id": qid, **{f: v for f, v in q.items() if f != "id"}, "neighbors": neigh[:k]}


def describe(info: dict) -> dict[str, Any]:
    """The short summary ``cltk build-index`` prints."""
    keys = ("factory", "metric", "dim", "count", "search_params", "recall_at_10", "qps", "flat_qps",
            "speedup_vs_flat", "index_bytes", "build_seconds")
    shards = {"shards": info["sharding"]["shards"]} if "sharding" in info else {}
    return {k: info.get(k) for k in keys} | {"target_met": info.get("recall", {}).get("target_met")} | shards

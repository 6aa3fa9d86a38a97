"""The search knob (nprobe, efSearch, k_factor_rf), recall against exact search, and tuning to a target recall."""

from __future__ import annotations

import math
import time

import faiss
import numpy as np

from ..io import InputError
from .choose import METRICS, RECALL_K, _faiss_msg

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

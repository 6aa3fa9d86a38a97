"""Building and appending to an index folder: hold out queries, train, add, measure, tune, write."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

from ..io import InputError, atomic_dir, check_output, check_vectors, public, write_jsonl
from ..io.run import INDEX, INFO, META
from .choose import (
    ADD_BATCH,
    FORMAT,
    MAX_QUERIES,
    METRICS,
    RECALL_K,
    Progress,
    _faiss_msg,
    choose_factory,
    default_memory,
    estimate_memory,
    make_index,
    parse_memory,
    prepare,
    write_index,
)
from .store import load, model_identity, same_model
from .tune import _unwrap, exact_neighbors, tune

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


def fill(index: faiss.Index, x: np.ndarray, *, seed: int = 0, progress: Progress = None) -> None:
    """Train ``index`` when it needs training, on a sample of ``x`` of the size ``build`` trains
    on, then add all of ``x`` in the batches ``build`` adds with (HNSW: one call). For an index of
    a fixed factory built outside ``build`` (e.g. the fixed-parameter rows of
    ``benchmarks/index.py``), so that it is trained and filled as cltk's own would be."""
    if not index.is_trained:
        _train(index, x[_train_sample(index, len(x), np.random.default_rng(seed))], type(index).__name__)
    _add(index, x, progress)


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
        write_index(index, tmp / INDEX)
        with (tmp / META).open("w", encoding="utf-8") as f:
            write_jsonl(f, ({"id": str(r["id"]), **{k: v for k, v in public(r).items() if k != "id"}}
                            for r in meta))
        info["index_bytes"] = (tmp / INDEX).stat().st_size
        info["build_seconds"]["total"] = round(time.time() - t_start, 2)
        (tmp / INFO).write_text(json.dumps(info, indent=2) + "\n")


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

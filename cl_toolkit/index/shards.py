"""Sharded builds: one trained quantizer, shards added by separate processes or machines, merged."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from ..io import InputError, atomic_dir, atomic_file, available_cpus, check_output, check_vectors, open_vectors
from .build import _add, _gpu, _hold_out, _measure, _summary, _train, _train_sample, _write
from .choose import (
    ADD_BATCH,
    FORMAT,
    METRICS,
    Progress,
    _faiss_msg,
    choose_ivf_factory,
    default_memory,
    estimate_memory,
    make_index,
    parse_memory,
    write_index,
)
from .store import model_identity
from .tune import _unwrap

# ---------------------------------------------------------------- sharded builds

PLAN = "sharding.json"
TRAINED = "trained.faiss"


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4): shard 2 of 4, counted from 0."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not int(m.group(1)) < int(m.group(2)):
        raise InputError(f"--shard must be I/K with 0 <= I < K (e.g. 0/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))



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
        write_index(index, tmp / TRAINED)
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
        write_index(index, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    record["file_sha256"] = _file_sha256(path)
    with atomic_file(record_path, force=True) as f:           # the record marks the shard complete
        f.write(json.dumps(record, indent=2) + "\n")
    return record


def _shard_records(work: Path, plan: dict, emb: np.ndarray) -> list[dict]:
    """Every shard's record, each checked against the plan (trained index, rows)."""
    k = plan["shards"]
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
    return records


def _merged(work: Path, records: list[dict]):
    """The shards' indexes merged in shard order into the first one: (index, its IVF part)."""
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
    return index, ivf


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
        check_output(out, force)
    records = _shard_records(work, plan, emb)
    t0 = time.time()
    index, ivf = _merged(work, records)
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

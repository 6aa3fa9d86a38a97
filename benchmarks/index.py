"""Faiss index benchmark: does ``--kind auto`` reach recall@10 >= 0.95 at >= 2x the queries/s of
exact search on this CPU, and what do flat, HNSW and IVF-PQ give at fixed parameters?

Data: a clustered, 384-d Gaussian mixture (1,000 components; each component is its centre plus a
rank-16 Gaussian with a random basis, plus isotropic noise), L2-normalised for cosine search.
This mimics sentence/image embeddings: clustered, with a low local dimension.
Queries: 1,000 *fresh* points from the same mixture, not in the index. Ground truth: exact
search (``faiss.knn``) over all vectors. Recall@10 = share of the exact top 10 found.
QPS: batched search of all queries, repeated for >= 1 s, k=10, on the same machine in the same
run as exact search (the ratio is what matters; the CPU's speed swings).

Scenarios (default ``--scenario both``):
  300k  n=300,000, no memory budget: auto, Flat, HNSW32 (efSearch=64), IVF-PQ (nprobe=16).
  1m    n=1,000,000 with --max-memory 512M (the raw vectors need 1.5 GB): auto must compress;
        Flat and IVF-PQ (nprobe=16) beside it (HNSW with --with-hnsw-1m: a long build).

    python benchmarks/index.py                      # both, writes benchmarks/results/index.json
    python benchmarks/index.py --n 20000 --n-big 50000 --max-memory-big 16M --tag small

Writes benchmarks/results/index[_<tag>].json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cl_toolkit import index as ix  # noqa: E402
from cl_toolkit.runtime import environment  # noqa: E402

K = 10


def mixture(n: int, d: int, seed: int, components: int = 100, rank: int = 24,
            spread: float = 1.0, noise: float = 0.2) -> np.ndarray:
    """n points of a fixed (seeded by 0) Gaussian mixture; ``seed`` picks the sample."""
    g = np.random.default_rng(0)
    centres = (g.normal(size=(components, d)) * spread).astype(np.float32)
    bases = (g.normal(size=(components, rank, d)) * 0.125 * math.sqrt(16 / rank)).astype(np.float32)
    rng = np.random.default_rng(seed)
    comp = rng.integers(0, components, n)
    x = (rng.normal(size=(n, d)) * noise).astype(np.float32)
    for c in range(components):
        rows = np.flatnonzero(comp == c)
        x[rows] += centres[c] + rng.normal(size=(len(rows), rank)).astype(np.float32) @ bases[c]
    faiss.normalize_L2(x)
    return x


def qps(index: faiss.Index, q: np.ndarray) -> float:
    return ix.measure_qps(index, q, K, min_seconds=1.0)


def evaluate(index: faiss.Index, q: np.ndarray, truth: np.ndarray) -> dict:
    _, found = index.search(q, K)
    return {"recall_at_10": round(ix.recall_at_k(found, truth), 4), "qps": round(qps(index, q), 1)}


def run_auto(x: np.ndarray, q: np.ndarray, truth: np.ndarray, max_memory: str | None, tmp: Path,
             name: str) -> dict:
    """The library path users get: ``cltk build-index --kind auto`` (build tunes on its own held-out
    rows), then the loaded index is evaluated on the fresh queries."""
    meta = [{"id": str(i)} for i in range(len(x))]
    t0 = time.time()
    info = ix.build(x, meta, tmp / name, kind="auto", metric="ip", max_memory=max_memory)
    build_s = time.time() - t0
    index, idx_meta, _ = ix.load(tmp / name)
    rows = np.array([int(r["id"]) for r in idx_meta] + [-1])  # index row -> row of x (held-out rows come last)
    _, found = index.search(q, K)
    res = {"recall_at_10": round(ix.recall_at_k(rows[found], truth), 4), "qps": round(qps(index, q), 1)}
    sweep = info["recall"].pop("sweep", [])
    return {"name": "auto", "factory": info["factory"], "params": info["search_params"], **res,
            "build_seconds": round(build_s, 1), "index_bytes": info["index_bytes"],
            "build_info": {k: info[k] for k in ("recall_at_10", "qps", "flat_qps", "speedup_vs_flat",
                                                "build_seconds", "max_memory", "memory_estimate", "train_size")},
            "target_met": info["recall"]["target_met"], "tuning_sweep": sweep}


def run_fixed(x: np.ndarray, q: np.ndarray, truth: np.ndarray, factory: str, params: dict, tmp: Path,
              name: str, seed: int = 0) -> dict:
    """A Faiss index at fixed parameters, built straight with Faiss (training sample as cltk's)."""
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    t0 = time.time()
    ix.fill(index, x, seed=seed)                        # trained and added as cltk's (HNSW: one call)
    build_s = time.time() - t0
    ix.set_params(index, params)
    path = tmp / f"{name}.faiss"
    faiss.write_index(index, str(path))
    res = {"name": name, "factory": factory, "params": params, **evaluate(index, q, truth),
           "build_seconds": round(build_s, 1), "index_bytes": path.stat().st_size}
    path.unlink()
    return res


def scenario(label: str, n: int, d: int, max_memory: str | None, fixed: list[tuple[str, str, dict]],
             nq: int, tmp: Path) -> dict:
    print(f"[{label}] generating {n} x {d}", file=sys.stderr, flush=True)
    x = mixture(n, d, seed=1)
    q = mixture(nq, d, seed=2)
    _, truth, flat_qps = ix.exact_neighbors(x, q, K, "ip", min_seconds=1.0)
    rows = [{"name": "flat", "factory": "Flat", "params": {}, "recall_at_10": 1.0, "qps": round(flat_qps, 1),
             "build_seconds": 0.0, "index_bytes": int(x.nbytes)}]
    print(f"[{label}] flat {flat_qps:.0f} q/s; building auto", file=sys.stderr, flush=True)
    rows.append(run_auto(x, q, truth, max_memory, tmp, f"{label}_auto"))
    print(f"[{label}] auto: {json.dumps({k: rows[-1][k] for k in ('factory', 'params', 'recall_at_10', 'qps')})}",
          file=sys.stderr, flush=True)
    for name, factory, params in fixed:
        rows.append(run_fixed(x, q, truth, factory, params, tmp, name))
        print(f"[{label}] {name}: {json.dumps({k: rows[-1][k] for k in ('recall_at_10', 'qps', 'build_seconds')})}",
              file=sys.stderr, flush=True)
    for r in rows:
        r["speedup_vs_flat"] = round(r["qps"] / flat_qps, 2)
    auto = rows[1]
    return {"n": n, "dim": d, "queries": nq, "max_memory": max_memory, "raw_bytes": int(x.nbytes),
            "claim": {"recall_at_10>=0.95": auto["recall_at_10"] >= 0.95, "speedup>=2": auto["speedup_vs_flat"] >= 2,
                      "within_memory": max_memory is None or auto["index_bytes"] <= ix.parse_memory(max_memory)},
            "results": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=["300k", "1m", "both"], default="both")
    ap.add_argument("--n", type=int, default=300_000, help="vectors in the first scenario")
    ap.add_argument("--n-big", type=int, default=1_000_000, help="vectors in the memory-budget scenario")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--max-memory-big", default="512M", help="budget of the second scenario")
    ap.add_argument("--with-hnsw-1m", action="store_true", help="also HNSW32 at fixed parameters in scenario 2")
    ap.add_argument("--threads", type=int, default=0, help="Faiss threads (default: all cores)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    def fixed(n: int, hnsw: bool) -> list[tuple[str, str, dict]]:
        nlist = ix.choose._nlist(n)
        m = 48 if args.dim % 48 == 0 else max(x for x in (32, 16, 8, 4) if args.dim % x == 0)
        out = [("hnsw32_ef64", "HNSW32", {"efSearch": 64})] if hnsw else []
        return out + [(f"ivf{nlist}_pq{m}_np16", f"IVF{nlist},PQ{m}", {"nprobe": 16})]

    results = {"benchmark": "index", "env": environment(),
               "machine": {"cpu": platform.processor() or platform.machine(), "threads": faiss.omp_get_max_threads(),
                           "faiss": faiss.__version__, "python": platform.python_version()},
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": vars(args),
               "data": "Gaussian mixture, 100 components (centres N(0, I)), each a rank-24 Gaussian with a random "
                       "basis plus N(0, 0.2^2 I) noise, L2-normalised; queries: fresh points of the same mixture",
               "recall": "recall@10 of the fresh queries vs exact search over all vectors; qps: batched, k=10",
               "scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="cltk-bench-index-") as tmp:
        if args.scenario in ("300k", "both"):
            results["scenarios"]["300k"] = scenario("300k", args.n, args.dim, None, fixed(args.n, True),
                                                    args.queries, Path(tmp))
        if args.scenario in ("1m", "both"):
            results["scenarios"]["1m"] = scenario("1m", args.n_big, args.dim, args.max_memory_big,
                                                  fixed(args.n_big, args.with_hnsw_1m), args.queries, Path(tmp))
    out = Path(__file__).parent / "results" / f"index{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({s: {"claim": v["claim"], "rows": [(r["name"], r["factory"], r["recall_at_10"], r["qps"],
                                                          r["speedup_vs_flat"], r["index_bytes"], r["build_seconds"])
                                                         for r in v["results"]]}
                      for s, v in results["scenarios"].items()}, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

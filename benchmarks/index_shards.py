"""Sharded IVF builds: is ``cltk build-index --shards 4`` as good as the unsharded build with the
same parameters? Claim: recall@10 within 0.01 of the unsharded index, at 1M vectors.

Data: the Gaussian mixture of benchmarks/index.py (100 components, rank 24, N(0, 0.2^2 I) noise,
L2-normalised), here 64-d so that the whole benchmark stays well under 15 minutes on one core.
Queries: 1,000 *fresh* points of the mixture; ground truth: exact search over all vectors.

Builds, each a real ``cltk`` command in its own process (wall time and peak resident memory of
the largest process in the tree, through a small launcher process; the baseline of a ``cltk`` process, which
imports torch, is measured with ``cltk build-index --help``):
  unsharded  cltk build-index EMB --out A --kind FACTORY
  sharded    cltk build-index EMB --out B --kind FACTORY --shards K      (K shard processes)
  steps      --shards K --train-only, then --shard I/K for each I (one process each, as on K
             machines), then --merge                                       (skip with --no-steps)
Each index is loaded as ``cltk match`` loads it and searched at its own tuned nprobe and at fixed
nprobe values (the same for all builds); recall@10 of the fresh queries vs exact search.

    python benchmarks/index_shards.py                  # n=1M, d=64, IVF4096,Flat, 4 shards
    python benchmarks/index_shards.py --n 50000 --factory IVF256,Flat --tag small

Writes benchmarks/results/index_shards[_<tag>].json.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cl_toolkit import index as ix  # noqa: E402
from cl_toolkit.io import available_cpus, write_embeddings  # noqa: E402
from cl_toolkit.runtime import environment  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_index", Path(__file__).with_name("index.py"))
bench_index = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_index)
mixture = bench_index.mixture                    # the data generator of benchmarks/index.py

K = 10


# Linux keeps a process's peak RSS across fork + exec, so a child started from this (large) process
# would report at least this process's size. A small launcher starts the command and reports the
# largest peak RSS among its descendants (RUSAGE_CHILDREN: the command and its shard processes).
LAUNCHER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
            "sys.exit(rc)")


def cltk(*args: str | Path, log: Path) -> dict:
    """Run ``python -m cl_toolkit ARGS``; wall seconds, peak RSS (largest process of the tree), JSON output."""
    t0 = time.time()
    rss = log.with_suffix(".rss")
    with log.open("w") as err, tempfile.TemporaryFile("w+") as out:
        rc = subprocess.call([sys.executable, "-c", LAUNCHER, str(rss), sys.executable, "-m", "cl_toolkit",
                              *map(str, args)], stdout=out, stderr=err)
        wall = time.time() - t0
        out.seek(0)
        text = out.read()
    if rc != 0:
        raise SystemExit(f"cltk {' '.join(map(str, args))} failed ({rc}); see {log}:\n" + log.read_text()[-2000:])
    return {"command": "cltk " + " ".join(map(str, args)), "wall_seconds": round(wall, 1),
            "peak_rss_mib": round(int(rss.read_text()) / 1024, 1),
            "output": json.loads(text) if text.startswith("{") else None}


def evaluate(idx: Path, q: np.ndarray, truth: np.ndarray, nprobes: list[int]) -> dict:
    """Recall@10 of the fresh queries through the index as ``cltk match`` loads it."""
    index, meta, info = ix.load(idx)
    rows = np.array([int(r["id"]) for r in meta] + [-1])          # index row -> row of the data (ids are rows)
    tuned = dict(info["search_params"])
    res = {"tuned": {**tuned, "recall_at_10": round(ix.recall_at_k(rows[index.search(q, K)[1]], truth), 4)}}
    for nprobe in nprobes:
        ix.set_params(index, {"nprobe": nprobe})
        res[f"nprobe={nprobe}"] = round(ix.recall_at_k(rows[index.search(q, K)[1]], truth), 4)
    sha = hashlib.sha256((idx / "index.faiss").read_bytes()).hexdigest()
    return {"factory": info["factory"], "count": info["count"], "recall_fresh_queries": res,
            "recall_at_10_build": info["recall_at_10"], "search_params": tuned, "index_bytes": info["index_bytes"],
            "index_sha256": sha, "build_seconds": info["build_seconds"], "sharding": info.get("sharding")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--factory", default="", help="default: what --shards auto picks (IVF4096,Flat at 1M)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--nprobe", default="8,16,64", help="fixed nprobe values to compare at")
    ap.add_argument("--no-steps", action="store_true", help="skip the step-by-step (multi-machine) build")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    factory = args.factory or ix.choose_ivf_factory(args.n, args.dim)
    nprobes = [int(v) for v in args.nprobe.split(",") if v]

    results = {"benchmark": "index_shards", "env": environment(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "args": vars(args),
               "factory": factory,
               "machine": {"cpu": platform.processor() or platform.machine(), "cores": available_cpus(),
                           "omp_threads": faiss.omp_get_max_threads(), "faiss": faiss.__version__,
                           "python": platform.python_version()},
               "data": f"Gaussian mixture of benchmarks/index.py at d={args.dim} (100 components, rank 24, "
                       "N(0, 0.2^2 I) noise), L2-normalised; queries: fresh points of the same mixture",
               "recall": "recall@10 of the fresh queries vs exact search over all vectors",
               "memory": "peak RSS of the largest process of the command's process tree (RUSAGE_CHILDREN of a "
                         "small launcher process)"}
    with tempfile.TemporaryDirectory(prefix="cltk-bench-shards-") as tmp:
        tmp = Path(tmp)
        print(f"generating {args.n} x {args.dim}", file=sys.stderr, flush=True)
        x = mixture(args.n, args.dim, seed=1)
        q = mixture(args.queries, args.dim, seed=2)
        write_embeddings(tmp / "emb", x, [{"id": str(i)} for i in range(args.n)], {"model": "mixture"})
        _, truth = faiss.knn(q, x, K, metric=faiss.METRIC_INNER_PRODUCT)
        del x

        results["cltk_process_baseline_rss_mib"] = cltk("build-index", "--help", log=tmp / "help.log")["peak_rss_mib"]
        builds = {}
        print(f"unsharded {factory}", file=sys.stderr, flush=True)
        run = cltk("build-index", tmp / "emb", "--out", tmp / "unsharded", "--kind", factory, "--quiet",
                   log=tmp / "unsharded.log")
        builds["unsharded"] = {"run": run, **evaluate(tmp / "unsharded", q, truth, nprobes)}
        print(json.dumps(builds["unsharded"]["recall_fresh_queries"]), run["wall_seconds"], file=sys.stderr, flush=True)

        print(f"sharded: --shards {args.shards}", file=sys.stderr, flush=True)
        run = cltk("build-index", tmp / "emb", "--out", tmp / "sharded", "--kind", factory, "--shards", args.shards,
                   "--quiet", log=tmp / "sharded.log")
        builds["sharded"] = {"run": run, **evaluate(tmp / "sharded", q, truth, nprobes)}
        print(json.dumps(builds["sharded"]["recall_fresh_queries"]), run["wall_seconds"], file=sys.stderr, flush=True)

        if not args.no_steps:
            print("steps: --train-only, --shard I/K, --merge", file=sys.stderr, flush=True)
            out = tmp / "steps"
            steps = [cltk("build-index", tmp / "emb", "--out", out, "--kind", factory, "--shards", args.shards,
                          "--train-only", log=tmp / "train.log")]
            for i in range(args.shards):
                steps.append(cltk("build-index", tmp / "emb", "--out", out, "--shard", f"{i}/{args.shards}",
                                  log=tmp / f"shard{i}.log"))
            steps.append(cltk("build-index", tmp / "emb", "--out", out, "--merge", "--quiet", log=tmp / "merge.log"))
            for s in steps:
                s["output"] = {k: v for k, v in (s["output"] or {}).items() if k in
                               ("factory", "shard", "count", "train_size", "train_seconds", "add_seconds",
                                "recall_at_10", "search_params", "build_seconds")}
            builds["steps"] = {"run": {"wall_seconds": round(sum(s["wall_seconds"] for s in steps), 1),
                                       "peak_rss_mib": max(s["peak_rss_mib"] for s in steps), "steps": steps},
                               **evaluate(out, q, truth, nprobes)}
            print(json.dumps(builds["steps"]["recall_fresh_queries"]), file=sys.stderr, flush=True)

    base = builds["unsharded"]["recall_fresh_queries"]
    for b in builds.values():
        r = b["recall_fresh_queries"]
        b["recall_difference_vs_unsharded"] = {
            "tuned": round(r["tuned"]["recall_at_10"] - base["tuned"]["recall_at_10"], 4),
            **{key: round(r[key] - base[key], 4) for key in r if key != "tuned"}}
        b["same_index_file_as_unsharded"] = b["index_sha256"] == builds["unsharded"]["index_sha256"]
    worst = max(abs(v) for b in builds.values() for v in b["recall_difference_vs_unsharded"].values())
    results["claim"] = {"max_abs_recall_difference": worst, "within_0.01": worst <= 0.01}
    results["builds"] = builds
    path = Path(__file__).parent / "results" / f"index_shards{'_' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"claim": results["claim"], **{
        name: {"recall": b["recall_fresh_queries"], "wall_s": b["run"]["wall_seconds"],
               "peak_rss_mib": b["run"]["peak_rss_mib"], "index_bytes": b["index_bytes"],
               "same_file": b["same_index_file_as_unsharded"]} for name, b in builds.items()}}, indent=1))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Scale-out on this machine: images/s for 1 and 2 torchrun ranks, and the memory that gradient
caching saves.

1. Throughput: ``cltk pretrain`` on the 10,000 Fashion-MNIST images of benchmarks/ssl_cpu.py for
   a fixed number of steps, as one process (1 and 2 threads) and as 2 ranks (1 thread each) under
   ``torchrun --nproc-per-node 2`` with the same global batch: SimCLR (gathered negatives) and
   BYOL (synchronised batch norm). images/s is the trainer's own figure (training time only).
2. Gradient caching: peak resident memory of one process running SimCLR steps on a large batch
   in full, and with ``--chunk-size 256``.

    python benchmarks/scale.py                 # both parts, ~10 minutes on 2 cores
    python benchmarks/scale.py --part memory

Writes benchmarks/results/scale.json. Run it alone on the machine: the 2-rank figures need both
cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = "fashion-mnist:train?per_class=1000&seed=0"


def pretrain(args: list[str], ranks: int = 1, threads: int = 1) -> dict:
    """Run one pretraining; its JSON summary."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
                if ranks > 1 else [sys.executable])
    t0 = time.perf_counter()
    p = subprocess.run([*launcher, "-m", "cl_toolkit", "pretrain", *args, "--threads", str(threads), "--quiet",
                        "--force"], capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode:
        raise SystemExit(p.stderr[-2000:])
    out = json.loads(p.stdout)
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def throughput(tmp: str, steps: int, batch: int, methods: list[str]) -> list[dict]:
    rows = []
    epochs = steps / (10_000 // batch)
    for method in methods:
        common = ["--method", method, "--data", DATA, "--batch-size", str(batch), "--epochs", f"{epochs:.4f}",
                  "--checkpoint-every", "100000"]
        setups = [(1, 1, []), (1, 2, []), (2, 1, [])] + ([(2, 1, ["--no-sync-bn"])] if method == "byol" else [])
        for ranks, threads, extra in setups:
            s = pretrain([*common, *extra, "--out", f"{tmp}/{method}-{ranks}x{threads}"], ranks, threads)
            row = {"method": method, "ranks": ranks, "threads_per_rank": threads, "global_batch": batch,
                   "sync_bn": ranks > 1 and not extra and method == "byol",
                   "steps": s["steps"], "images_per_s": s["images_per_s"], "train_seconds": s["train_seconds"]}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def memory(tmp: str, batches: list[int], chunk: int) -> list[dict]:
    rows = []
    for batch in batches:
        for ch in (0, chunk):
            if ch == 0 and batch > max(batches[:1]):
                continue       # the full batch only at the smallest size: the point is what fits
            s = _memory_run(tmp, batch, ch)
            rows.append(s)
            print(json.dumps(s), file=sys.stderr, flush=True)
    return rows


def _memory_run(tmp: str, batch: int, chunk: int) -> dict:
    """Three SimCLR steps in a fresh process; its own peak RSS (ru_maxrss, read inside it)."""
    code = f"""
import json, resource, sys
from cl_toolkit.config import resolve_config
from cl_toolkit.pipeline import pretrain
cfg = resolve_config({{"method": "simclr", "data": "{DATA}", "out": "{tmp}/mem-{batch}-{chunk}", "batch_size": {batch},
                      "epochs": {3 * batch / 10_000}, "chunk_size": {chunk}, "threads": 2, "checkpoint_every": 100000}})
s = pretrain(cfg, quiet=True, force=True)
s["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(s))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        raise SystemExit(p.stderr[-2000:])
    s = json.loads(p.stdout.strip().splitlines()[-1])
    return {"batch": batch, "chunk_size": chunk or None, "steps": s["steps"], "peak_rss_mib": s["peak_rss_mib"],
            "seconds_per_step": round(s["train_seconds"] / max(1, s["steps"]), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "throughput", "memory"], default="all")
    ap.add_argument("--methods", default="simclr,byol")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--memory-batches", default="2048,4096")
    ap.add_argument("--chunk", type=int, default=256)
    args = ap.parse_args()
    out = ROOT / "benchmarks" / "results" / "scale.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "throughput"):
            methods = args.methods.split(",")
            kept = [r for r in result.get("throughput", []) if r["method"] not in methods]
            result["throughput"] = kept + throughput(tmp, args.steps, args.batch, methods)
        if args.part in ("all", "memory"):
            result["grad_cache_memory"] = memory(tmp, [int(b) for b in args.memory_batches.split(",")], args.chunk)
    import torch

    from cl_toolkit.runtime import environment

    result["env"] = environment(torch.device("cpu"), "auto")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"out": str(out)}))


if __name__ == "__main__":
    main()

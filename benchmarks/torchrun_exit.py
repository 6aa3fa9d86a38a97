"""How often a 2-rank torchrun launch fails at shutdown: N consecutive launches of the training
path of tests/test_dist.py (``tests/dist_worker.py train``: SimCLR, gathered negatives,
synchronised batch norm, DDP on 2 gloo ranks, rank 0 writing the run dir), each one process
tree started from scratch as a user's job would be.

    python benchmarks/torchrun_exit.py                       # 100 launches, ~10 minutes on 2 cores
    python benchmarks/torchrun_exit.py --launches 20 --name quick
    python benchmarks/torchrun_exit.py --repo /tmp/old-checkout --name before   # another checkout's code

A launch counts as aborted when a rank died by SIGABRT or printed ``terminate called without an
active exception`` (gloo's shutdown abort, docs/scaling.md); any other non-zero exit is counted
apart. Writes benchmarks/results/torchrun_exit[_NAME].json: launches, aborts, exit codes,
seconds, the load average, and the commit (with a dirty flag and the diff's hash) of the code
that ran.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = "terminate called without an active exception"


def provenance(repo: Path) -> dict:
    """The commit of ``repo``, whether its tracked files differ from it, and the diff's hash."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout

    diff = git("diff", "HEAD")
    return {"git_commit": git("rev-parse", "HEAD").strip() or None, "dirty": bool(diff),
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None}


def noise_images(folder: Path, n: int = 32) -> Path:
    """The 16x16 uniform-noise images of the test (tests/test_dist.py ``_noise_images``)."""
    import torch
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(n):
        pixels = torch.randint(0, 256, (16, 16), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
        lines.append(json.dumps({"id": str(i), "image": f"{i}.png"}))
    (folder / "noise.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "noise.jsonl"


def launch(repo: Path, tmp: Path, data: Path) -> dict:
    """One torchrun launch of the worker's ``train`` case with the test's arguments."""
    args = {"method": "simclr", "data": str(data), "out": str(tmp / "two"), "encoder": "convnet-tiny",
            "epochs": 2, "batch_size": 16, "precision": "fp32", "threads": 1, "log_every": 1,
            "augment": "none", "sync_bn": True, "optimizer": "sgd", "lr": 0.05}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(repo / "tests" / "dist_worker.py"), "train", str(tmp), json.dumps(args)]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    seconds = time.perf_counter() - t0
    aborted = MESSAGE in p.stderr or "SIGABRT" in p.stderr
    wrote = all((tmp / f"train.rank{r}.json").is_file() for r in range(2))
    for r in range(2):
        (tmp / f"train.rank{r}.json").unlink(missing_ok=True)
    return {"returncode": p.returncode, "aborted": aborted, "work_done": wrote, "seconds": round(seconds, 2),
            "stderr_tail": p.stderr[-1500:] if p.returncode else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--launches", type=int, default=100)
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose cl_toolkit and tests/dist_worker.py run")
    ap.add_argument("--name", default="", help="suffix of the result file")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args()
    import torch

    repo = a.repo.resolve()
    load_before = os.getloadavg()
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = noise_images(Path(tmp))
        for i in range(a.launches):
            row = launch(repo, Path(tmp), data)
            rows.append(row)
            print(json.dumps({"launch": i + 1, **{k: v for k, v in row.items() if k != "stderr_tail"}}),
                  file=sys.stderr, flush=True)
    codes = collections.Counter(str(r["returncode"]) for r in rows)
    failures = [{"launch": i + 1, **r} for i, r in enumerate(rows) if r["returncode"]]
    result = {
        "benchmark": "torchrun_exit", "what": "2-rank gloo torchrun launches of tests/dist_worker.py train",
        **provenance(repo), "repo": str(repo), "script": provenance(ROOT),
        "launches": len(rows), "aborts": sum(r["aborted"] for r in rows),
        "other_failures": sum(bool(r["returncode"]) and not r["aborted"] for r in rows),
        "aborts_after_work_done": sum(r["aborted"] and r["work_done"] for r in rows),
        "exit_codes": dict(codes), "seconds": round(time.perf_counter() - t0, 1),
        "seconds_per_launch": [r["seconds"] for r in rows],
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "failures": failures[:10],
    }
    a.out_dir.mkdir(parents=True, exist_ok=True)
    path = a.out_dir / f"torchrun_exit{'_' + a.name if a.name else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("launches", "aborts", "other_failures", "exit_codes", "seconds")}))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""How often a 2-rank torchrun launch fails at shutdown: N consecutive launches, each one process
tree started from scratch as a user's job would be, of one of two programs:

- ``train``: the training path of tests/test_dist.py (``tests/dist_worker.py train``: SimCLR,
  gathered negatives, synchronised batch norm, DDP on 2 gloo ranks, rank 0 writing the run dir);
- ``exit``: only what such a run does last, without data or model files: ``cl_toolkit.dist.init``,
  a few DistributedDataParallel steps, ``all_objects`` and ``all_reduce_`` as the checkpoint
  does, a final barrier, then the interpreter exits with those results still referenced: the
  same shutdown without the training.

    python benchmarks/torchrun_exit.py                            # 100 train launches
    python benchmarks/torchrun_exit.py --path exit --launches 300
    python benchmarks/torchrun_exit.py --repo /tmp/old-checkout --name before   # another checkout's code

A launch counts as aborted when a rank died by SIGABRT or printed ``terminate called without an
active exception`` (gloo's shutdown abort, docs/scaling.md); any other non-zero exit is counted
apart. Writes benchmarks/results/torchrun_exit_PATH[_NAME].json: launches, aborts, exit codes,
seconds, the load average, and the commit (with a dirty flag and the diff's hash) of the code
that ran and of this script.
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


EXIT_WORKER = """
import torch
from torch.nn.parallel import DistributedDataParallel

from cl_toolkit import dist

dist.init(torch.device("cpu"))
torch.set_num_threads(1)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 4))
ddp = DistributedDataParallel(model)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(5):
    opt.zero_grad()
    ddp(torch.randn(4, 8)).sum().backward()
    opt.step()
    rngs = dist.all_objects({"rng": torch.get_rng_state()})
    agreed = dist.all_reduce_(torch.ones(2))
dist.barrier()
"""   # the last results stay referenced until the interpreter exits, as a caller's would


def launch(path: str, repo: Path, tmp: Path, data: Path) -> dict:
    """One torchrun launch of the ``path`` program."""
    if path == "train":   # the worker's ``train`` case with the test's arguments
        args = {"method": "simclr", "data": str(data), "out": str(tmp / "two"), "encoder": "convnet-tiny",
                "epochs": 2, "batch_size": 16, "precision": "fp32", "threads": 1, "log_every": 1,
                "augment": "none", "sync_bn": True, "optimizer": "sgd", "lr": 0.05}
        program = [str(repo / "tests" / "dist_worker.py"), "train", str(tmp), json.dumps(args)]
        outputs = [tmp / f"train.rank{r}.json" for r in range(2)]
    else:
        (tmp / "exit_worker.py").write_text(EXIT_WORKER)
        program = [str(tmp / "exit_worker.py")]
        outputs = []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *program]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    seconds = time.perf_counter() - t0
    aborted = MESSAGE in p.stderr or "SIGABRT" in p.stderr
    wrote = all(f.is_file() for f in outputs)
    for f in outputs:
        f.unlink(missing_ok=True)
    return {"returncode": p.returncode, "aborted": aborted, "work_done": wrote, "seconds": round(seconds, 2),
            "stderr_tail": p.stderr[-1500:] if p.returncode else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", choices=["train", "exit"], default="train", help="the program each launch runs")
    ap.add_argument("--launches", type=int, default=100)
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose cl_toolkit (and tests/dist_worker.py) run")
    ap.add_argument("--name", default="", help="suffix of the result file")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args()
    import torch

    repo = a.repo.resolve()
    code, script = provenance(repo), provenance(ROOT)     # before the launches: the code that runs
    loads = [os.getloadavg()]
    rows: list[dict] = []
    t0 = time.perf_counter()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    path = a.out_dir / f"torchrun_exit_{a.path}{'_' + a.name if a.name else ''}.json"
    meta = {"benchmark": "torchrun_exit", "path": a.path,
            "what": {"train": "2-rank gloo torchrun launches of tests/dist_worker.py train",
                     "exit": "2-rank gloo torchrun launches of EXIT_WORKER (DDP steps, all_objects, barrier)"}[a.path],
            **code, "repo": str(repo), "script": script, "launches_asked": a.launches,
            "python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        data = noise_images(Path(tmp))
        for i in range(a.launches):
            row = launch(a.path, repo, Path(tmp), data)
            rows.append(row)
            print(json.dumps({"launch": i + 1, **{k: v for k, v in row.items() if k != "stderr_tail"}}),
                  file=sys.stderr, flush=True)
            if (i + 1) % 10 == 0 or i + 1 == a.launches:  # a stopped run still leaves its counts so far
                loads.append(os.getloadavg())
                result = {**meta, **summarise(rows, a.path), "complete": i + 1 == a.launches,
                          "seconds": round(time.perf_counter() - t0, 1),
                          "loadavg_every_10_launches": [[round(x, 2) for x in la] for la in loads]}
                path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("path", "launches", "aborts", "other_failures", "exit_codes", "seconds")}))
    print(f"wrote {path}", file=sys.stderr)


def summarise(rows: list[dict], path: str) -> dict:
    failures = [{"launch": i + 1, **r} for i, r in enumerate(rows) if r["returncode"]]
    return {"launches": len(rows), "aborts": sum(r["aborted"] for r in rows),
            "other_failures": sum(bool(r["returncode"]) and not r["aborted"] for r in rows),
            "aborts_after_work_done": sum(r["aborted"] and r["work_done"] for r in rows) if path == "train" else None,
            "exit_codes": dict(collections.Counter(str(r["returncode"]) for r in rows)),
            "seconds_per_launch": [r["seconds"] for r in rows], "failures": failures[:10]}


if __name__ == "__main__":
    main()

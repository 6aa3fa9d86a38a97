"""Recommendation benchmark on MovieLens-100k (the built-in ``ml-100k``; needs
``pip install --no-deps recbole==1.2.1``): baselines and the methods, full ranking.

Methods (``--methods``): the feature towers (``twotower``, ``featmask``, ``twin``; the default), the
sequential models (``sasrec``, ``cl4srec``, ``duorec``: next-item scores from each user's
time-ordered history) and the graph models (``lightgcn``, ``sgl``, ``simgcl``: propagated
embeddings), all through ``cltk recommend``'s library call.

Protocols (``cltk split``, seed 0):
- ``loo``: leave-one-out in time order. ``--phase valid`` trains on train and scores the
  second-to-last interaction of each user (where presets are chosen); ``--phase test`` trains on
  train + valid and scores the last. Full ranking over all 1,682 items, the user's history excluded.
- ``cold-items``: 10% of the items have all their interactions in test (another 10% in valid);
  the candidates are those cold items only (the catalogue's other items are not ranked), scored
  for every user with a held-out interaction; the methods see the cold items' features but
  none of their interactions.

Every model gets the same training-time budget (``--minutes``, the one trainer's time budget)
and ``--threads``; run 1-core rows under ``taskset -c 0``. Baselines (popularity, ALS from
``implicit``, the feature profile, random) are scored the same way. The JSON records the git
commit, the CPU affinity, the load average before and after every row, steps and minutes.

    python benchmarks/recsys.py --protocol loo --phase test --minutes 5 --out benchmarks/results/recsys_loo_1core.json
    taskset -c 0 python benchmarks/recsys.py --phase test --minutes 10 --threads 1 --baselines popularity,als \
        --methods sasrec,cl4srec,duorec,lightgcn,sgl,simgcl --out benchmarks/results/recsys_loo_seqgraph.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cl_toolkit.config import resolve_config, settings_from
from cl_toolkit.io import available_cpus, write_json
from cl_toolkit.io.interactions import Interactions, read_interactions, write_interactions
from cl_toolkit.pipeline import pretrain
from cl_toolkit.recbaselines import als, feature_profile, popularity, random_ranking
from cl_toolkit.recdata import split
from cl_toolkit.receval import rec_metrics, relevant
from cl_toolkit.recommend import recommend
from cl_toolkit.runtime import environment, git_state

ROOT = Path(__file__).resolve().parents[1]
# ALS preset: chosen on the loo validation split (--phase valid --als-grid), see docs/benchmarks.md
ALS_PRESET = {"factors": 32, "regularization": 0.01, "alpha": 1.0, "iterations": 15}
ALS_GRID = [{"factors": f, "regularization": r, "alpha": a, "iterations": 15}
            for f in (16, 32, 64, 128) for r in (0.01, 0.1) for a in (1.0, 4.0)]
KS = (10, 20)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def parts_for(protocol: str, phase: str) -> tuple[Interactions, Interactions, Interactions]:
    """(all data, training interactions, interactions to score) for a protocol and phase."""
    data = read_interactions("ml-100k")
    parts = split(data, protocol, seed=0)
    if phase == "valid":
        return data, parts["train"], parts["valid"]
    rows = sorted(parts["train"].lines + parts["valid"].lines)
    pos = {ln: r for r, ln in enumerate(data.lines)}
    return data, data.subset([pos[ln] for ln in rows]), parts["test"]


def write_data(train: Interactions, data: Interactions, work: Path) -> Path:
    """Training interactions as atomic files (NAME.inter + copies of NAME.item / NAME.user)."""
    work.mkdir(parents=True, exist_ok=True)
    write_interactions(train, work / "ml-100k.inter", force=True)
    shutil.copyfile(data.item_file, work / "ml-100k.item")
    shutil.copyfile(data.user_file, work / "ml-100k.user")
    return work / "ml-100k.inter"


def score(recs, target: Interactions, train: Interactions, catalogue: set[str]) -> dict:
    pred = {r["user"]: [x["item"] for x in r["items"]] for r in recs}
    seen = relevant(train)
    return rec_metrics(pred, relevant(target), KS, seen, catalogue)


def launch(cfg, ranks: int, sets: list[str]) -> dict:
    """``cltk pretrain`` under torchrun: ``ranks`` processes, ``cfg.threads`` threads each."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
           "-m", "cl_toolkit", "pretrain", "--method", cfg.method, "--data", cfg.data, "--out", cfg.out,
           *(["--minutes", str(cfg.minutes)] if cfg.minutes is not None else ["--epochs", str(cfg.epochs)]),
           "--threads", str(cfg.threads), "--seed", str(cfg.seed),
           "--checkpoint-every", str(cfg.checkpoint_every), "--force", "--quiet"]
    for kv in sets:
        cmd += ["--set", kv]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"torchrun failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", choices=("loo", "cold-items"), default="loo")
    ap.add_argument("--phase", choices=("valid", "test"), default="test")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--epochs", type=float, default=None, help="an epoch budget instead of --minutes")
    ap.add_argument("--methods", default="twotower,featmask,twin")
    ap.add_argument("--baselines", default="popularity,als,feature-profile,random")
    ap.add_argument("--als-grid", action="store_true", help="also score the ALS grid (choose ALS_PRESET on valid)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPUs of the affinity)")
    ap.add_argument("--set", action="append", default=[], help="METHOD:KEY=VALUE for one method (repeatable)")
    ap.add_argument("--ranks", type=int, default=1, help="train under torchrun with this many processes of "
                    "--threads threads each (gathered in-batch negatives)")
    ap.add_argument("--seeds", default="0", help="training seeds of every method (e.g. 0,1,2: one row per seed; "
                    "the split is always seed 0)")
    ap.add_argument("--tag", default="", help="a name for the rows of this run (e.g. a setting being probed)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default=None, help="folder for data and run dirs (default: a temporary one)")
    args = ap.parse_args()

    threads = args.threads or available_cpus()
    torch.set_num_threads(threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="cltk-recsys-"))
    data, train, target = parts_for(args.protocol, args.phase)
    path = write_data(train, data, work / "data")
    users = sorted(set(target.users))
    cold = args.protocol == "cold-items"
    candidates = sorted(set(target.items)) if cold else None
    catalogue = set(candidates) if cold else set(data.catalogue())
    items = data.catalogue()
    result = {
        "benchmark": "recsys", "data": "ml-100k", "protocol": args.protocol, "phase": args.phase,
        "ranking": "full" + (" over the cold items" if cold else " over all items, history excluded"),
        "users_scored": len(users), "catalogue": len(catalogue), "train_interactions": len(train),
        "minutes_budget": None if args.epochs is not None else args.minutes, "epochs_budget": args.epochs,
        "threads": threads, "ranks": args.ranks, "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "git": git_state(), "env": environment(), "argv": sys.argv, "rows": [],
    }

    def add(row: dict) -> None:
        result["rows"].append(row)
        keep = ("model", "hr@10", "recall@10", "ndcg@10", "mrr", "coverage@10", "train_minutes", "steps")
        print(json.dumps({k: row.get(k) for k in keep}), file=sys.stderr, flush=True)
        write_json(args.out, result)

    baselines = [b for b in args.baselines.split(",") if b]
    for name in baselines:
        settings = [ALS_PRESET] if name == "als" else [{}]
        if name == "als" and args.als_grid:
            settings = ALS_GRID
        for s in settings:
            before, t0 = load(), time.perf_counter()
            if name == "popularity":
                recs = popularity(train, users, items, 20, candidates)
            elif name == "als":
                recs = als(train, users, items, 20, **s, candidates=candidates)
            elif name == "feature-profile":
                recs = feature_profile(train, users, items, 20, candidates)
            else:
                recs = random_ranking(train, users, items, 20, seed=0, candidates=candidates)
            m = score(list(recs), target, train, catalogue)
            add({"model": name, "kind": "baseline", "settings": s, **m,
                 "train_minutes": round((time.perf_counter() - t0) / 60, 3), "load_before": before,
                 "load_after": load()})

    overrides: dict[str, list[str]] = {}
    for s in args.set:
        m, _, kv = s.partition(":")
        overrides.setdefault(m, []).append(kv)
    seeds = [int(x) for x in args.seeds.split(",")]
    for method, seed in [(m, sd) for m in args.methods.split(",") if m for sd in seeds]:
        run = work / f"run-{method}-{seed}"
        extra = settings_from(overrides.get(method, []))
        budget = {"epochs": args.epochs} if args.epochs is not None else {"minutes": args.minutes}
        cfg = resolve_config({"method": method, "data": str(path), "out": str(run), **budget,
                              "threads": threads, "seed": seed, "checkpoint_every": 100000, **extra})
        before = load()
        if args.ranks > 1:
            summary = launch(cfg, args.ranks, overrides.get(method, []))
        else:
            summary = pretrain(cfg, force=True, quiet=True)
        t0 = time.perf_counter()
        recs = list(recommend(run, users=users, k=20, candidates=candidates))
        m = score(recs, target, train, catalogue)
        if not cold:   # `cltk recommend --k 100`: 100 items per user, best first, none seen
            big = list(recommend(run, users=users, k=100))
            seen = relevant(train)
            m["k100_check"] = all(
                len(r["items"]) == 100 and not {x["item"] for x in r["items"]} & seen.get(r["user"], set())
                and all(a["score"] >= b["score"] for a, b in zip(r["items"], r["items"][1:])) for r in big)
        add({"model": method + (f" ({args.tag})" if args.tag else ""), "kind": "method", "seed": seed,
             "ranks": args.ranks,
             "settings": {k: v for k, v in json.loads((run / "config.json").read_text()).items()
                          if k in ("lr", "batch_size", "weight_decay", "method_config", "optimizer", "precision")},
             **m, "train_minutes": round(summary["train_seconds"] / 60, 2), "steps": summary["steps"],
             "epochs": summary["epochs"], "recommend_seconds": round(time.perf_counter() - t0, 1),
             "load_before": before, "load_after": load()})
        result["seed_means"] = seed_means(result["rows"])
        write_json(args.out, result)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def seed_means(rows: list[dict]) -> dict:
    """Per method row name: mean and standard deviation of each metric over its seeds."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["model"] for r in rows if r["kind"] == "method"):
        runs = [r for r in rows if r["kind"] == "method" and r["model"] == name]
        out[name] = {"seeds": [r["seed"] for r in runs]}
        for key in ("hr@10", "recall@10", "ndcg@10", "mrr", "steps"):
            vals = torch.tensor([float(r[key]) for r in runs], dtype=torch.float64)
            out[name][key] = {"mean": round(vals.mean().item(), 4),
                              "std": round(vals.std().item(), 4) if len(runs) > 1 else 0.0}
    return out


if __name__ == "__main__":
    main()

"""Peak resident memory of text pretraining against the number of records: CD-TOM's cached
lower-layer states (the default preset: 2 trainable layers, so every post's token states are
cached), CLIP's cached caption features and SimCSE, for this checkout and a baseline commit.
CD-TOM and SimCSE run at every ``--posts`` size (SimCSE reads the posts' text and caches nothing,
so its rows show whether anything grows with the number of texts); CLIP at the 10,000 pairs.

Each row is one ``cltk pretrain`` process, measured by GNU time (maximum resident set size),
that caches everything and then trains ``--steps`` steps (40 by default): the peak comes during
training, not at the end of caching, since every step allocates and frees its own activations
(a first version of this script ran one step and missed that; see docs/benchmarks.md, "Memory").
Post sets larger than the debtags training split are the split repeated with new ids (the cache
grows with posts x tokens x width, whatever the texts say).

    python benchmarks/memory.py [--baseline fdd1441] [--posts 5000,26830,58690] [--before-posts 5000,26830]
                                [--methods cdtom,clip,simcse] [--env KEY=VALUE ...]

Writes benchmarks/results/memory.json.

``--part quality`` checks that bounding the memory left the tags as good as they were: the same
CD-TOM training (the default preset on the debtags training split, ``--epochs E``) with this
checkout and with the baseline commit, both runs scored by this checkout on the validation and
test posts (hit@1, hit@3, recall@3, MRR). Writes benchmarks/results/memory_quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cl_toolkit.config import resolve_config  # noqa: E402
from cl_toolkit.runtime import environment  # noqa: E402

DEBTAGS = ROOT / "benchmarks" / "data" / "debtags"
PAIRS = ROOT / "benchmarks" / "data" / "fmnist_pairs"
EXTRA_ENV: dict[str, str] = {}     # --env: set for every measured process (e.g. a glibc malloc setting)


def posts_file(n: int, out: Path) -> Path:
    base = [json.loads(x) for x in (DEBTAGS / "train.jsonl").read_text().splitlines()]
    rows = [{**base[i % len(base)], "id": f"{base[i % len(base)]['id']}#{i // len(base)}"} for i in range(n)]
    path = out / f"posts_{n}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def peak_rss(tree: Path, args: list[str]) -> dict:
    """Run ``cltk ARGS`` from ``tree`` under GNU time: peak RSS (MB), wall seconds, exit code."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        env = {**os.environ, **EXTRA_ENV, "PYTHONPATH": str(tree)}
        r = subprocess.run(["/usr/bin/time", "-f", "%M %e", "-o", t.name, sys.executable, "-m", "cl_toolkit", *args],
                           capture_output=True, text=True, env=env, cwd=tree)
        kb, secs = t.read().split()[-2:]
    if r.returncode:
        raise SystemExit(f"{args}: {r.stderr.strip().splitlines()[-1:]}")
    return {"peak_rss_mb": round(int(kb) / 1024, 1), "seconds": float(secs), "summary": json.loads(r.stdout)}


def quality(args, tmp: Path, base: Path) -> dict:
    from cl_toolkit.tag import load_tagger, tag_metrics, tag_posts

    out = {}
    for version, tree in (("after", ROOT), ("before", base)):
        run = tmp / f"q_{version}"
        res = peak_rss(tree, ["pretrain", "--method", "cdtom", "--data", str(DEBTAGS / "train.jsonl"), "--out",
                              str(run), "--epochs", str(args.epochs), "--quiet", "--force", "--threads", "1",
                              "--seed", str(args.seed),
                              "--tags", str(DEBTAGS / "tags.txt")])
        tagger = load_tagger(str(run))
        for split in ("valid", "test"):
            posts = [json.loads(x) for x in (DEBTAGS / f"{split}.jsonl").read_text().splitlines()]
            res[split] = tag_metrics(list(tag_posts(tagger, posts, top_k=10)), posts)
        out[version] = res
        print(json.dumps({version: {k: res[k] for k in ("peak_rss_mb", "valid", "test")}}), flush=True)
    out["hit@1_difference"] = {s: round(out["after"][s]["hit@1"] - out["before"][s]["hit@1"], 4)
                               for s in ("valid", "test")}
    return out


def epochs_for(method: str, records: int, steps: int) -> str:
    """The ``--epochs`` that make about ``steps`` training steps of ``method``'s preset batch."""
    batch = resolve_config({"method": method, "data": "-", "out": "-"}).batch_size
    return str(round(steps * batch / records, 4))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="fdd1441")
    ap.add_argument("--posts", default="5000,26830,58690")
    ap.add_argument("--before-posts", default="5000,26830", help="sizes also run with the baseline commit")
    ap.add_argument("--part", choices=["rss", "quality"], default="rss")
    ap.add_argument("--steps", type=int, default=40, help="--part rss: training steps of each row")
    ap.add_argument("--epochs", type=float, default=2, help="--part quality: training epochs of both runs")
    ap.add_argument("--seed", type=int, default=0, help="--part quality: the seed of both runs")
    ap.add_argument("--methods", default="cdtom,clip,simcse", help="--part rss: which rows")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for every measured process (repeatable)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    EXTRA_ENV.update(kv.split("=", 1) for kv in args.env)
    methods = args.methods.split(",")
    name = "memory.json" if args.part == "rss" else "memory_quality.json"
    args.out = args.out or str(ROOT / "benchmarks" / "results" / name)
    if not (DEBTAGS / "train.jsonl").is_file():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "debtags.py"), "--out", str(DEBTAGS)], check=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            if args.part == "quality":
                Path(args.out).write_text(json.dumps({"benchmark": "memory_quality", "baseline_commit": args.baseline,
                                                      "epochs": args.epochs, "seed": args.seed,
                                                      **quality(args, tmp, base),
                                                      "env": environment()}, indent=2) + "\n")
                return
            for n in map(int, args.posts.split(",") if "cdtom" in methods else []):
                data = posts_file(n, tmp)
                versions = [("after", ROOT)] + ([("before", base)] if str(n) in args.before_posts.split(",") else [])
                for version, tree in versions:
                    res = peak_rss(tree, ["pretrain", "--method", "cdtom", "--data", str(data), "--out",
                                          str(tmp / f"run_{version}_{n}"), "--epochs",
                                          epochs_for("cdtom", n, args.steps), "--quiet", "--force",
                                          "--tags", str(DEBTAGS / "tags.txt")])
                    rows.append({"method": "cdtom", "records": n, "version": version, **res})
                    print(json.dumps(rows[-1]), flush=True)
            if "clip" in methods and (PAIRS / "train.jsonl").is_file():
                res = peak_rss(ROOT, ["pretrain", "--method", "clip", "--data", str(PAIRS / "train.jsonl"), "--out",
                                      str(tmp / "clip"), "--epochs", epochs_for("clip", 10000, args.steps),
                                      "--quiet", "--force"])
                rows.append({"method": "clip", "records": 10000, "version": "after", **res})
                print(json.dumps(rows[-1]), flush=True)
            for n in map(int, args.posts.split(",") if "simcse" in methods else []):
                data = posts_file(n, tmp)               # SimCSE reads the text field and ignores the tags
                res = peak_rss(ROOT, ["pretrain", "--method", "simcse", "--data", str(data), "--out",
                                      str(tmp / f"simcse_{n}"), "--epochs", epochs_for("simcse", n, args.steps),
                                      "--quiet", "--force"])
                rows.append({"method": "simcse", "records": n, "version": "after", **res})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    Path(args.out).write_text(json.dumps({"benchmark": "memory", "baseline_commit": args.baseline,
                                          "steps": args.steps, "extra_env": EXTRA_ENV, "rows": rows,
                                          "loadavg": os.getloadavg(), "env": environment()}, indent=2) + "\n")


if __name__ == "__main__":
    main()

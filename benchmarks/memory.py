"""Peak resident memory of text pretraining against the number of records: CD-TOM's cached
lower-layer states (the default preset: 2 trainable layers, so every post's token states are
cached), CLIP's cached caption features and SimCSE, for this checkout and a baseline commit.

Each row is one ``cltk pretrain`` process, measured by GNU time (maximum resident set size),
that caches everything and then trains a few steps (``--epochs`` small): the cache is built
before the first step, so the peak is reached whatever the number of steps. Post sets larger
than the debtags training split are the split repeated with new ids (the cache grows with posts
x tokens x width, whatever the texts say).

    python benchmarks/memory.py [--baseline fdd1441] [--posts 5000,26830,58690] [--before-posts 5000,26830]

Writes benchmarks/results/memory.json.
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

from cl_toolkit.runtime import environment  # noqa: E402

DEBTAGS = ROOT / "benchmarks" / "data" / "debtags"
PAIRS = ROOT / "benchmarks" / "data" / "fmnist_pairs"


def posts_file(n: int, out: Path) -> Path:
    base = [json.loads(x) for x in (DEBTAGS / "train.jsonl").read_text().splitlines()]
    rows = [{**base[i % len(base)], "id": f"{base[i % len(base)]['id']}#{i // len(base)}"} for i in range(n)]
    path = out / f"posts_{n}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def peak_rss(tree: Path, args: list[str]) -> dict:
    """Run ``cltk ARGS`` from ``tree`` under GNU time: peak RSS (MB), wall seconds, exit code."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        r = subprocess.run(["/usr/bin/time", "-f", "%M %e", "-o", t.name, sys.executable, "-m", "cl_toolkit", *args],
                           capture_output=True, text=True, env=env, cwd=tree)
        kb, secs = t.read().split()[-2:]
    if r.returncode:
        raise SystemExit(f"{args}: {r.stderr.strip().splitlines()[-1:]}")
    return {"peak_rss_mb": round(int(kb) / 1024, 1), "seconds": float(secs), "summary": json.loads(r.stdout)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="fdd1441")
    ap.add_argument("--posts", default="5000,26830,58690")
    ap.add_argument("--before-posts", default="5000,26830", help="sizes also run with the baseline commit")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.json"))
    args = ap.parse_args()
    if not (DEBTAGS / "train.jsonl").is_file():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "debtags.py"), "--out", str(DEBTAGS)], check=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for n in map(int, args.posts.split(",")):
                data = posts_file(n, tmp)
                versions = [("after", ROOT)] + ([("before", base)] if str(n) in args.before_posts.split(",") else [])
                for version, tree in versions:
                    res = peak_rss(tree, ["pretrain", "--method", "cdtom", "--data", str(data), "--out",
                                          str(tmp / f"run_{version}_{n}"), "--epochs", "0.01", "--quiet", "--force",
                                          "--tags", str(DEBTAGS / "tags.txt")])
                    rows.append({"method": "cdtom", "records": n, "version": version, **res})
                    print(json.dumps(rows[-1]), flush=True)
            if (PAIRS / "train.jsonl").is_file():
                res = peak_rss(ROOT, ["pretrain", "--method", "clip", "--data", str(PAIRS / "train.jsonl"), "--out",
                                      str(tmp / "clip"), "--epochs", "0.05", "--quiet", "--force"])
                rows.append({"method": "clip", "records": 10000, "version": "after", **res})
                print(json.dumps(rows[-1]), flush=True)
            texts = tmp / "texts.jsonl"
            posts = [json.loads(x) for x in (DEBTAGS / "train.jsonl").read_text().splitlines()]
            texts.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in posts))
            res = peak_rss(ROOT, ["pretrain", "--method", "simcse", "--data", str(texts), "--out", str(tmp / "simcse"),
                                  "--epochs", "0.01", "--quiet", "--force"])
            rows.append({"method": "simcse", "records": len(posts), "version": "after", **res})
            print(json.dumps(rows[-1]), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    Path(args.out).write_text(json.dumps({"benchmark": "memory", "baseline_commit": args.baseline, "rows": rows,
                                          "loadavg": os.getloadavg(), "env": environment()}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Hashtag generation on the debtags corpus: zero-shot vs frozen-feature probe vs CD-TOM, and
the end-to-end throughput of `cltk tag` against the bare encoder.

Data: `python benchmarks/debtags.py` (Debian packages: one-line description -> debtags; split
by source package: 10% test, 10% validation; vocabulary = tags used >= 5 times in training).

Rows, all scored on the validation posts (what presets are chosen by) and on the test posts
(reported, never used to choose) against the same vocabulary with `cltk eval tag`'s metrics
(hit@1, hit@3, recall@3, MRR):
- prior: the tag-frequency prior, every post gets the training split's most frequent tags;
- zero-shot: all-MiniLM-L6-v2 embeds posts and tag names (`cltk tag --model minilm-l6 --tags`);
- probe: MiniLM frozen, only the post/tag heads trained on cached features with the same
  multi-positive loss (`--set finetune_layers=0`);
- cdtom: the default `cltk pretrain --method cdtom` preset (what a user gets with no options).

Throughput: `cltk tag` as a subprocess (python start, model load, tokenise, encode, search,
write) on every post of the corpus, against the bare encoder's own length-sorted batched
encoding of the same texts (tokenise + forward) measured in the same run: the ratio.

    python benchmarks/tag.py [--rows prior,zero,probe,cdtom,throughput] [--set key=value ...] [--tag NAME]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cl_toolkit.config import resolve_config, settings_from  # noqa: E402
from cl_toolkit.data import load_posts  # noqa: E402
from cl_toolkit.encoders import create_text_encoder  # noqa: E402
from cl_toolkit.pipeline import pretrain  # noqa: E402
from cl_toolkit.runtime import environment  # noqa: E402
from cl_toolkit.tag import load_tagger, tag_metrics, tag_posts  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "debtags"


def evaluate(tagger) -> dict:
    """Validation and test metrics of a tagger (a run or a model with a tag list)."""
    out = {}
    for split in ("valid", "test"):
        posts = load_posts(str(DATA / f"{split}.jsonl"))
        t0 = time.perf_counter()
        res = tag_metrics(list(tag_posts(tagger, posts, top_k=10)), posts)
        out[split] = {**res, "tag_seconds": round(time.perf_counter() - t0, 1)}
    return out


def prior() -> dict:
    """The tag-frequency prior: the training split's 10 most frequent vocabulary tags, for every post."""
    vocab = set((DATA / "tags.txt").read_text().split())
    counts = collections.Counter(t for p in load_posts(str(DATA / "train.jsonl")) for t in p["tags"] if t in vocab)
    top = [t for t, _ in counts.most_common(10)]
    out = {"tags": top}
    for split in ("valid", "test"):
        posts = load_posts(str(DATA / f"{split}.jsonl"))
        out[split] = tag_metrics([{"id": p["id"], "tags": top} for p in posts], posts)
    return out


def train_row(overrides: dict, tmp: str, name: str) -> dict:
    cfg = resolve_config({"method": "cdtom", "data": str(DATA / "train.jsonl"), "out": f"{tmp}/{name}",
                          **overrides, "method_config": {"tags": str(DATA / "tags.txt"),
                                                         **overrides.get("method_config", {})}})
    t0 = time.perf_counter()
    summary = pretrain(cfg, quiet=True)
    wall = time.perf_counter() - t0
    run = Path(cfg.out)
    row = {"train": summary, "wall_seconds_incl_caching_and_export": round(wall, 1),
           "config": json.loads((run / "config.json").read_text()),
           "tagger": json.loads((run / "tagger.json").read_text())}
    return {**row, **evaluate(load_tagger(str(run)))}


def throughput(tmp: str) -> dict:
    posts = [p for split in ("train", "valid", "test") for p in load_posts(str(DATA / f"{split}.jsonl"))]
    texts = [p["text"] for p in posts]
    src = Path(tmp) / "all.jsonl"
    src.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in posts))
    enc = create_text_encoder("minilm-l6")
    enc.encode(texts[:256])                                    # warm up
    t0 = time.perf_counter()
    enc.encode(texts, batch_size=128)
    bare = time.perf_counter() - t0
    out = Path(tmp) / "tagged.jsonl"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cl_toolkit", "tag", str(src), "--model", "minilm-l6", "--tags",
                        str(DATA / "tags.txt"), "--out", str(out), "--quiet"], capture_output=True, text=True)
    e2e = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr)
    assert sum(1 for _ in out.open()) == len(posts)
    return {"posts": len(posts), "bare_encoder_seconds": round(bare, 1),
            "bare_encoder_per_s": round(len(posts) / bare, 1), "cltk_tag_seconds": round(e2e, 1),
            "cltk_tag_per_s": round(len(posts) / e2e, 1), "ratio": round(bare / e2e, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="prior,zero,probe,cdtom,throughput")
    ap.add_argument("--set", action="append", default=[], help="override for the cdtom row, key=value")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    if not (DATA / "valid.jsonl").is_file():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "debtags.py"), "--out", str(DATA)], check=True)
    rows = args.rows.split(",")
    overrides = settings_from(args.set)
    result: dict = {"data": json.loads((DATA / "info.json").read_text()), "overrides": overrides}
    brief = lambda name: print(json.dumps({name: {s: result[name][s] for s in ("valid", "test")}}),  # noqa: E731
                               file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if "prior" in rows:
            result["prior"] = prior()
            brief("prior")
        if "zero" in rows:
            result["zero_shot"] = evaluate(load_tagger("minilm-l6", str(DATA / "tags.txt")))
            brief("zero_shot")
        if "probe" in rows:
            result["probe"] = train_row({"method_config": {"finetune_layers": 0}}, tmp, "probe")
            brief("probe")
        if "cdtom" in rows:
            result["cdtom"] = train_row(overrides, tmp, "cdtom")
            brief("cdtom")
        if "throughput" in rows:
            result["throughput"] = throughput(tmp)
            print(json.dumps({"throughput": result["throughput"]}), file=sys.stderr, flush=True)
    result["env"] = environment(torch.device("cpu"), "auto")
    name = "tag" + (f"_{args.tag}" if args.tag else "")
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"out": str(out)}))


if __name__ == "__main__":
    main()

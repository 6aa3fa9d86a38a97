"""Negatives and targets (issue 19): each option against its base at equal steps, and the options that
cost more per step also at equal CPU time (the minutes of one dedicated core), on the project's data
sets, with a validation split to choose settings and a test split to report.

The host these ran on is shared, so wall-clock minutes swing with the other processes; steps and the
CPU seconds spent inside training steps (measured per row, `step_cpu_seconds`) do not, or much less.
Every row trains for the suite's fixed number of steps (`--steps`; the run's config.json says
``epochs: 1``, the step budget is set here, exactly); a ``*_cpu`` row trains its option for the
steps the base row's step CPU seconds buy at the option's own cost per step (from its equal-steps
row), which is the equal-minutes comparison on a dedicated core.

Suites (one per run of this script; rows run one after another in this process, 1 thread):

- ``clip``: Fashion-MNIST captions (`benchmarks/fmnist_pairs.py`). Validation: 2,000 training-split
  images that are not among the 10,000 training pairs, captioned with the held-out phrasings
  (written here, once); zero-shot accuracy on them and text->image / image->text recall on them.
  Test: zero-shot on the 10,000 Fashion-MNIST test images and recall on the 2,000 held-out pairs
  (as `benchmarks/clip.py`). Rows: ``base`` (`cltk pretrain --method clip`, its preset),
  ``queue`` (WenLan, `queue=4096`), ``queue_cpu`` (the same at the base row's CPU time), ``cwcl1`` /
  ``cwcl4`` (CWCL, power 1 = the paper's / 4), ``dcl`` (tau+ 0.1), ``hcl`` (beta 0.5, tau+ 0),
  ``mined`` (hard-negative captions mined with the base run: ranks 1-999, margin 0).
- ``tag``: debtags (`benchmarks/debtags.py`), CD-TOM's default preset. Validation: the 5% of
  training posts CD-TOM holds out by id hash for calibration (never trained on); test: the
  held-out split. Rows: ``base``, ``queue`` (1,024 tags), ``queue_cpu``, ``dcl`` (tau+ 0.1),
  ``hcl`` (beta 0.5), ``mined`` (3 hard-negative tags per post mined with the base run, ranks 0-29,
  margin 0).
- ``simcse``: debtags package descriptions as sentences. Training: the training posts' texts
  (validation posts left out). Evaluation (labels never seen in training): kNN tagging, each
  query post's tags predicted from its 20 nearest posts among 6,000 training posts (a seeded
  sample; similarity-weighted votes), scored as `cltk eval tag` (hit@1, hit@3, recall@3, MRR).
  Rows: ``zero`` (MiniLM as installed), ``unsup``, ``esimcse`` (repetition 0.32 + queue 160),
  ``esimcse_rep`` (repetition only), ``esimcse_cpu`` (at unsup's CPU time), ``dcl`` (unsup + tau+
  0.1), ``sup`` (positive = another post with the same tag set), ``sup_mined`` (+ a hard negative
  mined with MiniLM: ranks 3-29, margin 0).

Every row records the steps, the training-step CPU seconds, the run's wall and CPU seconds and
`os.getloadavg()` before and after. Results go to `benchmarks/results/negatives_<suite>[_TAG].json`,
rewritten after each row.

    python benchmarks/negatives.py --suite clip [--steps 400] [--rows base,queue] [--tag NAME]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cl_toolkit import index as ix  # noqa: E402
from cl_toolkit.config import TrainConfig, resolve_config  # noqa: E402
from cl_toolkit.data import load_posts  # noqa: E402
from cl_toolkit.embed import embed  # noqa: E402
from cl_toolkit.encoders import load_encoder  # noqa: E402
from cl_toolkit.eval import retrieval_eval, zeroshot  # noqa: E402
from cl_toolkit.io import read_jsonl  # noqa: E402
from cl_toolkit.mine import mine, read_records, write_mined  # noqa: E402
from cl_toolkit.pipeline import pretrain  # noqa: E402
from cl_toolkit.runtime import environment  # noqa: E402
from cl_toolkit.tag import load_tagger, tag_metrics, tag_posts  # noqa: E402
from cl_toolkit.tasks.posts import holdout_mask  # noqa: E402
from cl_toolkit.train import Trainer  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
PAIRS, DEBTAGS = DATA / "fmnist_pairs", DATA / "debtags"
WORK = DATA / "negatives"           # run dirs and derived files (not committed)

CLIP_ROWS = {
    "base": {}, "queue": {"queue": 4096}, "queue_cpu": {"queue": 4096}, "cwcl1": {"cwcl": True},
    "cwcl4": {"cwcl": True, "cwcl_power": 4.0}, "dcl": {"tau_plus": 0.1}, "hcl": {"beta": 0.5}, "mined": {},
}
TAG_ROWS = {"base": {}, "queue": {"queue": 1024}, "queue_cpu": {"queue": 1024}, "dcl": {"tau_plus": 0.1},
            "hcl": {"beta": 0.5}, "mined": {}}
SIMCSE_ROWS = {
    "zero": None, "unsup": {"mode": "unsup"}, "esimcse": {"mode": "esimcse"},
    "esimcse_rep": {"mode": "esimcse", "queue": 0}, "esimcse_cpu": {"mode": "esimcse"},
    "dcl": {"mode": "unsup", "tau_plus": 0.1}, "sup": {"mode": "sup"}, "sup_mined": {"mode": "sup"},
}
# Every row trains for the suite's fixed number of steps (the host is shared: wall-clock minutes
# swing with the other processes, steps do not). A "*_cpu" row is its option at equal CPU time
# instead: the steps the base row's training-step CPU seconds buy at the option's measured cost
# per step (from the option's own row).
STEPS = {"clip": 400, "tag": 100, "simcse": 100}
STEPS_BASE = {"clip": "base", "tag": "base", "simcse": "unsup"}
MINE_CLIP_RANGE_MAX = 1000     # of 2,863 distinct captions: records keep a negative unless their own ranks lower
KNN_BANK = 6000                # training posts (seeded sample) the kNN tagger votes from


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# Benchmark-only instrumentation: an exact step budget (the trainer counts epochs of its own
# record count; mined files hold fewer records) and the CPU seconds spent inside training steps.
_BUDGET: dict = {"steps": None, "step_cpu": 0.0}
_total_steps, _step = TrainConfig.total_steps, Trainer.step


def _fixed_total(self: TrainConfig, n: int) -> int | None:
    return _BUDGET["steps"] or _total_steps(self, n)


def _timed_step(self: Trainer, *args, **kwargs):
    c0 = time.process_time()
    try:
        return _step(self, *args, **kwargs)
    finally:
        _BUDGET["step_cpu"] += time.process_time() - c0


TrainConfig.total_steps, Trainer.step = _fixed_total, _timed_step


def steps_for(name: str, suite: str, result: dict, steps: int) -> int:
    """The row's step budget: the suite's, or for a "*_cpu" row the steps at the base row's CPU time."""
    if not name.endswith("_cpu"):
        return steps
    rows = result["rows"]
    base, opt = rows[STEPS_BASE[suite]]["train"], rows[name[: -len("_cpu")]]["train"]
    return max(1, round(steps * (base["step_cpu_seconds"] / base["steps"]) / (opt["step_cpu_seconds"] / opt["steps"])))


def train(overrides: dict, out: Path, steps: int) -> dict:
    """One pretraining run of exactly ``steps`` steps; its summary (with the CPU seconds of the
    training steps), the wall and CPU seconds of the whole run and the load before and after."""
    cfg = resolve_config({**overrides, "out": str(out), "epochs": 1})
    _BUDGET.update(steps=steps, step_cpu=0.0)
    before, t0, c0 = load(), time.perf_counter(), time.process_time()
    try:
        summary = pretrain(cfg, quiet=True, force=True)
    finally:
        _BUDGET["steps"] = None
    summary["step_cpu_seconds"] = round(_BUDGET["step_cpu"], 1)
    return {"train": summary, "wall_seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1), "load_before": before, "load_after": load(),
            "config": json.loads((out / "config.json").read_text())}


# ---------------------------------------------------------------- clip

def clip_data() -> None:
    """The captioned pairs (benchmarks/fmnist_pairs.py) and a validation split of training-split
    images outside the 10,000 training pairs, captioned with the held-out phrasings."""
    if not (PAIRS / "train.jsonl").is_file():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fmnist_pairs.py"), "--out", str(PAIRS)], check=True)
    if (PAIRS / "valid.jsonl").is_file():
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from fmnist_pairs import caption
    from PIL import Image

    from cl_toolkit.io import read_builtin

    used = {r["id"] for r in read_jsonl(PAIRS / "train.jsonl")}
    src = read_builtin("fashion-mnist:train")
    rng = random.Random(2)
    by_class = collections.defaultdict(list)
    for r in src.records:
        if r["id"] not in used:
            by_class[r["label"]].append(r)
    (PAIRS / "images" / "valid").mkdir(parents=True, exist_ok=True)
    lines = []
    for label in sorted(by_class):
        for r in rng.sample(by_class[label], 200):
            img = src.array[r["index"]]
            path = Path("images") / "valid" / f"{r['id']}.png"
            Image.fromarray(img).save(PAIRS / path)
            lines.append({"id": r["id"], "text": caption(label, img, rng, True), "image": str(path), "label": label})
    (PAIRS / "valid.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def clip_eval(run: Path) -> dict:
    res = {}
    for split, zs_data, pairs in (("valid", PAIRS / "valid.jsonl", PAIRS / "valid.jsonl"),
                                  ("test", "fashion-mnist:test", PAIRS / "heldout.jsonl")):
        zs = zeroshot(str(run), str(zs_data), str(PAIRS / "classes.txt"))
        t, tm, _ = embed(str(run), str(pairs), field="text")
        i, im, _ = embed(str(run), str(pairs), field="image")
        res[split] = {"zeroshot_accuracy": zs["accuracy"], "text_to_image": retrieval_eval(t, tm, i, im),
                      "image_to_text": retrieval_eval(i, im, t, tm),
                      "text_to_image_same_class": retrieval_eval(t, tm, i, im, match_field="label")}
    return res


def mined_data(source: Path, base_run: Path, out: Path, **options) -> tuple[Path, dict]:
    """``source`` with hard negatives mined by the base row's run (``cltk mine``'s library call),
    written to ``out``; returns it and the mining summary with its seconds."""
    recs, kind = read_records(str(source))
    t0 = time.perf_counter()
    mined, summary = mine(recs, kind, str(source), str(base_run), **options)
    write_mined(mined, kind, str(source), out, force=True)
    return out, {**summary, "seconds": round(time.perf_counter() - t0, 1)}


def clip_row(name: str, steps: int, result: dict) -> dict:
    mc = dict(CLIP_ROWS[name])
    data = PAIRS / "train.jsonl"
    extra: dict = {}
    if name == "mined":
        data, extra["mining"] = mined_data(PAIRS / "train.jsonl", WORK / "clip_base", WORK / "clip_mined.jsonl",
                                           range_min=1, range_max=MINE_CLIP_RANGE_MAX, margin=0.0)
    out = WORK / f"clip_{name}"
    row = train({"method": "clip", "data": str(data), "method_config": mc, "threads": 1}, out,
                steps_for(name, "clip", result, steps))
    row["clip"] = json.loads((out / "clip.json").read_text())
    return {**row, **extra, **clip_eval(out)}


# ---------------------------------------------------------------- tag (cdtom)

def tag_eval(run: Path) -> dict:
    tagger = load_tagger(str(run))
    posts = load_posts(str(DEBTAGS / "train.jsonl"))
    valid = [p for p, h in zip(posts, holdout_mask([p["id"] for p in posts], 0.05)) if h]
    test = load_posts(str(DEBTAGS / "test.jsonl"))
    return {split: tag_metrics(list(tag_posts(tagger, data, top_k=10)), data)
            for split, data in (("valid", valid), ("test", test))}


def tag_row(name: str, steps: int, result: dict) -> dict:
    data = DEBTAGS / "train.jsonl"
    extra: dict = {}
    if name == "mined":
        data, extra["mining"] = mined_data(DEBTAGS / "train.jsonl", WORK / "tag_base", WORK / "tag_mined.jsonl",
                                           tags=str(DEBTAGS / "tags.txt"), num=3, range_min=0, range_max=30,
                                           margin=0.0)
    out = WORK / f"tag_{name}"
    mc = {"tags": str(DEBTAGS / "tags.txt"), **TAG_ROWS[name]}
    row = train({"method": "cdtom", "data": str(data), "method_config": mc, "threads": 1}, out,
                steps_for(name, "tag", result, steps))
    return {**row, **extra, **tag_eval(out)}


# ---------------------------------------------------------------- simcse on debtags descriptions

def simcse_data() -> dict[str, Path]:
    """Training texts (validation posts left out) and supervised pairs: each post with another post
    of exactly the same tag set (seeded), for the posts whose tag set is shared."""
    WORK.mkdir(parents=True, exist_ok=True)
    posts = load_posts(str(DEBTAGS / "train.jsonl"))
    held = holdout_mask([p["id"] for p in posts], 0.05)
    train_posts = [p for p, h in zip(posts, held) if not h]
    texts, sup = WORK / "simcse_texts.jsonl", WORK / "simcse_sup.jsonl"
    if not texts.is_file():
        texts.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in train_posts))
    if not sup.is_file():
        groups = collections.defaultdict(list)
        for p in train_posts:
            groups[frozenset(p["tags"])].append(p)
        rng = random.Random(0)
        lines = []
        for p in train_posts:
            mates = [m for m in groups[frozenset(p["tags"])] if m["id"] != p["id"] and m["text"] != p["text"]]
            if mates:
                lines.append({"id": p["id"], "text": p["text"], "positive": rng.choice(mates)["text"]})
        sup.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return {"texts": texts, "sup": sup}


def knn_tags(model: str) -> dict:
    """kNN tagging: each query post's tags from its 20 nearest training posts, votes weighted by
    exp(cosine / 0.05); scored on the validation and the test posts."""
    posts = load_posts(str(DEBTAGS / "train.jsonl"))
    held = holdout_mask([p["id"] for p in posts], 0.05)
    bank = random.Random(0).sample([p for p, h in zip(posts, held) if not h], KNN_BANK)
    valid = [p for p, h in zip(posts, held) if h]
    test = load_posts(str(DEBTAGS / "test.jsonl"))
    enc, _ = load_encoder(model)
    t0 = time.perf_counter()
    vb = enc.encode([p["text"] for p in bank])
    index = ix.make_index("Flat", vb.shape[1], "ip")
    index.add(ix.prepare(vb, True))
    res = {}
    for split, queries in (("valid", valid), ("test", test)):
        vq = enc.encode([p["text"] for p in queries])
        scores, rows = ix.search(index, vq, 20, True)
        pred = []
        for q, s, r in zip(queries, scores, rows):
            votes: dict[str, float] = collections.defaultdict(float)
            for sj, j in zip(s, r):
                for t in bank[j]["tags"]:
                    votes[t] += float(np.exp(sj / 0.05))
            pred.append({"id": q["id"], "tags": sorted(votes, key=votes.get, reverse=True)[:10]})
        res[split] = tag_metrics(pred, queries)
    res["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return res


def simcse_row(name: str, steps: int, result: dict) -> dict:
    files = simcse_data()
    mc = SIMCSE_ROWS[name]
    if mc is None:
        return {"load_before": load(), **knn_tags("minilm-l6"), "load_after": load()}
    data, extra = (files["sup"] if mc["mode"] == "sup" else files["texts"]), {}
    if name == "sup_mined":
        data = WORK / "simcse_sup_mined.jsonl"
        recs, kind = read_records(str(files["sup"]))
        t0 = time.perf_counter()
        mined, summary = mine(recs, kind, str(files["sup"]), "minilm-l6", range_min=3, range_max=30, margin=0.0)
        write_mined(mined, kind, str(files["sup"]), data, force=True)
        extra["mining"] = {**summary, "seconds": round(time.perf_counter() - t0, 1)}
    out = WORK / f"simcse_{name}"
    row = train({"method": "simcse", "data": str(data), "encoder": "minilm-l6", "method_config": mc, "threads": 1},
                out, steps_for(name, "simcse", result, steps))
    return {**row, **extra, **knn_tags(str(out))}


SUITES = {"clip": (CLIP_ROWS, clip_row), "tag": (TAG_ROWS, tag_row), "simcse": (SIMCSE_ROWS, simcse_row)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), required=True)
    ap.add_argument("--rows", default="")
    ap.add_argument("--steps", type=int, default=0, help="training steps per row (default: the suite's STEPS)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows_def, fn = SUITES[args.suite]
    rows = args.rows.split(",") if args.rows else list(rows_def)
    unknown = set(rows) - set(rows_def)
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; known: {sorted(rows_def)}")
    if args.suite == "clip":
        clip_data()
    elif not (DEBTAGS / "train.jsonl").is_file():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "debtags.py"), "--out", str(DEBTAGS)], check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    out = ROOT / "benchmarks" / "results" / f"negatives_{args.suite}{'_' + args.tag if args.tag else ''}.json"
    result = json.loads(out.read_text()) if out.is_file() else {}
    steps = args.steps or STEPS[args.suite]
    result.update({"suite": args.suite, "steps": steps, "env": environment(torch.device("cpu"), "auto")})
    result.setdefault("rows", {})
    for name in rows:
        print(json.dumps({"row": name, "start": time.strftime("%H:%M:%S"), "load": load()}), file=sys.stderr,
              flush=True)
        result["rows"][name] = fn(name, steps, result)
        out.write_text(json.dumps(result, indent=2) + "\n")
        r = result["rows"][name]
        print(json.dumps({"row": name, "steps": r.get("train", {}).get("steps"), "valid": r.get("valid"),
                          "test": r.get("test")}), file=sys.stderr, flush=True)
    print(json.dumps({"out": str(out)}))


if __name__ == "__main__":
    main()

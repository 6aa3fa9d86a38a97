"""Self-supervised pretraining on a CPU: accuracy per minute on Fashion-MNIST.

Protocol (issue 3): pretrain on 10,000 unlabelled training images (1,000 per class, seed 0),
then weighted kNN (k=20, t=0.07, cosine) on the 10,000 test images with those 10,000 training
images as the bank; the same kNN with 10,000 other training images (the next 1,000 of each
class, ``offset=1000``) as queries is the validation score that presets are chosen by (the test
score is reported beside it, never used to choose). kNN is measured at fixed minutes of training
time inside one run (the clock
stops while evaluating) and at the end; also the baselines: raw pixels (with and without
centring) and the untrained encoder.

    python benchmarks/ssl_cpu.py --method byol --minutes 30 --marks 5,10,20,30
    python benchmarks/ssl_cpu.py --method simclr --minutes 10 --set lr=0.003 --tag lr3e-3
    python benchmarks/ssl_cpu.py --method swav --minutes 10 --set small_crops=2 --tag sc2

Any registered method works (`cltk methods`); ``collapse_warnings`` counts the metrics lines
that raised the trainer's collapse warning (0 for a run that did not collapse).

Writes benchmarks/results/ssl_cpu_<method>[_<tag>].json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cl_toolkit.config import resolve_config, settings_from  # noqa: E402
from cl_toolkit.data import load_images  # noqa: E402
from cl_toolkit.embed import embed_images  # noqa: E402
from cl_toolkit.eval import knn_accuracy  # noqa: E402
from cl_toolkit.pipeline import pretrain  # noqa: E402
from cl_toolkit.runtime import environment  # noqa: E402

TRAIN = "fashion-mnist:train?per_class=1000&seed=0"
VAL = "fashion-mnist:train?per_class=1000&seed=0&offset=1000"   # disjoint from TRAIN
TEST = "fashion-mnist:test"


def knn(bank, bank_labels, query, query_labels, prefix: str = "") -> dict:
    plain = knn_accuracy(bank, bank_labels, query, query_labels)
    centred = knn_accuracy(bank, bank_labels, query, query_labels, center=True)
    return {f"{prefix}knn_top1": plain["knn_top1"], f"{prefix}knn_top1_centred": centred["knn_top1"]}


def scores(embed_fn, train, val, test) -> dict:
    """Validation and test kNN of the features ``embed_fn`` gives, with the training images as bank."""
    bank = embed_fn(train)
    return {**knn(bank, train.labels, embed_fn(val), val.labels, "val_"),
            **knn(bank, train.labels, embed_fn(test), test.labels)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="byol")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--epochs", type=float, default=None, help="fixed-step run instead of a time budget")
    ap.add_argument("--marks", default="", help="training minutes at which to measure kNN, e.g. 5,10,20")
    ap.add_argument("--every", type=int, default=0, help="also measure kNN every N steps")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE as cltk pretrain --set")
    ap.add_argument("--tag", default="")
    ap.add_argument("--baselines", action="store_true", help="also measure raw pixels and the untrained encoder")
    ap.add_argument("--run-dir", default=None, help="keep the run dir here (with report.html) instead of a temp dir")
    args = ap.parse_args()

    overrides = settings_from(args.set)
    train = load_images(TRAIN)
    val, test = load_images(VAL, classes=train.classes), load_images(TEST, classes=train.classes)
    result: dict = {"protocol": {"train": TRAIN, "val": VAL, "test": TEST, "k": 20, "temperature": 0.07},
                    "method": args.method, "tag": args.tag, "overrides": overrides}

    if args.baselines:
        result["raw_pixels"] = scores(lambda d: d.images.flatten(1).float(), train, val, test)

    marks = [float(m) for m in args.marks.split(",") if m]
    curve: list[dict] = []
    clock = {"start": 0.0, "eval": 0.0}

    def monitor(model, state) -> dict:
        t0 = time.perf_counter()
        target = {}
        if hasattr(model, "target_encoder"):  # the EMA (momentum) encoder of BYOL / MoCo
            res = scores(lambda d: embed_images(model.target_encoder, d.images, normalize=False), train, val, test)
            target = {f"target_{k}": v for k, v in res.items()}
        wall = (t0 - clock["start"] - clock["eval"]) / 60
        row = {"minutes": round(state.elapsed / 60, 2), "wall_minutes": round(wall, 2), "step": state.step,
               "epoch": state.epoch,
               "images_per_s": round(state.images / max(state.elapsed, 1e-9), 1),
               **scores(lambda d: embed_images(model.encoder, d.images, normalize=False), train, val, test),
               **target,
               "eval_seconds": round(time.perf_counter() - t0, 1)}
        clock["eval"] += time.perf_counter() - t0
        curve.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run_dir or f"{tmp}/run"
        cfg = resolve_config({"method": args.method, "data": TRAIN, "out": run, **overrides,
                              **({"epochs": args.epochs} if args.epochs else {"minutes": args.minutes})})
        if args.baselines:
            from cl_toolkit.encoders import create_encoder

            torch.manual_seed(cfg.seed)
            enc = create_encoder(cfg.encoder or "convnet-small", 1, 28, **cfg.encoder_args)
            result["untrained_encoder"] = scores(lambda d: embed_images(enc, d.images, normalize=False),
                                                 train, val, test)
            print(json.dumps({k: result[k] for k in ("raw_pixels", "untrained_encoder")}), file=sys.stderr)
        clock["start"] = time.perf_counter()
        summary = pretrain(cfg, data=train, quiet=True, force=bool(args.run_dir), monitor=monitor,
                           monitor_every=args.every,
                           monitor_minutes=marks)
        result["config"] = json.loads(Path(run, "config.json").read_text())
        metrics = [json.loads(x) for x in Path(run, "metrics.jsonl").read_text().splitlines()]
        last = [m for m in metrics if "effective_rank" in m][-1]
        result["final_collapse_stats"] = {k: last[k] for k in ("std", "std_ideal", "effective_rank",
                                                              "alignment", "uniformity") if k in last}
        result["collapse_warnings"] = sum(1 for m in metrics if m.get("collapse_warning"))
        if args.run_dir:
            from cl_toolkit.report import write_report

            result["report"] = str(write_report(run))
    result["summary"] = summary
    result["curve"] = curve
    result["env"] = environment(torch.device("cpu"), cfg.precision)
    name = f"ssl_cpu_{args.method}" + (f"_{args.tag}" if args.tag else "")
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"final": curve[-1] if curve else None, "out": str(out)}))


if __name__ == "__main__":
    main()

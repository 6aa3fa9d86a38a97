"""Text-image dual towers on Fashion-MNIST captions: zero-shot accuracy and cross-modal recall.

Data: `python benchmarks/fmnist_pairs.py` (10,000 captioned training images, 1,000 per class;
2,000 held-out test images captioned with phrasings never used in training).

Each row trains `cltk pretrain --method clip` on the 10k pairs for a wall-clock budget, then:
- zero-shot accuracy on the 10,000 Fashion-MNIST test images with plain class-name prompts
  ("a photo of a sneaker.", `cltk eval zeroshot`);
- text->image and image->text recall@1/5/10 on the 2,000 held-out pairs (the relevant item is
  the pair's other half, exact search, `cltk eval retrieval`).

Rows: `probe` = the locked-text reference (frozen MiniLM + linear head, `convnet-small` image
tower from scratch, 10 minutes); `default` = `cltk pretrain --method clip` as shipped (its own
epochs; `--minutes M` for a time budget instead). `--set` changes the default row.

    python benchmarks/clip.py --rows probe,default [--set key=value] [--tag NAME] [--minutes M]
"""

from __future__ import annotations

import argparse
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
from cl_toolkit.embed import embed  # noqa: E402
from cl_toolkit.eval import retrieval_eval, zeroshot  # noqa: E402
from cl_toolkit.pipeline import pretrain  # noqa: E402
from cl_toolkit.runtime import environment  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "fmnist_pairs"


def evaluate(run: str) -> dict:
    zs = zeroshot(run, "fashion-mnist:test", str(DATA / "classes.txt"))
    held = str(DATA / "heldout.jsonl")
    t, tm, _ = embed(run, held, field="text")
    i, im, _ = embed(run, held, field="image")
    return {"zeroshot_accuracy": zs["accuracy"], "zeroshot_per_class": zs["per_class"],
            "text_to_image": retrieval_eval(t, tm, i, im), "image_to_text": retrieval_eval(i, im, t, tm),
            "text_to_image_same_class": retrieval_eval(t, tm, i, im, match_field="label")}


def row(overrides: dict, minutes: float | None, tmp: str, name: str) -> dict:
    budget = {"minutes": minutes} if minutes else {}          # else the preset's own epochs
    cfg = resolve_config({"method": "clip", "data": str(DATA / "train.jsonl"), "out": f"{tmp}/{name}",
                          **budget, **overrides})
    t0 = time.perf_counter()
    summary = pretrain(cfg, quiet=True)
    wall = time.perf_counter() - t0
    res = {"train": summary, "wall_seconds_incl_loading_and_caching": round(wall, 1),
           "config": json.loads(Path(cfg.out, "config.json").read_text()),
           "clip": json.loads(Path(cfg.out, "clip.json").read_text()), **evaluate(cfg.out)}
    print(json.dumps({name: {k: res[k] for k in ("zeroshot_accuracy", "text_to_image", "image_to_text")}}),
          file=sys.stderr, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="probe,default")
    ap.add_argument("--minutes", type=float, default=0, help="budget of the default row (0: the preset's epochs)")
    ap.add_argument("--probe-minutes", type=float, default=10)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    if not (DATA / "train.jsonl").is_file():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fmnist_pairs.py"), "--out", str(DATA)], check=True)
    overrides = settings_from(args.set)
    rows = args.rows.split(",")
    result: dict = {"data": {"train": 10000, "heldout": 2000, "zeroshot_test": "fashion-mnist:test (10,000)"},
                    "overrides": overrides}
    with tempfile.TemporaryDirectory() as tmp:
        if "probe" in rows:
            result["probe"] = row({"method_config": {"text_layers": 0}}, args.probe_minutes, tmp, "probe")
        if "default" in rows:
            result["default"] = row(overrides, args.minutes, tmp, "default")
    result["env"] = environment(torch.device("cpu"), "auto")
    out = ROOT / "benchmarks" / "results" / ("clip" + (f"_{args.tag}" if args.tag else "") + ".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"out": str(out)}))


if __name__ == "__main__":
    main()

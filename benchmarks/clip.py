"""Text-image dual towers on Fashion-MNIST captions: zero-shot accuracy and cross-modal recall.

Data: `python benchmarks/fmnist_pairs.py` (10,000 captioned training images, 1,000 per class;
2,000 held-out test images captioned with phrasings never used in training).

Each row trains `cltk pretrain --method clip` on the 10k pairs for a wall-clock budget, then:
- zero-shot accuracy on the 10,000 Fashion-MNIST test images with plain class-name prompts
  ("a photo of a sneaker.", `cltk eval zeroshot`);
- text->image and image->text recall@1/5/10 on the 2,000 held-out pairs (the relevant item is
  the pair's other half, exact search, `cltk eval retrieval`).

Validation (what presets are chosen by): zero-shot accuracy on 5,000 Fashion-MNIST training
images that are not among the 10k captioned ones (``offset=1000``). The test columns above are
reported beside it and never used to choose.

Rows: `probe` = the locked-text reference (frozen MiniLM + linear head, `convnet-small` image
tower from scratch, 10 minutes); `default` = `cltk pretrain --method clip` as shipped (its own
epochs; `--minutes M` for a time budget instead). `--set` changes the default row.
The baselines the labels give (the captions name the class, so zero-shot here is close to
supervised classification; these rows show what the contrastive objective costs or gives):
`linear` = a linear probe (`cltk finetune --mode linear`) on the default row's image tower,
trained on the 10k images' labels; `supervised` = the same image tower from scratch trained with
cross-entropy on those labels (`cltk finetune --mode full`) for the same epochs and batch as
the default row. Both are scored on the validation and test images.

    python benchmarks/clip.py --rows probe,default,linear,supervised [--set key=value] [--tag NAME]
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
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cl_toolkit.config import resolve_config, settings_from  # noqa: E402
from cl_toolkit.data import load_labelled  # noqa: E402
from cl_toolkit.embed import embed, embed_images  # noqa: E402
from cl_toolkit.encoders import load_encoder, save_encoder  # noqa: E402
from cl_toolkit.eval import LinearHead, accuracy, retrieval_eval, zeroshot  # noqa: E402
from cl_toolkit.finetune import FinetuneConfig, finetune  # noqa: E402
from cl_toolkit.io.run import ENCODER, HEAD  # noqa: E402
from cl_toolkit.pipeline import pretrain  # noqa: E402
from cl_toolkit.runtime import environment  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "fmnist_pairs"
LABELLED = "fashion-mnist:train?per_class=1000&seed=0"         # the images of train.jsonl, with labels
VAL = "fashion-mnist:train?per_class=500&seed=0&offset=1000"   # training images not captioned
TEST = "fashion-mnist:test"


def evaluate(run: str) -> dict:
    classes = str(DATA / "classes.txt")
    zs = zeroshot(run, TEST, classes)
    held = str(DATA / "heldout.jsonl")
    t, tm, _ = embed(run, held, field="text")
    i, im, _ = embed(run, held, field="image")
    return {"val_zeroshot_accuracy": zeroshot(run, VAL, classes)["accuracy"],
            "zeroshot_accuracy": zs["accuracy"], "zeroshot_per_class": zs["per_class"],
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
    print(json.dumps({name: {k: res[k] for k in ("val_zeroshot_accuracy", "zeroshot_accuracy", "text_to_image",
                                                 "image_to_text")}}),
          file=sys.stderr, flush=True)
    return res


def labelled_row(encoder_dir: Path, mode: str, epochs: int, lr: float, out: str) -> dict:
    """``cltk finetune`` of ``encoder_dir`` on the 10k captioned images' labels, scored on the
    validation and test images (the saved encoder + head applied to each)."""
    t0 = time.perf_counter()
    res = finetune(FinetuneConfig(run=str(encoder_dir), data=LABELLED, out=out, mode=mode, test=TEST,
                                  epochs=epochs, lr=lr))
    wall = time.perf_counter() - t0
    enc, spec = load_encoder(Path(out) / ENCODER)
    inp = spec["input"]
    head = LinearHead(**load_file(str(Path(out) / HEAD)))
    val = load_labelled(VAL, inp["channels"], inp["image_size"], res["classes"])
    x = torch.from_numpy(embed_images(enc, val.images, normalize=False))
    row = {"mode": mode, "epochs": epochs if mode == "full" else None, "wall_seconds": round(wall, 1),
           "val_accuracy": accuracy(head.logits(x), val.labels), "test_accuracy": res["test_top1"],
           "train_accuracy": res["train_top1"]}
    print(json.dumps({f"{mode}": row}), file=sys.stderr, flush=True)
    return row


def scratch_copy(encoder_dir: Path, out: Path, seed: int = 0) -> Path:
    """The same image tower (architecture, input normalisation) with fresh random weights."""
    enc, spec = load_encoder(encoder_dir)
    torch.manual_seed(seed)
    for m in enc.modules():
        if m is not enc and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    save_encoder(enc, spec["name"], spec.get("args", {}), out, extra={"source": "random init"})
    return out


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
        if {"default", "linear", "supervised"} & set(rows):
            result["default"] = row(overrides, args.minutes, tmp, "default")
            tower = Path(tmp, "default", ENCODER, "image")
            if "linear" in rows:
                result["linear_probe_on_clip_image_tower"] = labelled_row(tower, "linear", 1, 1e-3, f"{tmp}/linear")
            if "supervised" in rows:
                cfg = result["default"]["config"]
                result["supervised_same_tower"] = labelled_row(scratch_copy(tower, Path(tmp, "scratch")), "full",
                                                               int(cfg["epochs"]), cfg["lr"], f"{tmp}/supervised")
    result["env"] = environment(torch.device("cpu"), "auto")
    out = ROOT / "benchmarks" / "results" / ("clip" + (f"_{args.tag}" if args.tag else "") + ".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"out": str(out)}))


if __name__ == "__main__":
    main()

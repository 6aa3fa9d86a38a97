"""Image-caption pairs from Fashion-MNIST, for `cltk pretrain --method clip`.

Each image gets a caption from a class synonym, attributes read off its pixels (tone: dark /
grey / light; texture: plain / patterned; size: small / large) and a phrasing template. The
training split uses one set of synonyms and phrasings; the held-out split uses phrasings (and
some synonyms) that never occur in training, so retrieval on it measures generalisation, not
memorised sentences. Writes PNGs plus `{"id", "text", "image", "label"}` JSONL:

    python benchmarks/fmnist_pairs.py --out benchmarks/data/fmnist_pairs
    -> train.jsonl (10,000 pairs: 1,000 per class of the training set, seed 0),
       heldout.jsonl (2,000 pairs from the test set), classes.txt, images/

`--sample N` writes N training-style pairs (data_samples/pairs.jsonl uses 40).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cl_toolkit.io import FASHION_MNIST_CLASSES, read_builtin  # noqa: E402

SYNONYMS = {   # the first is the plain class name (zero-shot prompts use it); the last is held out
    "t-shirt": ["t-shirt", "tee", "top", "short-sleeved tee"],
    "trouser": ["trouser", "pair of trousers", "pants", "slacks"],
    "pullover": ["pullover", "sweater", "jumper", "knit sweater"],
    "dress": ["dress", "frock", "gown", "sundress"],
    "coat": ["coat", "jacket", "overcoat", "parka"],
    "sandal": ["sandal", "open shoe", "strappy sandal", "flip-flop"],
    "shirt": ["shirt", "button-up shirt", "collared shirt", "blouse"],
    "sneaker": ["sneaker", "trainer", "running shoe", "sports shoe"],
    "bag": ["bag", "handbag", "purse", "tote"],
    "ankle-boot": ["ankle boot", "boot", "short boot", "bootie"],
}
TRAIN_TEMPLATES = ["a photo of a {a} {n}", "a {a} {n}", "{n}, {a}", "a picture of a {n}",
                   "product shot of a {a} {n}", "a {n} on a black background", "{a} {n}"]
HELDOUT_TEMPLATES = ["an image showing a {a} {n}", "this is a {n} that looks {a}",
                     "catalogue image: {n} ({a})"]


def attributes(img: np.ndarray) -> list[str]:
    on = img > 30
    px = img[on] if on.any() else img.ravel()
    tone = "dark" if px.mean() < 90 else "light" if px.mean() > 160 else "grey"
    texture = "patterned" if px.std() > 55 else "plain"
    size = "small" if on.mean() < 0.3 else "large" if on.mean() > 0.6 else "medium-sized"
    return [tone, texture, size]


def caption(label: str, img: np.ndarray, rng: random.Random, heldout: bool) -> str:
    syn = SYNONYMS[label]
    noun = rng.choice(syn if heldout else syn[:-1])
    attrs = attributes(img)
    a = " ".join(rng.sample(attrs, rng.choice([1, 2])))
    return rng.choice(HELDOUT_TEMPLATES if heldout else TRAIN_TEMPLATES).format(a=a, n=noun)


def write(src_spec: str, out: Path, name: str, heldout: bool, seed: int) -> int:
    src = read_builtin(src_spec)
    rng = random.Random(seed)
    (out / "images" / name).mkdir(parents=True, exist_ok=True)
    lines = []
    for r in src.records:
        img = src.array[r["index"]]
        path = Path("images") / name / f"{r['id']}.png"
        Image.fromarray(img).save(out / path)
        lines.append({"id": r["id"], "text": caption(r["label"], img, rng, heldout), "image": str(path),
                      "label": r["label"]})
    (out / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return len(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/data/fmnist_pairs")
    ap.add_argument("--sample", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(f"{c}\t{SYNONYMS[c][0]}\n" for c in FASHION_MNIST_CLASSES))
    if args.sample:
        n = write(f"fashion-mnist:train?per_class={max(1, args.sample // 10)}&seed=1", out, "pairs", False, 1)
        print(json.dumps({"pairs": n}))
        return
    info = {"train": write("fashion-mnist:train?per_class=1000&seed=0", out, "train", False, 0),
            "heldout": write("fashion-mnist:test?per_class=200&seed=0", out, "heldout", True, 1)}
    print(json.dumps(info))


if __name__ == "__main__":
    main()

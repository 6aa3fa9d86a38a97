"""Image sources: image folders (ImageFolder layout or flat), JSONL image records, built-in data sets."""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from .errors import InputError
from .files import atomic_file
from .records import read_jsonl

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
FASHION_MNIST_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]


@dataclass
class ImageSource:
    """A list of image records: ``id``, ``label`` (or None) and where the pixels come from
    (a file path, or row ``index`` of an in-memory uint8 ``array`` [N, H, W])."""

    name: str
    records: list[dict]
    array: Any = None                       # numpy uint8 [N,H,W] for built-in data sets
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image_folder(folder: Path) -> ImageSource:
    """ImageFolder layout (``class/xxx.png``) gives labels; a flat folder gives none."""
    files = _image_files(folder)
    if not files:
        raise InputError("no images found (looked for " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")", folder)
    labelled = all(f.parent != folder for f in files)
    classes = sorted({f.relative_to(folder).parts[0] for f in files}) if labelled else []
    records = []
    for f in files:
        rel = f.relative_to(folder)
        rid = rel.with_suffix("").as_posix()
        rec = {"id": rid, "image": str(f), "_src": str(folder), "_line": None}
        if labelled:
            rec["label"] = rel.parts[0]
        records.append(rec)
    return ImageSource(str(folder), records, classes=classes)


def image_source(recs: list[dict], name: str) -> ImageSource:
    """Validated image records ``{"id", "image": path relative to the file, ...}`` read from the
    JSONL file ``name`` (``<stdin>``: paths relative to the working directory): every ``image``
    a path string to an existing file, made absolute."""
    base = Path.cwd() if name in ("-", "<stdin>") else Path(name).parent
    for r in recs:
        if "image" not in r or r["image"] is None:
            hint = " (the record has 'text'; is this a text model's input?)" if "text" in r else ""
            raise InputError(f"missing{hint}", name, r["_line"], "image")
        if not isinstance(r["image"], str):
            raise InputError("must be a path string", name, r["_line"], "image")
        p = Path(r["image"])
        r["image"] = str(p if p.is_absolute() else base / p)
        r["_src"] = name
        if not Path(r["image"]).is_file():
            raise InputError(f"image file not found: {r['image']}", name, r["_line"], "image")
    labels = sorted({str(r["label"]) for r in recs if r.get("label") is not None})
    return ImageSource(name, recs, classes=labels)


def read_image_jsonl(path: Path | str) -> ImageSource:
    """A JSONL file of image records (``-`` is stdin), validated by ``image_source``."""
    name = "<stdin>" if str(path) == "-" else str(path)
    return image_source(read_jsonl(path), name)


def fashion_mnist_dir() -> Path:
    """Where the Fashion-MNIST ``*-ubyte.gz`` files are: $CLTK_FASHION_MNIST or Debian's
    ``dataset-fashion-mnist`` package location."""
    return Path(os.environ.get("CLTK_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def _fashion_mnist(split: str):
    """Load a Fashion-MNIST split through torchvision's own FashionMNIST class, from the
    locally installed files (never downloads): the gz files are unpacked once into a cache."""
    from torchvision.datasets import FashionMNIST  # io imports no torch unless a built-in data set is read

    src = fashion_mnist_dir()
    cache = Path(os.environ.get("CLTK_CACHE", Path.home() / ".cache" / "cltk"))
    raw = cache / "FashionMNIST" / "raw"
    for name in (f"{p}-{k}-ubyte" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")):
        if not (raw / name).is_file():
            gz = src / f"{name}.gz"
            if not gz.is_file():
                raise InputError(
                    "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist, "
                    "or set CLTK_FASHION_MNIST to a folder with the *-ubyte.gz files)", gz)
            raw.mkdir(parents=True, exist_ok=True)
            with gzip.open(gz) as fin, atomic_file(raw / name, force=True, binary=True) as fout:
                shutil.copyfileobj(fin, fout)
    return FashionMNIST(str(cache), train=(split == "train"), download=False)


def read_builtin(spec: str) -> ImageSource:
    """``fashion-mnist:train`` / ``fashion-mnist:test``, optionally ``?per_class=N&seed=S``
    (a class-balanced random subset, fixed by seed, default 0; ``&offset=K`` skips the first K
    of each class's shuffled order, so ``per_class=1000&offset=1000`` is disjoint from
    ``per_class=1000``: a validation split) or ``?limit=N`` (first N)."""
    base, _, query = spec.partition("?")
    name, _, split = base.partition(":")
    if name != "fashion-mnist" or split not in ("train", "test"):
        raise InputError("unknown data set; built-in data sets are fashion-mnist:train and fashion-mnist:test",
                         spec)
    try:
        opts = {k: int(v[-1]) for k, v in parse_qs(query, strict_parsing=bool(query)).items()}
    except ValueError:
        raise InputError("options must look like ?per_class=1000&seed=0 or ?limit=500", spec) from None
    unknown = set(opts) - {"per_class", "seed", "offset", "limit"}
    if unknown:
        raise InputError(f"unknown option(s) {sorted(unknown)}; use per_class, seed, offset or limit", spec)
    if {"seed", "offset"} & set(opts) and "per_class" not in opts:
        raise InputError("seed and offset apply to per_class subsets: add ?per_class=N", spec)
    if any(v < 0 for v in opts.values()):
        raise InputError("options must be non-negative integers", spec)
    ds = _fashion_mnist(split)
    images, labels = ds.data.numpy(), ds.targets.numpy()
    idx = list(range(len(labels)))
    if "per_class" in opts:
        rng = np.random.default_rng(opts.get("seed", 0))
        lo = opts.get("offset", 0)
        chosen = [np.sort(rng.permutation(np.flatnonzero(labels == c))[lo: lo + opts["per_class"]]) for c in range(10)]
        idx = sorted(np.concatenate(chosen).tolist())
    if "limit" in opts:
        idx = idx[: opts["limit"]]
    records = [{"id": f"fmnist-{split}-{i:05d}", "label": FASHION_MNIST_CLASSES[labels[i]],
                "index": k, "_src": spec, "_line": None} for k, i in enumerate(idx)]
    return ImageSource(spec, records, array=images[idx], classes=list(FASHION_MNIST_CLASSES))


def read_images(spec: str | os.PathLike) -> ImageSource:
    """The one entry point for image data: a folder (ImageFolder layout or flat), a JSONL file
    of image records, or a built-in data set name such as ``fashion-mnist:train``."""
    s = str(spec)
    if s.startswith("fashion-mnist"):
        return read_builtin(s)
    p = Path(s)
    if s == "-" or p.suffix == ".jsonl":
        return read_image_jsonl(s)
    if p.is_dir():
        return read_image_folder(p)
    if not p.exists():
        raise InputError("no such file or folder", s)
    raise InputError("expected an image folder, a .jsonl file of image records or fashion-mnist:train|test", s)

"""Data sets: image records decoded once into a uint8 tensor [N, C, H, W].

Images are decoded, converted to the channel count the encoder wants and resized (shorter
side, then centre crop) to a fixed square size. Small and medium data sets (the CPU case) fit
in memory many times over as uint8, so batches are plain tensor indexing and the augmentation
runs batched on the training device (see ``augment``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .io import ImageSource, InputError, read_image_jsonl, read_images, read_jsonl


@dataclass
class ImageData:
    """Decoded images plus their records. ``labels`` are class indices into ``classes``
    (or -1 where a record has none)."""

    images: torch.Tensor          # uint8 [N, C, H, W]
    records: list[dict]
    classes: list[str]
    labels: torch.Tensor          # int64 [N]
    source: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).all()) and len(self.classes) > 0


def _resize_square(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def probe_image(src: ImageSource) -> tuple[int, int]:
    """(channels, size) of the first image: 1 for grayscale, else 3; size = shorter side."""
    if src.array is not None:
        return 1, int(min(src.array.shape[1:3]))
    rec = src.records[0]
    with _open(rec, src) as img:
        return (1 if img.mode in ("L", "1", "I;16", "I") else 3), min(img.size)


def _open(rec: dict, src: ImageSource) -> Image.Image:
    try:
        img = Image.open(rec["image"])
        img.load()
        return img
    except (UnidentifiedImageError, OSError) as e:
        where = rec.get("_src", src.name)
        line = rec.get("_line")
        msg = f"unreadable image {rec['image']} ({type(e).__name__})"
        if line is None:
            raise InputError(msg, rec["image"]) from None
        raise InputError(msg, where, line, "image") from None


def decode(src: ImageSource, channels: int, size: int,
           progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Decode every record of ``src`` to uint8 [N, channels, size, size]."""
    out = torch.empty((len(src), channels, size, size), dtype=torch.uint8)
    mode = "L" if channels == 1 else "RGB"
    for i, rec in enumerate(src.records):
        if src.array is not None:
            img = Image.fromarray(src.array[rec["index"]])
        else:
            img = _open(rec, src)
        img = _resize_square(img.convert(mode), size)
        arr = np.asarray(img, dtype=np.uint8)
        out[i] = torch.from_numpy(arr.reshape(size, size, channels).copy()).permute(2, 0, 1)
        if progress is not None:
            progress(1)
    return out


def load_images(spec: str, channels: int | None = None, size: int | None = None,
                classes: list[str] | None = None,
                progress: Callable[[int], None] | None = None) -> ImageData:
    """Read and decode an image data set. ``channels``/``size`` default to those of the first
    image. ``classes`` fixes the label order (e.g. the bank's classes for a query set)."""
    src = read_images(spec)
    c0, s0 = probe_image(src)
    channels, size = channels or c0, size or s0
    images = decode(src, channels, size, progress)
    classes = list(classes) if classes is not None else list(src.classes)
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index.get(str(r["label"]), -1) if r.get("label") is not None else -1 for r in src.records],
                          dtype=torch.long)
    return ImageData(images, src.records, classes, labels, src.name)


def load_labelled(spec: str, channels: int, size: int, classes: list[str] | None = None,
                  what: str = "data") -> ImageData:
    """Labelled images for supervised work and evaluation; records without a label are refused."""
    data = load_images(spec, channels=channels, size=size, classes=classes)
    missing = next((i for i, r in enumerate(data.records) if r.get("label") is None), None)
    if missing is not None or not data.classes:
        rec = data.records[missing or 0]
        raise InputError(f"missing in {what} record {rec['id']!r} (this needs labelled records or class "
                         "subfolders)", rec.get("_src", spec), rec.get("_line"), "label")
    return data


# ---------------------------------------------------------------- text records

def check_text(rec: dict, field: str, where: str, hint: str = "") -> None:
    """``rec[field]`` is a non-empty string, or one InputError naming file, line and field
    (``hint`` is appended to the message of a missing field)."""
    v = rec.get(field)
    if not isinstance(v, str):
        raise InputError(f"missing (a non-empty string is needed){hint}" if v is None else "must be a string",
                         where, rec.get("_line"), field)
    if not v.strip():
        raise InputError("is empty", where, rec.get("_line"), field)


def load_texts(spec: str, fields: tuple[str, ...] = ("text",), optional: tuple[str, ...] = ()) -> list[dict]:
    """JSONL text records (``-`` is stdin): every record needs a non-empty string in each of
    ``fields``; ``optional`` fields are checked only where present."""
    recs = read_jsonl(spec, required=("id",))
    name = "<stdin>" if spec == "-" else spec
    for r in recs:
        for f in fields:
            check_text(r, f, name)
        for f in optional:
            if f in r and r[f] is not None:
                check_text(r, f, name)
    return recs


def load_posts(spec: str, need_tags: bool = True) -> list[dict]:
    """Post records ``{"id", "text", "tags": [...][, "negative": [...]]}``: ``tags`` a list of
    non-empty strings (stripped; duplicates dropped, order kept); ``negative`` optional hard-negative
    tags, a list of strings too. Without ``need_tags``, tags are optional."""
    recs = load_texts(spec, ("text",))
    return check_posts(recs, "<stdin>" if spec == "-" else spec, need_tags)


def check_posts(recs: list[dict], name: str, need_tags: bool = True) -> list[dict]:
    """``load_posts``'s rules on records already read from ``name`` (tags normalised in place)."""
    for r in recs:
        neg = r.get("negative")
        if neg is not None and not (isinstance(neg, list) and all(isinstance(t, str) and t.strip() for t in neg)):
            raise InputError("must be a list of tag strings (hard-negative tags)", name, r["_line"], "negative")
        if "tags" not in r or r["tags"] is None:
            if need_tags:
                raise InputError("missing (a list of tag strings is needed)", name, r["_line"], "tags")
            continue
        tags = r["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise InputError("must be a list of non-empty strings", name, r["_line"], "tags")
        r["tags"] = list(dict.fromkeys(t.strip() for t in tags))
    return recs


def read_tag_list(path: str) -> list[str]:
    """A tag vocabulary file: one tag per line, blank lines and ``#`` comments skipped."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", path)
    tags = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    tags = list(dict.fromkeys(t for t in tags if t and not t.startswith("#")))
    if not tags:
        raise InputError("no tags (empty vocabulary)", path)
    return tags


def tag_text(tag: str) -> str:
    """The text a tag tower reads for a tag: ``admin::monitoring`` -> ``admin monitoring``,
    ``#SummerVibes`` -> ``summer vibes``, ``use_case-x`` -> ``use case x``."""
    t = tag.lstrip("#")
    t = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", t)
    t = re.sub(r"[:_\-/]+", " ", t)
    return " ".join(t.split()).lower() or tag


def records_hash(records: list[dict], fields: tuple[str, ...]) -> str:
    """A short content hash of text records (ids and the given fields), for --resume checks."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r["id"], *(r.get(f) for f in fields)], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def load_pairs(spec: str, channels: int | None = None, size: int | None = None) -> tuple[ImageData, list[str]]:
    """Image-text pairs ``{"id", "text", "image"[, "negative"]}`` (JSONL): the decoded images and
    their texts (a ``negative`` is a hard-negative caption of the image, on every record or on
    none). A missing or unreadable image, or a missing or empty text, is refused by file and line."""
    src = read_image_jsonl(spec)
    name = "<stdin>" if spec == "-" else spec
    for r in src.records:
        check_text(r, "text", name)
    given = [r.get("negative") is not None for r in src.records]
    if any(given):
        r = src.records[given.index(False)] if not all(given) else None
        if r is not None:
            raise InputError("missing (give 'negative' on every record or on none)", name, r.get("_line"), "negative")
        for r in src.records:
            check_text(r, "negative", name)
    c0, s0 = probe_image(src)
    channels, size = channels or c0, size or s0
    images = decode(src, channels, size)
    labels = torch.full((len(src),), -1, dtype=torch.long)
    return ImageData(images, src.records, [], labels, src.name), [r["text"] for r in src.records]


def data_hash(data: ImageData) -> str:
    """A short content hash of decoded images (ids and pixels), for --resume checks."""
    h = hashlib.sha256()
    h.update("\n".join(data.ids).encode())
    h.update(data.images.numpy().tobytes())
    return h.hexdigest()[:16]

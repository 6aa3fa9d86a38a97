"""Models to embeddings: ``embed_images`` for decoded images, ``embed_records`` for records in
memory (``cltk match`` queries), ``embed`` for files and data sets (``cltk embed``). Which encoder
embeds which field is decided once, by ``encoder_for``. The embeddings-folder format itself is
``io.vectors``."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import check_text, decode, load_images, load_texts, tag_text
from .encoders import load_encoder
from .io import InputError, RunDir, image_source, write_embeddings

Progress = Callable[[int], None] | None


@torch.no_grad()
def embed_images(encoder: nn.Module, images: torch.Tensor, batch_size: int = 512,
                 normalize: bool = True, device: str | torch.device = "cpu",
                 progress: Progress = None) -> np.ndarray:
    """uint8 [N, C, H, W] -> float32 [N, D] (L2-normalised rows if ``normalize``)."""
    out = []
    was = encoder.training
    encoder.eval()
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).float().div_(255)
        z = encoder(x).float()
        out.append((F.normalize(z, dim=-1) if normalize else z).cpu())
        if progress is not None:
            progress(len(x))
    encoder.train(was)
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), np.float32)


def encoder_for(model: str, field: str | None, device: str | torch.device = "cpu") -> tuple[nn.Module, dict, str]:
    """The encoder that embeds ``field`` (``image``, ``text`` or ``tag``): in a two-tower run the
    tower of that name (``RUN/encoder/FIELD``), else the model's one encoder, which must take that
    modality. Without ``field``, whatever the model takes. Returns (encoder, spec, field)."""
    tower = field if RunDir(model).has_tower(field) else None
    encoder, spec = load_encoder(model, device, tower=tower)
    modality = spec.get("modality", "image")
    want = field or modality
    if (want == "image") != (modality == "image"):
        raise InputError(f"--field {want} needs a {'image' if want == 'image' else 'text'} encoder, but the model "
                         f"embeds {modality}", model)
    return encoder, spec, want


def _encode_texts(encoder, records: list[dict], field: str, batch_size: int, normalize: bool, device,
                  progress: Progress) -> np.ndarray:
    texts = [tag_text(r[field]) if field == "tag" else r[field] for r in records]
    return encoder.encode(texts, batch_size, normalize, device, progress)


def _info(model: str, spec: dict, field: str, emb: np.ndarray, normalize: bool, source: str, t0: float) -> dict:
    return {"model": str(model), "encoder": spec["name"], "field": field, "dim": int(emb.shape[1]),
            "normalized": normalize, "count": len(emb), "source": source, "seconds": round(time.time() - t0, 2),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def embed_records(records: list[dict], name: str, model: str, device: str | torch.device = "cpu",
                  batch_size: int = 256, field: str | None = None, normalize: bool = True,
                  progress: Progress = None) -> tuple[np.ndarray, dict]:
    """Embed JSONL records already read from ``name``: their ``image`` with an image encoder,
    their text field with a text encoder. ``field`` says which when records have both (and picks
    the tower of a two-tower run); by default ``image`` where the first record has one, else
    ``text``. Returns (embeddings, info)."""
    t0 = time.time()
    encoder, spec, want = encoder_for(model, field or ("image" if "image" in records[0] else "text"), device)
    if want == "image":
        inp = spec["input"]
        src = image_source([dict(r) for r in records], name)   # the records keep their paths as given
        images = decode(src, inp["channels"], inp["image_size"])
        emb = embed_images(encoder, images, batch_size, normalize, device, progress)
    else:
        for r in records:
            check_text(r, want, name, hint=" (the record has 'image' but the model embeds text)" if "image" in r
                       else "")
        emb = _encode_texts(encoder, records, want, batch_size, normalize, device, progress)
    return emb, _info(model, spec, want, emb, normalize, name, t0)


def embed(model: str, data: str, out: str | None = None, batch_size: int = 512, normalize: bool = True,
          device: str | torch.device = "cpu", force: bool = False, progress: Progress = None,
          field: str | None = None) -> tuple[np.ndarray, list[dict], dict]:
    """Embed a data set (an image folder, a JSONL file, a built-in data set) with a run dir, an
    encoder folder or (text) a Hugging Face model; write an embeddings folder to ``out`` when
    given. ``field`` as in ``encoder_for``. Returns (embeddings, records, info)."""
    t0 = time.time()
    encoder, spec, want = encoder_for(model, field, device)
    if want == "image":
        inp = spec["input"]
        images = load_images(data, channels=inp["channels"], size=inp["image_size"])
        emb = embed_images(encoder, images.images, batch_size, normalize, device, progress)
        records, source = images.records, images.source
    else:
        records, source = load_texts(data, (want,)), data
        emb = _encode_texts(encoder, records, want, batch_size, normalize, device, progress)
    info = _info(model, spec, want, emb, normalize, source, t0)
    if out is not None:
        write_embeddings(out, emb, records, info, force=force)
    return emb, records, info

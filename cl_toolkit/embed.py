"""Models to embeddings: ``embed_images`` for tensors, ``embed`` for files, and the
embeddings-folder format (``embeddings.npy`` + ``meta.jsonl`` + ``info.json``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import load_images, load_texts, tag_text
from .encoders import load_encoder
from .io import InputError, atomic_dir, public, write_jsonl


@torch.no_grad()
def embed_images(encoder: nn.Module, images: torch.Tensor, batch_size: int = 512,
                 normalize: bool = True, device: str | torch.device = "cpu",
                 progress=None) -> np.ndarray:
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


def embed(model: str, data: str, out: str | None = None, batch_size: int = 512, normalize: bool = True,
          device: str = "cpu", force: bool = False, progress=None,
          field: str | None = None) -> tuple[np.ndarray, list[dict], dict]:
    """Embed a data set with a run dir, an encoder folder or (text) a Hugging Face model; write
    an embeddings folder to ``out`` when given. ``field`` picks what to embed (``image``,
    ``text`` or ``tag``) and, in a two-tower run, the tower (``encoder/<field>``); by default
    whatever the model takes. Returns (embeddings, records, info)."""
    tower = field if field is not None and Path(model, "encoder", field).is_dir() else None
    encoder, spec = load_encoder(model, device, tower=tower)
    modality = spec.get("modality", "image")
    want = field or modality
    if (want == "image") != (modality == "image"):
        raise InputError(f"--field {want} needs a {'image' if want == 'image' else 'text'} encoder, but the model "
                         f"embeds {modality}", model)
    t0 = time.time()
    if modality == "image":
        inp = spec["input"]
        images = load_images(data, channels=inp["channels"], size=inp["image_size"])
        emb = embed_images(encoder, images.images, batch_size, normalize, device, progress)
        records, source = images.records, images.source
    else:
        records = load_texts(data, (want,))
        texts = [tag_text(r[want]) if want == "tag" else r[want] for r in records]
        emb = encoder.encode(texts, min(batch_size, 256), normalize, device, progress)
        source = data
    info = {"model": str(model), "encoder": spec["name"], "field": want, "dim": int(emb.shape[1]),
            "normalized": normalize, "count": len(emb), "source": source, "seconds": round(time.time() - t0, 2),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if out is not None:
        write_embeddings(out, emb, records, info, force=force)
    return emb, records, info


def embedding_records(emb: np.ndarray, records: list[dict]):
    """JSONL lines for ``cltk embed --out -``: each record's fields plus ``embedding``."""
    for r, e in zip(records, emb):
        yield {**_meta(r), "embedding": [round(float(x), 6) for x in e]}


def write_embeddings(out: str | Path, emb: np.ndarray, records: list[dict], info: dict, force: bool = False) -> None:
    with atomic_dir(out, force=force) as tmp:
        np.save(tmp / "embeddings.npy", emb.astype(np.float32))
        with (tmp / "meta.jsonl").open("w", encoding="utf-8") as f:
            write_jsonl(f, (_meta(r) for r in records))
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")


def _meta(rec: dict) -> dict:
    r = public(rec)
    r.pop("index", None)
    return r


def read_embeddings(path: str | Path) -> tuple[np.ndarray, list[dict], dict]:
    """An embeddings folder (or a bare ``.npy``, whose rows get ids "0", "1", ...)."""
    p = Path(path)
    npy = p / "embeddings.npy" if p.is_dir() else p
    if not npy.is_file():
        raise InputError("not an embeddings folder or .npy file", path)
    try:
        emb = np.load(npy, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read embeddings ({e})", npy) from None
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise InputError(f"expected a non-empty 2-D array, got shape {emb.shape}", npy)
    if p.is_dir() and (p / "meta.jsonl").is_file():
        from .io import read_jsonl

        meta = [public(r) for r in read_jsonl(p / "meta.jsonl")]
        if len(meta) != len(emb):
            raise InputError(f"{len(meta)} ids for {len(emb)} vectors", p / "meta.jsonl")
    else:
        meta = [{"id": str(i)} for i in range(len(emb))]
    info = json.loads((p / "info.json").read_text()) if p.is_dir() and (p / "info.json").is_file() else {}
    return emb.astype(np.float32, copy=False), meta, info

"""The ``encoder/`` folder format: export (atomically) and load, for image and text encoders.

Image: ``model.safetensors`` + ``encoder.json`` (registry name, args, input spec, embedding dim).
Text: ``model/`` (a Hugging Face model folder), ``head.safetensors`` and ``encoder.json`` with
``"modality": "text"``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..io import InputError, atomic_dir, resolve_encoder_dir
from ..io.run import CONFIG, ENCODER_SPEC, HEAD, TEXT_MODEL, WEIGHTS
from .image import ImageEncoder, create_encoder
from .registry import ENCODERS, TEXT_ARGS
from .text import TextEncoder, create_text_encoder

ENCODER_FORMAT = 2   # 2: convnet encoders record pool_type (format 1 was average pooling)


def encoder_spec(enc: ImageEncoder, name: str, args: dict) -> dict:
    return {
        "format": ENCODER_FORMAT,
        "modality": "image",
        "name": name,
        "args": args,
        "input": {"channels": enc.in_channels, "image_size": enc.image_size, "range": [0, 1],
                  "mean": enc.mean.flatten().tolist(), "std": enc.std.flatten().tolist()},
        "embedding_dim": enc.out_dim,
        "head_dim": enc.head.out_features if enc.head is not None else None,
        "normalize": True,
    }


def save_encoder(enc: ImageEncoder, name: str, args: dict, folder: Path, extra: dict | None = None) -> None:
    """Write ``folder/model.safetensors`` + ``folder/encoder.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in enc.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    spec = encoder_spec(enc, name, args) | (extra or {})
    (folder / ENCODER_SPEC).write_text(json.dumps(spec, indent=2) + "\n")


def save_text_encoder(enc: TextEncoder, name: str, folder: Path, extra: dict | None = None) -> None:
    """Write ``folder/model/`` (Hugging Face folder), ``head.safetensors``, ``encoder.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    enc.model.save_pretrained(folder / TEXT_MODEL)
    enc.tokenizer.save_pretrained(folder / TEXT_MODEL)
    if enc.head is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in enc.head.state_dict().items()}, str(folder / HEAD))
    spec = {"format": ENCODER_FORMAT, "modality": "text", "name": name, "model": TEXT_MODEL,
            "args": {"max_length": enc.max_length, "head": enc.head is not None}, "pooling": "mean",
            "embedding_dim": enc.out_dim, "normalize": True} | (extra or {})
    (folder / ENCODER_SPEC).write_text(json.dumps(spec, indent=2) + "\n")


def export_encoder(enc: ImageEncoder, name: str, args: dict, out: Path, force: bool = False,
                   extra: dict | None = None) -> None:
    """Atomically export an encoder folder."""
    with atomic_dir(out, force=force) as tmp:
        save_encoder(enc, name, args, tmp, extra)


def export_image_encoder(enc: nn.Module, name: str, args: dict, folder: Path, extra: dict) -> None:
    """Atomically write an image encoder folder (replacing an older one), in float32 and the
    contiguous memory format whatever the training used."""
    export_encoder(enc.to(memory_format=torch.contiguous_format).float().cpu(), name, dict(args), folder,
                   force=True, extra=extra)


def export_text_encoder(enc: TextEncoder, name: str, folder: Path, extra: dict) -> None:
    """Atomically write a text encoder folder (replacing an older one)."""
    with atomic_dir(folder, force=True) as tmp:
        save_text_encoder(enc.float().cpu(), name, tmp, extra)


def _is_hf_model(model: str | Path) -> bool:
    """A Hugging Face model folder (its config.json names a ``model_type``) or a registered
    text encoder name. (A run dir has a config.json too, without ``model_type``.)"""
    p = Path(model)
    if p.exists():
        try:
            return "model_type" in json.loads((p / CONFIG).read_text())
        except (OSError, ValueError):
            return False
    entry = ENCODERS.get(str(model))
    return entry is not None and entry.modality == "text"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or one InputError naming it when it is missing, truncated or not safetensors."""
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError (not an OSError) on a corrupt file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"corrupt or unreadable weights ({first})", path) from None


def load_encoder(model: str | Path, device: str | torch.device = "cpu",
                 tower: str | None = None) -> tuple[nn.Module, dict]:
    """Load an exported encoder (no training code needed), in eval mode, with its spec.
    ``model``: a run dir, an ``encoder/`` folder, a Hugging Face model folder, or a registered
    text encoder name (``minilm-l6``); ``tower`` picks one tower of a two-tower run."""
    if tower is None and _is_hf_model(model):
        enc = create_text_encoder(str(model))
        return enc.to(device).eval(), {"modality": "text", "name": str(model), "args": dict(TEXT_ARGS),
                                       "embedding_dim": enc.out_dim, "normalize": True}
    folder = resolve_encoder_dir(model, tower)
    try:
        spec = json.loads((folder / ENCODER_SPEC).read_text())
        if spec.get("modality") == "text":
            tenc = TextEncoder(str(folder / spec["model"]), **spec["args"])
            if tenc.head is not None:
                tenc.head.load_state_dict(_weights(folder / HEAD))
            return tenc.to(device).eval(), spec
        inp, args = spec["input"], dict(spec.get("args", {}))
        if spec.get("format", 1) < 2 and spec["name"].startswith("convnet"):
            args.setdefault("pool_type", "avg")
        enc = create_encoder(spec["name"], inp["channels"], inp["image_size"], inp["mean"], inp["std"],
                             spec.get("head_dim"), **args)
        enc.load_state_dict(_weights(folder / WEIGHTS))
    except (KeyError, TypeError, json.JSONDecodeError, RuntimeError, OSError) as e:
        raise InputError(f"cannot load encoder ({type(e).__name__}: {e})", folder) from None
    return enc.to(device).eval(), spec

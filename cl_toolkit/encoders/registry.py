"""The one encoder registry: a name users type (``--encoder convnet-small``) to a factory, as timm's
``create_model``. Image factories take ``(in_channels, image_size, **kwargs)``; text entries return
the Hugging Face model folder or hub name to load."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..io import InputError


@dataclass
class EncoderEntry:
    name: str
    factory: Callable[..., Any]
    description: str
    modality: str = "image"


ENCODERS: dict[str, EncoderEntry] = {}


def register_encoder(name: str, description: str, modality: str = "image"):
    """Decorator. Image: ``factory(in_channels, image_size, **kwargs) -> nn.Module`` with
    ``out_dim``. Text: ``factory() -> str``, the model folder or hub name to load."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        ENCODERS[name] = EncoderEntry(name, fn, description, modality)
        return fn

    return deco


def default_encoder(image_size: int) -> str:
    """The CPU-friendly default: a small convnet for small images, ResNet-18 above 64 px."""
    return "convnet-small" if image_size <= 64 else "resnet18"


TEXT_ARGS = {"max_length": 128, "head": False}   # every text encoder setting, with its default
DEFAULT_TEXT_ENCODER = "minilm-l6"


def is_text_encoder(name: str) -> bool:
    """A registered text encoder, or anything that is not a registered image encoder (a
    Hugging Face model folder or hub name)."""
    entry = ENCODERS.get(name)
    return entry.modality == "text" if entry is not None else True


def encoder_args(name: str, args: dict) -> dict:
    """``args`` completed with the factory's defaults, so run configs record every setting."""
    if is_text_encoder(name):
        unknown = set(args) - set(TEXT_ARGS)
        if unknown:
            raise InputError(f"unknown argument(s) {sorted(unknown)} for text encoder {name!r}; "
                             f"known: {sorted(TEXT_ARGS)}")
        return {**TEXT_ARGS, **args}
    if name not in ENCODERS:
        raise InputError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    params = list(inspect.signature(ENCODERS[name].factory).parameters.values())[2:]
    unknown = set(args) - {p.name for p in params}
    if unknown:
        raise InputError(f"unknown argument(s) {sorted(unknown)} for encoder {name!r}; "
                         f"known: {[p.name for p in params]}")
    return {p.name: args.get(p.name, p.default) for p in params}

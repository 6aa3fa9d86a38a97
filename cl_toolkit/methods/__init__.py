"""Method registry. A method = encoder + heads + views + loss + schedule, one file each.

A method class takes ``(encoder, cfg)`` and provides:
- ``forward(views, progress) -> StepOutput``: the loss on one batch of views and the backbone
  embeddings of the first two views (for the collapse monitor);
- ``after_step(progress)``: schedule work after the optimizer step (EMA updates, queues);
- ``encoder``: the backbone that gets exported.
Its ``Config`` dataclass holds the method's own hyper-parameters; ``defaults`` overrides the
trainer's general defaults (lr, optimizer, batch size, augmentation preset) for this method.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..io import InputError


@dataclass
class StepOutput:
    loss: Tensor
    z1: Tensor          # backbone features of view 1 (detached use only)
    z2: Tensor          # backbone features of view 2


@dataclass
class MethodEntry:
    name: str
    cls: type
    config: type         # the method's Config dataclass (defined next to it)
    description: str
    paper: str


METHODS: dict[str, MethodEntry] = {}


def register_method(name: str, description: str, paper: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        import sys

        METHODS[name] = MethodEntry(name, cls, sys.modules[cls.__module__].Config, description, paper)
        return cls

    return deco


def get_method(name: str) -> MethodEntry:
    _load_all()
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def make_config(cls: type, overrides: dict[str, Any], where: str = "method config") -> Any:
    """Build a method's Config dataclass from overrides, refusing unknown keys by name."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(overrides) - set(names)
    if unknown:
        raise InputError(f"unknown {where} key(s) {sorted(unknown)}; known: {sorted(names)}")
    return cls(**overrides)


def _load_all() -> None:
    from . import (  # noqa: F401  (registration)
        barlow,
        byol,
        cdtom,
        clip,
        directpred,
        featmask,
        mocov2,
        mocov3,
        simclr,
        simcse,
        simsiam,
        swav,
        twin,
        twotower,
        vicreg,
    )


# ---------------------------------------------------------------- shared pieces

def momentum_schedule(base: float, progress: float) -> float:
    """BYOL's cosine EMA schedule: tau = 1 - (1 - base) (cos(pi p) + 1) / 2, p in [0, 1]."""
    return 1 - (1 - base) * (math.cos(math.pi * min(progress, 1.0)) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, parameters and float buffers (BN stats)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o, 1 - tau)
    for t, o in zip(target.buffers(), online.buffers()):
        if t.dtype.is_floating_point:
            t.lerp_(o, 1 - tau)
        else:
            t.copy_(o)


def duplicate_mask(ids: Tensor, features: Tensor | None = None, threshold: float = 1.0) -> Tensor:
    """[N, M] True where this rank's sample i and sample j of the global batch (gathered under
    torchrun) are the same item (equal ``ids``) or, given ``features`` (L2-normalised), at least
    ``threshold`` similar: pairs that must not count as negatives."""
    from .. import dist

    mask = ids[:, None] == dist.gather_nograd(ids)[None, :]
    if features is not None:
        mask |= features @ dist.gather_nograd(features).T >= threshold
    return mask


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that receives no gradients (momentum / target networks)."""
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def text_encoder(cfg: Any, head: bool = False) -> Any:
    """The run's text encoder (default ``minilm-l6``); completes ``cfg.encoder`` and
    ``cfg.encoder_args`` (a TrainConfig) so config.json records every setting."""
    from ..encoders import DEFAULT_TEXT_ENCODER, create_text_encoder, encoder_args, is_text_encoder

    cfg.encoder = cfg.encoder or DEFAULT_TEXT_ENCODER
    if not is_text_encoder(cfg.encoder):
        raise InputError(f"method {cfg.method!r} needs a text encoder (minilm-l6, a Hugging Face model folder or "
                         f"name), not the image encoder {cfg.encoder!r}")
    cfg.encoder_args = encoder_args(cfg.encoder, {"head": head, **cfg.encoder_args})
    return create_text_encoder(cfg.encoder, **cfg.encoder_args)


def export_text_encoder(enc: Any, name: str, folder: Any, extra: dict) -> None:
    """Atomically write a text encoder folder (replacing an older one)."""
    from ..encoders import save_text_encoder
    from ..io import atomic_dir

    with atomic_dir(folder, force=True) as tmp:
        save_text_encoder(enc.float().cpu(), name, tmp, extra)


def export_image_encoder(enc: nn.Module, name: str, args: dict, folder: Any, extra: dict) -> None:
    """Atomically write an image encoder folder (replacing an older one), in float32 and the
    contiguous memory format whatever the training used."""
    from ..encoders import save_encoder
    from ..io import atomic_dir

    with atomic_dir(folder, force=True) as tmp:
        save_encoder(enc.to(memory_format=torch.contiguous_format).float().cpu(), name, dict(args), tmp, extra=extra)

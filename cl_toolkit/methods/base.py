"""The method contract: what the one trainer asks of a method, written once with its defaults.

A method is an ``nn.Module`` subclass of ``Method`` in a file of its own, with a ``Config``
dataclass beside it (its hyper-parameters, built once per run). It overrides only what differs:

Class attributes
- ``task``: the ``tasks.Task`` class that reads the data, builds this model and exports it
  (default ``ImageTask``: augmented views of images);
- ``defaults``: trainer settings this method changes (lr, optimizer, batch size, augmentation
  preset, epochs, ...), below a TOML file and the command line;
- ``sync_bn``: batch norm over the global batch under torchrun (default False);
- ``multicrop``: takes extra low-resolution views (``small_crops=N``) after the first two;
- ``find_unused_parameters``: some parameters get no gradient in some steps (DDP must know).

Instance
- ``encoder``: the backbone the collapse/kNN monitors read and the task exports;
- ``forward(batch, progress) -> StepOutput``: the loss on one batch and backbone features of
  two views; ``progress`` in [0, 1] is the fraction of the run done (schedules);
- ``represent`` / ``objective``: methods whose loss couples the samples of a batch (in-batch
  negatives gathered across ranks, gradient caching with ``--chunk-size``) split ``forward``
  into per-sample representations and the loss on all of them; ``forward`` is then inherited;
- ``momentum_pairs()`` and ``momentum(progress)``: the (online, target) module pairs kept in
  step by an exponential moving average, and its rate; the trainer applies the EMA after each
  optimizer step for every such method (``update_momentum``), before ``after_step``;
- ``after_step(progress)``: any other per-step work (queues, statistics).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import dist
from ..tasks.images import ImageTask


@dataclass
class StepOutput:
    loss: Tensor
    z1: Tensor          # backbone features of view 1 (detached use only: the collapse monitor)
    z2: Tensor          # backbone features of view 2


class Method(nn.Module):
    """The base of every method; see the module docstring for the contract."""

    task: ClassVar[type] = ImageTask
    defaults: ClassVar[dict[str, Any]] = {}
    sync_bn: ClassVar[bool] = False
    multicrop: ClassVar[bool] = False
    find_unused_parameters: ClassVar[bool] = False

    encoder: nn.Module

    def forward(self, batch: Any, progress: float) -> StepOutput:
        return self.objective(self.represent(batch, progress), batch, progress)

    def represent(self, batch: Any, progress: float) -> list[Tensor]:
        """Per-sample representations (first dimension = the batch), for methods that split."""
        raise TypeError(f"{type(self).__name__} does not split its loss into represent/objective")

    def objective(self, reps: list[Tensor], batch: Any, progress: float) -> StepOutput:
        """The loss on the representations of the whole batch, for methods that split."""
        raise TypeError(f"{type(self).__name__} does not split its loss into represent/objective")

    @classmethod
    def splits(cls) -> bool:
        """True when the method has ``represent``/``objective`` (gathered negatives, gradient caching)."""
        return cls.represent is not Method.represent

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) modules: target <- tau * target + (1 - tau) * online after each step."""
        return []

    def momentum(self, progress: float) -> float:
        """The EMA rate tau at ``progress`` (for methods with ``momentum_pairs``)."""
        return 1.0

    def after_step(self, progress: float) -> None:
        """Per-step work after the optimizer step and the momentum update (queues, statistics)."""


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


@torch.no_grad()
def update_momentum(method: Method, progress: float) -> None:
    """The one place momentum targets follow their online modules, for every method."""
    pairs = method.momentum_pairs()
    if pairs:
        tau = method.momentum(progress)
        for online, target in pairs:
            ema_update(target, online, tau)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that receives no gradients (momentum / target networks)."""
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def copy_sharing_frozen(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose frozen parameters are ``module``'s own (shared, not copied):
    a second tower over a locked transformer costs the memory of its trainable layers only."""
    return copy.deepcopy(module, memo={id(p): p for p in module.parameters() if not p.requires_grad})


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` that shares its frozen parameters instead of copying them
    (``copy_sharing_frozen``): a momentum text tower over a locked transformer costs the memory
    (and checkpoint space) of its trainable layers only. Pair it with ``trained_pairs`` for the EMA."""
    twin = copy_sharing_frozen(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def trained_pairs(online: nn.Module, target: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """The (online, target) sub-module pairs holding every trainable parameter of ``online``, for
    ``momentum_pairs``: frozen sub-trees are skipped (their EMA changes nothing and costs time)."""
    params = [p.requires_grad for p in online.parameters()]
    if not any(params):
        return []
    if all(params) or any(True for _ in online.parameters(recurse=False)):
        return [(online, target)]
    return [pair for (_, a), (_, b) in zip(online.named_children(), target.named_children())
            for pair in trained_pairs(a, b)]


class KeyQueue(nn.Module):
    """MoCo's queue of keys (a ring buffer: the newest keys overwrite the oldest) with an id per
    key, so that a key of the same item or caption as a query is masked rather than counted as a
    negative, and optional side features (caption features, log priors). Slots not yet filled
    have id -1 (``valid``). Buffers, so a checkpoint holds the queue and ``--resume`` is exact.
    Every rank pushes the same keys (the gathered global batch): the queues stay equal."""

    def __init__(self, size: int, dim: int, features: int = 0):
        super().__init__()
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("features", torch.zeros(size, features))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return len(self.ids)

    @torch.no_grad()
    def push(self, keys: Tensor, ids: Tensor, features: Tensor | None = None) -> None:
        """Enqueue ``keys`` [B, D] (and their ``ids`` [B], ``features`` [B, F]) in order; with more
        keys than slots only the newest ``len(self)`` are kept."""
        size = len(self)
        keys, ids = keys[-size:], ids[-size:]
        idx = (self.ptr + torch.arange(len(keys), device=keys.device)) % size
        self.keys[idx] = keys.to(self.keys.dtype)
        self.ids[idx] = ids.to(self.ids.dtype)
        if features is not None and self.features.shape[1]:
            self.features[idx] = features[-size:].to(self.features.dtype).reshape(len(idx), -1)
        self.ptr.copy_((self.ptr + len(keys)) % size)

    def valid(self) -> Tensor:
        """[K] True for the slots holding a key."""
        return self.ids >= 0

    def newest_first(self) -> Tensor:
        """The slot indices from the most recently pushed key to the oldest."""
        return (self.ptr - 1 - torch.arange(len(self), device=self.ids.device)) % len(self)


def duplicate_mask(ids: Tensor, features: Tensor | None = None, threshold: float = 1.0) -> Tensor:
    """[N, M] True where this rank's sample i and sample j of the global batch (gathered under
    torchrun) are the same item (equal ``ids``) or, given ``features`` (L2-normalised), at least
    ``threshold`` similar: pairs that must not count as negatives."""
    mask = ids[:, None] == dist.gather_nograd(ids)[None, :]
    if features is not None:
        mask |= features @ dist.gather_nograd(features).T >= threshold
    return mask

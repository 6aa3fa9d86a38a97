"""Optimizers and the learning-rate schedule of the trainer: AdamW, SGD, LARS; linear warmup then
cosine decay, driven by the fraction of the run done (steps or minutes)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as used by SimCLR/BYOL: SGD with momentum whose per-layer step
    is scaled by eta * |w| / |g + wd w|; biases and norm parameters (ndim <= 1) are neither
    decayed nor adapted."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.02):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    d = d.add(p, alpha=g["weight_decay"])
                    pn, dn = p.norm(), d.norm()
                    trust = torch.where((pn > 0) & (dn > 0), g["eta"] * pn / dn, torch.ones_like(pn))
                    d = d.mul(trust)
                buf = self.state[p].setdefault("mu", torch.zeros_like(p))
                buf.mul_(g["momentum"]).add_(d)
                p.add_(buf, alpha=-g["lr"])


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights (ndim > 1), none on biases and norm parameters; frozen ones left out."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS: dict[str, Callable[[list[dict], float], torch.optim.Optimizer]] = {
    "adamw": lambda groups, lr: torch.optim.AdamW(groups, lr=lr),
    "lars": lambda groups, lr: LARS(groups, lr=lr),
    "sgd": lambda groups, lr: torch.optim.SGD(groups, lr=lr, momentum=0.9),
}


def make_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return OPTIMIZERS[name](param_groups(model, weight_decay), lr)


def lr_at(cfg: Any, progress: float) -> float:
    """Linear warmup over ``cfg.warmup`` of the run, then cosine to ``cfg.lr * cfg.min_lr_ratio``."""
    if progress < cfg.warmup:
        return cfg.lr * progress / cfg.warmup
    t = (progress - cfg.warmup) / max(1e-8, 1 - cfg.warmup)
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + (cfg.lr - lo) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

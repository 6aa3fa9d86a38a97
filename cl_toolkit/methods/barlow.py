"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar et al. 2021,
arXiv:2103.03230).

One network (encoder -> 3-layer projector) sees both views. The cross-correlation matrix C of
the batch-standardised projections of the two views is pushed to the identity: the diagonal to
1 (invariance), the off-diagonal to 0 (no redundancy between dimensions):

    L = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2,   C = z1n^T z2n / N

Paper: 8192-d projector, lambd = 0.0051, LARS; here a 1024-d projector and AdamW for the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..encoders import mlp
from ..losses import barlow_loss
from . import register_method
from .base import Method, StepOutput


@dataclass
class Config:
    proj_hidden: int = 1024
    proj_dim: int = 1024
    lambd: float = 0.0051         # weight of the off-diagonal (redundancy) term


@register_method("barlow", "cross-correlation of the two views' projections pushed to the identity",
                 "Zbontar et al. 2021, Barlow Twins: Self-Supervised Learning via Redundancy Reduction, "
                 "arXiv:2103.03230")
class BarlowTwins(Method):
    sync_bn = True      # batch norm over the global batch under torchrun (as in the paper)
    defaults = {"augment": "byol", "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4}

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden, cfg.proj_dim, layers=3)

    def forward(self, views: list[Tensor], progress: float) -> StepOutput:
        n = len(views[0])
        h = self.encoder(torch.cat(views))
        z = self.projector(h)
        loss = barlow_loss(z[:n], z[n:], self.cfg.lambd)
        return StepOutput(loss, h[:n], h[n:])

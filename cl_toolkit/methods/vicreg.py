"""VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce & LeCun 2022,
arXiv:2105.04906).

One network (encoder -> 3-layer expander) sees both views. Three terms on the expander outputs
z1, z2 [N, D]: invariance (the views agree), variance (every dimension keeps a std of at least
gamma over the batch, which prevents collapse) and covariance (dimensions decorrelate):

    L = 25 * mean (z1 - z2)^2 + 25 * [v(z1) + v(z2)] / 2 + 1 * [c(z1) + c(z2)]
    v(z) = mean_d relu(1 - sqrt(Var_d(z) + 1e-4)),  c(z) = sum_{d != e} Cov(z)_de^2 / D

Paper: 8192-d expander, LARS; here a 1024-d expander and AdamW for the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..encoders import mlp
from ..losses import vicreg_loss
from . import register_method
from .base import Method, StepOutput


@dataclass
class Config:
    proj_hidden: int = 1024
    proj_dim: int = 1024
    sim_weight: float = 25.0      # lambda: invariance
    var_weight: float = 25.0      # mu: variance
    cov_weight: float = 1.0       # nu: covariance


@register_method("vicreg", "invariance + per-dimension variance + covariance terms, no negatives or EMA",
                 "Bardes, Ponce & LeCun 2022, VICReg: Variance-Invariance-Covariance Regularization, "
                 "arXiv:2105.04906")
class VICReg(Method):
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
        c = self.cfg
        loss = vicreg_loss(z[:n], z[n:], c.sim_weight, c.var_weight, c.cov_weight)
        return StepOutput(loss, h[:n], h[n:])

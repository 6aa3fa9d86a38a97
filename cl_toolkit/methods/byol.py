"""BYOL: Bootstrap Your Own Latent (Grill et al. 2020, arXiv:2006.07733).

Online network = encoder -> projector -> predictor; target network = EMA copy of encoder ->
projector, updated with a cosine momentum schedule from ``momentum`` to 1. Loss: normalised
MSE between the online prediction of one view and the target projection of the other,
symmetrised. Asymmetric views (blur 1.0/0.1, solarize 0.0/0.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..encoders import mlp
from ..losses import byol_loss
from . import register_method
from .base import Method, StepOutput, frozen_copy, momentum_schedule


@dataclass
class Config:
    proj_hidden: int = 1024
    proj_dim: int = 256
    pred_hidden: int = 1024
    momentum: float = 0.99        # base EMA rate, annealed to 1 over the run


@register_method("byol", "EMA target network + predictor, normalised-MSE loss, no negatives",
                 "Grill et al. 2020, Bootstrap Your Own Latent, arXiv:2006.07733")
class BYOL(Method):
    sync_bn = True      # batch norm over the global batch under torchrun (as in the paper)
    multicrop = True    # small crops (small_crops=N) are extra online views predicting both targets
    defaults = {"augment": "byol", "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4}

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden, cfg.proj_dim)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim)
        self.target_encoder = frozen_copy(encoder)
        self.target_projector = frozen_copy(self.projector)

    def forward(self, views: list[Tensor], progress: float) -> StepOutput:
        n = len(views[0])
        x = torch.cat(views[:2])
        h = self.encoder(x)
        p = self.predictor(self.projector(h))
        with torch.no_grad():
            z = self.target_projector(self.target_encoder(x))
        p1, p2 = p[:n], p[n:]
        z1, z2 = z[:n], z[n:]
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        if len(views) > 2:   # multi-crop: every small crop predicts the targets of both global views
            small = self.predictor(self.projector(self.encoder(torch.cat(views[2:])))).split(n)
            loss = (loss + sum(byol_loss(q, z1) + byol_loss(q, z2) for q in small)) / (1 + len(small))
        return StepOutput(loss, h[:n], h[n:])

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.target_encoder), (self.projector, self.target_projector)]

    def momentum(self, progress: float) -> float:
        return momentum_schedule(self.cfg.momentum, progress)

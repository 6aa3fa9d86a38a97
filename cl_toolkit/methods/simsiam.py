"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He 2021, arXiv:2011.10566).

One network (encoder -> 3-layer projector with BN on its output) sees both views; a 2-layer
bottleneck predictor maps one view's projection to the other's. No negatives, no momentum
encoder: the stop-gradient on the target projection is what prevents collapse. With
D(p, z) = - cos(p, stopgrad(z)):

    L = D(p1, z2) / 2 + D(p2, z1) / 2,   z = projector(encoder(x)),  p = predictor(z)

Paper: 2048-d projection, 512-d predictor bottleneck, SGD lr 0.05 * B / 256; here the widths
are scaled down for the CPU presets and AdamW is used as for the other methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..encoders import mlp
from ..losses import symmetric_negative_cosine
from . import register_method
from .base import Method, StepOutput


@dataclass
class Config:
    proj_hidden: int = 1024
    proj_dim: int = 1024
    pred_hidden: int = 256        # the bottleneck: proj_dim / 4 as in the paper


@register_method("simsiam", "one network, predictor + stop-gradient, negative cosine, no negatives or EMA",
                 "Chen & He 2021, Exploring Simple Siamese Representation Learning, arXiv:2011.10566")
class SimSiam(Method):
    sync_bn = True      # batch norm over the global batch under torchrun (as in the paper)
    defaults = {"augment": "simclr", "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4}

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden, cfg.proj_dim, layers=3, last_bn=True)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim)

    def forward(self, views: list[Tensor], progress: float) -> StepOutput:
        n = len(views[0])
        h = self.encoder(torch.cat(views))
        z = self.projector(h)
        p = self.predictor(z)
        loss = symmetric_negative_cosine(p[:n], z[:n], p[n:], z[n:])
        return StepOutput(loss, h[:n], h[n:])

"""SimCLR: A Simple Framework for Contrastive Learning (Chen et al. 2020, arXiv:2002.05709).

Encoder -> MLP projector; NT-Xent over the 2N views of a batch: each view's positive is the
other view of its image, the other 2N-2 views are negatives. Two identically distributed views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoders import mlp
from ..losses import nt_xent
from . import StepOutput, register_method


@dataclass
class Config:
    proj_hidden: int = 1024
    proj_dim: int = 128
    temperature: float = 0.2


@register_method("simclr", "two views, MLP projector, NT-Xent with in-batch negatives",
                 "Chen et al. 2020, A Simple Framework for Contrastive Learning, arXiv:2002.05709")
class SimCLR(nn.Module):
    defaults = {"augment": "simclr", "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4}

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden, cfg.proj_dim)

    def forward(self, views: list[Tensor], progress: float) -> StepOutput:
        n = len(views[0])
        h = self.encoder(torch.cat(views))
        z = F.normalize(self.projector(h).float(), dim=-1)
        loss = nt_xent(z[:n], z[n:], self.cfg.temperature)
        return StepOutput(loss, h[:n], h[n:])

    def after_step(self, progress: float) -> None:
        pass

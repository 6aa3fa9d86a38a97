"""SimCLR: A Simple Framework for Contrastive Learning (Chen et al. 2020, arXiv:2002.05709).

Encoder -> MLP projector; NT-Xent over the 2N views of a batch: each view's positive is the
other view of its image, the other 2N-2 views are negatives. Two identically distributed views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..encoders import mlp
from ..losses import info_nce, nt_xent
from . import register_method
from .base import Method, StepOutput


@dataclass
class Config:
    proj_hidden: int = 1024
    proj_dim: int = 128
    temperature: float = 0.2
    tau_plus: float = 0.0         # DCL: prior share of false negatives (Chuang et al. 2020); 0 = InfoNCE
    beta: float = 0.0             # HCL: weight negatives by exp(beta * s / t) (Robinson et al. 2021); 0 = uniform


@register_method("simclr", "two views, MLP projector, NT-Xent with in-batch negatives",
                 "Chen et al. 2020, A Simple Framework for Contrastive Learning, arXiv:2002.05709")
class SimCLR(Method):
    multicrop = True    # small crops (small_crops=N): extra queries whose positives are both global views
    # colour jitter 2.5x the presets' base (brightness and contrast 1.0, saturation 0.5, hue 0.25;
    # the base is BYOL's jitter, = the SimCLR paper's CIFAR strength s=0.5, so 2.5x is s=1.25 for
    # brightness and contrast): contrastive learning gains from strong colour distortion (paper,
    # sec. 3 and table 1), and on grayscale images brightness/contrast is all there is (+0.025 kNN
    # on Fashion-MNIST validation at 25 epochs; 3x is 0.003 above there and 0.003 below at the
    # 10-minute budget, a tie; docs/benchmarks.md)
    defaults = {"augment": "simclr", "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "aug_strength": 2.5}

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden, cfg.proj_dim)

    def represent(self, views: list[Tensor], progress: float) -> list[Tensor]:
        """Per-sample representations: projections z1, z2, backbone features h1, h2, then the
        projections of any small crops."""
        n = len(views[0])
        h = self.encoder(torch.cat(views[:2]))
        z = F.normalize(self.projector(h).float(), dim=-1)
        small = []
        if len(views) > 2:
            small = F.normalize(self.projector(self.encoder(torch.cat(views[2:]))).float(), dim=-1).split(n)
        return [z[:n], z[n:], h[:n].detach(), h[n:].detach(), *small]

    def objective(self, reps: list[Tensor], views: list[Tensor], progress: float) -> StepOutput:
        """NT-Xent of this rank's views against the global batch (gathered under torchrun)."""
        z1, z2, h1, h2, *small = reps
        (k1, offset), (k2, _) = dist.gather(z1), dist.gather(z2)
        t = self.cfg.temperature
        tp, b = self.cfg.tau_plus, self.cfg.beta
        loss = nt_xent(z1, z2, t, keys=(k1, k2), offset=offset, tau_plus=tp, beta=b)   # one process: keys = z1, z2
        if small:   # multi-crop: each small crop against the global views, positive = its own image's
            crops = sum(info_nce(q, k1, t, offset=offset, tau_plus=tp, beta=b)
                        + info_nce(q, k2, t, offset=offset, tau_plus=tp, beta=b) for q in small) / 2
            loss = (loss + crops) / (1 + len(small))
        return StepOutput(loss, h1, h2)

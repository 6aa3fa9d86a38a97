"""MoCo v3: An Empirical Study of Training Self-Supervised Vision Transformers (Chen, Xie & He
2021, arXiv:2104.02057).

Query network = encoder -> 3-layer projector -> 2-layer predictor (BN on both outputs); key
network = EMA copy of encoder -> projector, momentum annealed from ``momentum`` to 1 (cosine).
No queue: the negatives are the other keys of the batch. With ctr(q, k) = 2t * InfoNCE(q, k)
over normalised vectors (the 2t factor as in the official code):

    L = ctr(q1, k2) + ctr(q2, k1)

Paper (ResNet-50): 4096-d hidden, 256-d output, t = 1.0 (0.2 for ViT), LARS; here t = 0.2,
1024-d hidden layers and AdamW for the CPU presets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..encoders import mlp
from ..losses import info_nce
from . import register_method
from .base import Method, StepOutput, frozen_copy, momentum_schedule


@dataclass
class Config:
    proj_hidden: int = 1024
    proj_dim: int = 256
    pred_hidden: int = 1024
    temperature: float = 0.2
    momentum: float = 0.99        # base EMA rate, annealed to 1 over the run
    tau_plus: float = 0.0         # DCL: prior share of false negatives (Chuang et al. 2020); 0 = InfoNCE
    beta: float = 0.0             # HCL: weight negatives by exp(beta * s / t) (Robinson et al. 2021); 0 = uniform


@register_method("mocov3", "momentum encoder + predictor, symmetric InfoNCE over in-batch keys, no queue",
                 "Chen, Xie & He 2021, An Empirical Study of Training Self-Supervised Vision Transformers, "
                 "arXiv:2104.02057")
class MoCoV3(Method):
    sync_bn = True      # the paper's setting: batch norm over the global batch under torchrun
    defaults = {"augment": "byol", "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4}

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden, cfg.proj_dim, layers=3, last_bn=True)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim, layers=2, last_bn=True)
        self.momentum_encoder = frozen_copy(encoder)
        self.momentum_projector = frozen_copy(self.projector)

    def represent(self, views: list[Tensor], progress: float) -> list[Tensor]:
        """Per-sample: queries q1, q2 (with gradient), momentum keys k1, k2, backbone h1, h2."""
        n = len(views[0])
        x = torch.cat(views[:2])
        h = self.encoder(x)
        q = F.normalize(self.predictor(self.projector(h)).float(), dim=-1)
        with torch.no_grad():
            k = F.normalize(self.momentum_projector(self.momentum_encoder(x)).float(), dim=-1)
        return [q[:n], q[n:], k[:n], k[n:], h[:n].detach(), h[n:].detach()]

    def objective(self, reps: list[Tensor], views: list[Tensor], progress: float) -> StepOutput:
        """Symmetric InfoNCE of this rank's queries against the keys of the global batch."""
        q1, q2, k1, k2, h1, h2 = reps
        (k1, offset), (k2, _) = dist.gather(k1), dist.gather(k2)
        t = self.cfg.temperature
        tp, b = self.cfg.tau_plus, self.cfg.beta
        loss = 2 * t * (info_nce(q1, k2, t, offset=offset, tau_plus=tp, beta=b)
                        + info_nce(q2, k1, t, offset=offset, tau_plus=tp, beta=b))
        return StepOutput(loss, h1, h2)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.momentum_encoder), (self.projector, self.momentum_projector)]

    def momentum(self, progress: float) -> float:
        return momentum_schedule(self.cfg.momentum, progress)

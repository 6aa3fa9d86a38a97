"""SwAV: Swapping Assignments between Views (Caron et al. 2020, arXiv:2006.09882).

Encoder -> MLP projector -> L2-normalised z; K trainable prototypes C (unit rows, renormalised
every step) score each view: s = z C^T. The codes of the two global views are computed online
with Sinkhorn-Knopp (equal use of the prototypes within the batch; no gradient), and every
other view, including the ``small_crops`` low-resolution multi-crop views, predicts them:

    q_i = sinkhorn(s_i, eps=0.05, 3 iterations)                 for the global views i = 1, 2
    L = mean_i mean_{v != i} [ - sum_k q_ik log softmax(s_v / t)_k ],  t = 0.1

The prototypes stay frozen for the first ``freeze_prototypes`` of the run (paper: one epoch).
Paper: 3000 prototypes, 128-d, 2 x 224 + 6 x 96 px crops, a feature queue for small batches;
here 300 prototypes (10-class data on a CPU), 2 global + 4 half-resolution crops, no queue.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoders import mlp
from ..losses import sinkhorn, swav_loss
from . import register_method
from .base import Method, StepOutput


@dataclass
class Config:
    proj_hidden: int = 1024
    proj_dim: int = 128
    prototypes: int = 300
    temperature: float = 0.1
    sinkhorn_eps: float = 0.05
    sinkhorn_iters: int = 3
    freeze_prototypes: float = 0.01   # fraction of the run with frozen prototypes


@register_method("swav", "online clustering: prototypes, Sinkhorn-Knopp codes, swapped prediction, multi-crop",
                 "Caron et al. 2020, Unsupervised Learning of Visual Features by Contrasting Cluster "
                 "Assignments, arXiv:2006.09882")
class SwAV(Method):
    sync_bn = True      # batch norm over the global batch under torchrun (as in the paper)
    find_unused_parameters = True   # the frozen prototypes sit out the first steps
    defaults = {"augment": "simclr", "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "small_crops": 4}
    multicrop = True              # takes views beyond the first two (small crops)

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden, cfg.proj_dim)
        self.prototypes = nn.Linear(cfg.proj_dim, cfg.prototypes, bias=False)

    def forward(self, views: list[Tensor], progress: float) -> StepOutput:
        c = self.cfg
        n = len(views[0])
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        weight = self.prototypes.weight
        if progress < c.freeze_prototypes:
            weight = weight.detach()
        groups = [torch.cat(views[:2])] + ([torch.cat(views[2:])] if len(views) > 2 else [])
        hs = [self.encoder(x) for x in groups]  # one pass per resolution
        scores = []
        for h in hs:
            z = F.normalize(self.projector(h).float(), dim=-1)
            with torch.autocast(z.device.type, enabled=False):  # scores / 0.05 in Sinkhorn need fp32
                scores += list((z @ weight.float().T).split(n))
        codes = [sinkhorn(s.detach(), c.sinkhorn_eps, c.sinkhorn_iters) for s in scores[:2]]
        loss = swav_loss(scores, codes, c.temperature)
        return StepOutput(loss, hs[0][:n], hs[0][n:])

"""MoCo v2: Momentum Contrast with an MLP head and stronger views (He et al. 2020,
arXiv:1911.05722; Chen et al. 2020, arXiv:2003.04297).

Query network = encoder -> MLP projector; key network = its EMA copy (constant ``momentum``).
Negatives come from a queue of the keys of recent batches, so their number does not depend on
the batch size. With q the normalised query of one view, k+ the key of the other view and
Q the queue [K, D], InfoNCE over [the batch's keys; queue]:

    L = - log exp(q . k+ / t) / (sum_{k in keys} exp(q . k / t) + sum_{n in Q} exp(q . n / t))

symmetrised over the two views (as solo-learn's MoCo v2+). The batch's other keys also act as
negatives (they are enqueued next step anyway); unlike a queue-only loss, this also stops the
encoder from recognising the positive by the batch-norm statistics it shares with the query
(the leak MoCo's shuffle-BN prevents). After each step both views' keys are enqueued.

Paper: queue 65536, t = 0.2, momentum 0.999, SGD; here a 4096 queue and momentum 0.99 for the
CPU's short runs, AdamW.
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
from .base import Method, StepOutput, frozen_copy


@dataclass
class Config:
    proj_hidden: int = 1024
    proj_dim: int = 128
    temperature: float = 0.2
    queue_size: int = 4096
    momentum: float = 0.99        # constant EMA rate of the key network
    tau_plus: float = 0.0         # DCL: prior share of false negatives (Chuang et al. 2020); 0 = InfoNCE
    beta: float = 0.0             # HCL: weight negatives by exp(beta * s / t) (Robinson et al. 2021); 0 = uniform


@register_method("mocov2", "momentum key encoder + queue of negatives, InfoNCE",
                 "Chen et al. 2020, Improved Baselines with Momentum Contrastive Learning, arXiv:2003.04297")
class MoCoV2(Method):
    defaults = {"augment": "simclr", "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4}

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden, cfg.proj_dim)
        self.key_encoder = frozen_copy(encoder)
        self.key_projector = frozen_copy(self.projector)
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_size, cfg.proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._keys: Tensor | None = None

    def forward(self, views: list[Tensor], progress: float) -> StepOutput:
        n = len(views[0])
        x = torch.cat(views[:2])
        h = self.encoder(x)
        q = F.normalize(self.projector(h).float(), dim=-1)
        with torch.no_grad():
            k = F.normalize(self.key_projector(self.key_encoder(x)).float(), dim=-1)
        queue = self.queue
        t = self.cfg.temperature
        tp, b = self.cfg.tau_plus, self.cfg.beta
        loss = (info_nce(q[:n], torch.cat([k[n:], queue]), t, tau_plus=tp, beta=b)
                + info_nce(q[n:], torch.cat([k[:n], queue]), t, tau_plus=tp, beta=b)) / 2
        self._keys = dist.gather_nograd(k)   # every rank enqueues the same global keys
        return StepOutput(loss, h[:n], h[n:])

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.key_encoder), (self.projector, self.key_projector)]

    def momentum(self, progress: float) -> float:
        return self.cfg.momentum       # constant, as in the paper

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        if self._keys is not None:  # enqueue the newest keys, overwriting the oldest (a ring buffer)
            k = self._keys[: len(self.queue)]
            idx = (self.queue_ptr + torch.arange(len(k), device=k.device)) % len(self.queue)
            self.queue[idx] = k.to(self.queue.dtype)
            self.queue_ptr.copy_((self.queue_ptr + len(k)) % len(self.queue))
            self._keys = None

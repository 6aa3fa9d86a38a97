"""DirectPred: Understanding Self-supervised Learning Dynamics without Contrastive Pairs
(Tian, Chen & Ganguli 2021, arXiv:2102.06810).

BYOL with a linear predictor that is not trained: it is set directly from the eigen-
decomposition of the running correlation matrix of the online projections z [N, D]:

    F <- rho * F + (1 - rho) * z^T z / N                        (Eqn. 19, every step)
    F = U diag(s) U^T,   s_j <- max(s_j, 0) / max_j s_j
    p_j = s_j ** eig_power + eps,  W_p = U diag(p) U^T           (Eqn. 18, every ``freq`` steps)

Loss, views and target network as BYOL (EMA of encoder -> projector, normalised MSE,
symmetrised). Defaults from the authors' command (facebookresearch/luckmatters, ssl/real-dataset):
rho = 0.3, eps = 0.01, freq = 1, eig_power = 1/2 (the square root, which boosts weak directions).
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
    momentum: float = 0.99        # base EMA rate of the target, annealed to 1 over the run
    rho: float = 0.3              # EMA rate of the correlation matrix F
    eps: float = 0.01             # added to the normalised, powered eigenvalues (may be negative)
    freq: int = 1                 # set the predictor every `freq` steps
    eig_power: float = 0.5        # p_j = s_j ** eig_power + eps


@torch.no_grad()
def predictor_from_correlation(corr: Tensor, eps: float, power: float = 0.5) -> Tensor:
    """W_p = U diag(p) U^T with p_j = (max(s_j, 0) / max(s)) ** power + eps, clamped to >= 1e-4."""
    s, u = torch.linalg.eigh(corr.double())
    s = s.clamp_min(0) / s.max().clamp_min(1e-12)
    p = (s.pow(power) + eps).clamp_min(1e-4)
    return (u @ torch.diag(p) @ u.T).to(corr.dtype)


@register_method("directpred", "BYOL whose linear predictor is set from the eigenvectors of the projections' "
                 "correlation matrix", "Tian, Chen & Ganguli 2021, Understanding Self-supervised Learning "
                 "Dynamics without Contrastive Pairs, arXiv:2102.06810")
class DirectPred(Method):
    sync_bn = True      # batch norm over the global batch under torchrun (as in the paper)
    defaults = {"augment": "byol", "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4}

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.projector = mlp(encoder.out_dim, cfg.proj_hidden, cfg.proj_dim)
        self.target_encoder = frozen_copy(encoder)
        self.target_projector = frozen_copy(self.projector)
        self.register_buffer("predictor", torch.eye(cfg.proj_dim))   # W_p, not trained
        self.register_buffer("corr", torch.zeros(cfg.proj_dim, cfg.proj_dim))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._z: Tensor | None = None

    def forward(self, views: list[Tensor], progress: float) -> StepOutput:
        n = len(views[0])
        x = torch.cat(views[:2])
        h = self.encoder(x)
        z = self.projector(h).float()
        p = z @ self.predictor.T
        with torch.no_grad():
            zt = self.target_projector(self.target_encoder(x))
        loss = byol_loss(p[:n], zt[n:]) + byol_loss(p[n:], zt[:n])
        self._z = z.detach()
        return StepOutput(loss, h[:n], h[n:])

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.target_encoder), (self.projector, self.target_projector)]

    def momentum(self, progress: float) -> float:
        return momentum_schedule(self.cfg.momentum, progress)

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        c = self.cfg
        if self._z is None:
            return
        z, self._z = self._z, None
        self.corr.mul_(c.rho).add_(z.T @ z / len(z), alpha=1 - c.rho)
        self.steps += 1
        if int(self.steps) % c.freq == 0:
            self.predictor.copy_(predictor_from_correlation(self.corr, c.eps, c.eig_power))

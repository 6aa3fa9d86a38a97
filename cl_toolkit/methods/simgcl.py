"""SimGCL (Yu et al. 2022, "Are Graph Augmentations Necessary? Simple Graph Contrastive Learning
for Recommendation", SIGIR, arXiv:2112.08679): LightGCN's contrastive views without touching the
graph, by uniform noise on the embeddings.

Each view propagates the ego embeddings over the unchanged graph and, after every layer, adds a
random vector of length ``noise`` (eps) in the orthant of the embedding: E_k += sign(E_k) * eps *
d / |d|, d ~ U(0, 1)^D (``encoders.graph.propagate``). The rotation stays small, so the two views
of a node remain close while the noise spreads the embeddings out (the paper's point: the
uniformity the contrastive loss brings, not the graph perturbation, is what helps). As in the
paper, a node's embedding is the mean of layers 1..K (not the ego layer), for the views and for
recommendation alike:

    L = L_LightGCN + ssl_weight * (InfoNCE_users + InfoNCE_items)   (losses.node_info_nce, cosine / t)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..losses import node_info_nce
from ..tasks.graph import GraphTask
from . import register_method
from .base import StepOutput
from .lightgcn import Config as LightGCNConfig
from .lightgcn import LightGCN, bpr_objective


@dataclass
class Config(LightGCNConfig):
    noise: float = 0.1              # eps: length of the noise added after each layer
    ssl_weight: float = 0.001       # lambda (the paper: 0.5); chosen on ml-100k's validation split
    ssl_temperature: float = 0.2    # tau


@register_method("simgcl", "recommendation on the user-item graph: LightGCN + InfoNCE between two views made by "
                 "uniform noise added to every layer's embeddings (no graph augmentation)",
                 "Yu et al. 2022, Are Graph Augmentations Necessary? Simple Graph Contrastive Learning for "
                 "Recommendation, arXiv:2112.08679")
class SimGCL(LightGCN):
    task = GraphTask

    def final(self) -> tuple[Tensor, Tensor]:
        return self.encoder(self.adj, with_ego=False)

    def forward(self, batch: dict, progress: float) -> StepOutput:
        users, items = self.encoder(self.adj, with_ego=False)
        loss, _, _ = bpr_objective(self.encoder, users, items, batch, self.cfg.reg_weight)
        u1, i1 = self.encoder(self.adj, noise=self.cfg.noise, with_ego=False)
        u2, i2 = self.encoder(self.adj, noise=self.cfg.noise, with_ego=False)
        t = self.cfg.ssl_temperature
        ssl = node_info_nce(u1, u2, batch["user"], t) + node_info_nce(i1, i2, batch["pos"], t)
        return StepOutput(loss + self.cfg.ssl_weight * ssl, u1[batch["user"]].detach(), u2[batch["user"]].detach())

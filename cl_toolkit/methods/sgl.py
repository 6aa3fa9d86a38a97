"""SGL (Wu et al. 2021, "Self-supervised Graph Learning for Recommendation", SIGIR,
arXiv:2010.10783): LightGCN plus a contrastive task between two structurally perturbed views of
the graph.

Every step draws two views of the interaction graph (``encoders.graph``), one of:
- ``edge`` (SGL-ED, the default): each edge kept with probability 1 - ``drop_ratio``;
- ``node`` (SGL-ND): each user and item dropped, with its edges, with probability ``drop_ratio``;
- ``walk`` (SGL-RW): edge dropout drawn anew for every layer;
each renormalised, and propagates the same ego embeddings over both. A node's two view
embeddings are a positive pair, the batch's other nodes of its type the negatives
(``losses.node_info_nce``, cosine / t, for the batch's distinct users and its distinct observed
items; the official PyTorch code's in-batch form; RecBole uses every user and item instead):

    L = L_LightGCN + ssl_weight * (InfoNCE_users + InfoNCE_items)

Recommendations use the unperturbed graph, as LightGCN's.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..encoders.graph import edge_dropout, node_dropout, normalized_adjacency
from ..io import InputError
from ..losses import node_info_nce
from ..tasks.graph import GraphTask
from . import register_method
from .base import StepOutput
from .lightgcn import Config as LightGCNConfig
from .lightgcn import LightGCN, bpr_objective

VIEWS = ("edge", "node", "walk")


@dataclass
class Config(LightGCNConfig):
    view: str = "edge"              # edge | node | walk
    drop_ratio: float = 0.1         # rho
    ssl_weight: float = 0.1         # lambda_1
    ssl_temperature: float = 0.2    # tau


@register_method("sgl", "recommendation on the user-item graph: LightGCN + InfoNCE between two edge-dropout "
                 "(or node-dropout, random-walk) views of each node",
                 "Wu et al. 2021, Self-supervised Graph Learning for Recommendation, arXiv:2010.10783")
class SGL(LightGCN):
    task = GraphTask

    def __init__(self, n_users: int, n_items: int, adj: Tensor, edges: tuple[Tensor, Tensor], cfg: Config):
        if cfg.view not in VIEWS:
            raise InputError(f"view must be one of {', '.join(VIEWS)}, got {cfg.view!r}")
        super().__init__(n_users, n_items, adj, edges, cfg)

    def view(self) -> Tensor | list[Tensor]:
        """One perturbed, renormalised adjacency (a list of one per layer for random walks)."""
        enc, (users, items), p = self.encoder, self.edges, self.cfg.drop_ratio
        if self.cfg.view == "walk":
            return [normalized_adjacency(*edge_dropout(users, items, p), enc.n_users, enc.n_items)
                    for _ in range(enc.layers)]
        kept = (edge_dropout(users, items, p) if self.cfg.view == "edge"
                else node_dropout(users, items, enc.n_users, enc.n_items, p))
        return normalized_adjacency(*kept, enc.n_users, enc.n_items)

    def forward(self, batch: dict, progress: float) -> StepOutput:
        users, items = self.encoder(self.adj)
        loss, _, _ = bpr_objective(self.encoder, users, items, batch, self.cfg.reg_weight)
        u1, i1 = self.encoder(self.view())
        u2, i2 = self.encoder(self.view())
        t = self.cfg.ssl_temperature
        ssl = node_info_nce(u1, u2, batch["user"], t) + node_info_nce(i1, i2, batch["pos"], t)
        return StepOutput(loss + self.cfg.ssl_weight * ssl, u1[batch["user"]].detach(), u2[batch["user"]].detach())

"""LightGCN (He et al. 2020, "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR): the base of the graph methods.

Users and items are nodes of the interaction graph; their layer-0 (ego) embeddings are
propagated ``layers`` times over the symmetrically normalised adjacency, with no weights and no
non-linearity, and a node's final embedding is the mean of its layers
(``encoders.graph.propagate``). The score of (u, i) is e_u . e_i. Training is BPR on (user,
observed item, unobserved item) triples (``tasks.graph.GraphTask`` draws the unobserved item
uniformly), with the official code's L2 penalty on the triple's ego embeddings:

    L = mean -log sigmoid(e_u . e_i - e_u . e_j) + reg_weight * (|e0_u|^2 + |e0_i|^2 + |e0_j|^2) / 2

The whole graph is propagated at every step (on MovieLens-100k, 2,625 nodes and 198,000
directed edges: a few milliseconds per layer on one core). Exports the final embeddings
(``encoder/graph``) and ``rec.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..encoders.graph import LightGCN as LightGCNEncoder
from ..losses import bpr_loss, l2_reg
from ..tasks.graph import GraphTask
from . import register_method
from .base import Method, StepOutput


@dataclass
class Config:
    # RecBole-GNN's best LightGCN setting on ml-1m (3 layers, reg 1e-4, lr 2e-3); not tuned here
    dim: int = 64
    layers: int = 3
    reg_weight: float = 1e-4        # L2 on the batch's ego embeddings


def bpr_objective(encoder: LightGCNEncoder, users: Tensor, items: Tensor, batch: dict,
                  reg_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """(BPR + L2 loss, the batch's user embeddings, its observed items' embeddings) from the final
    embeddings ``users`` [U, D], ``items`` [I, D]."""
    u, i, j = users[batch["user"]], items[batch["pos"]], items[batch["neg"]]
    loss = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
    reg = l2_reg(encoder.users(batch["user"]), encoder.items(batch["pos"]), encoder.items(batch["neg"]))
    return loss + reg_weight * reg, u, i


@register_method("lightgcn", "recommendation on the user-item graph: light graph convolution (normalised "
                 "propagation, mean of layers), BPR loss",
                 "He et al. 2020, LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation, "
                 "SIGIR")
class LightGCN(Method):
    defaults = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.0, "batch_size": 2048, "warmup": 0.0,
                "epochs": 200, "augment": "none"}
    task = GraphTask

    def __init__(self, n_users: int, n_items: int, adj: Tensor, edges: tuple[Tensor, Tensor], cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = LightGCNEncoder(n_users, n_items, cfg.dim, cfg.layers)
        self.adj, self.edges = adj, edges     # not state: rebuilt from the data (whose hash --resume checks)

    def final(self) -> tuple[Tensor, Tensor]:
        """The users' and items' final embeddings on the whole graph (what is exported)."""
        return self.encoder(self.adj)

    def forward(self, batch: dict, progress: float) -> StepOutput:
        users, items = self.encoder(self.adj)
        loss, u, i = bpr_objective(self.encoder, users, items, batch, self.cfg.reg_weight)
        return StepOutput(loss, u.detach(), i.detach())

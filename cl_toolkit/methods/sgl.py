"""SGL (Wu et al. 2021, "Self-supervised Graph Learning for Recommendation", SIGIR,
arXiv:2010.10783): LightGCN plus a contrastive task between two structurally perturbed views of
the graph.

Two views of the interaction graph (``encoders.graph``) are drawn once per epoch, as in the
paper's code and RecBole-GNN (``view_refresh=step``: every step), one of:
- ``edge`` (SGL-ED, the default): each edge kept with probability 1 - ``drop_ratio``;
- ``node`` (SGL-ND): each user and item dropped, with its edges, with probability ``drop_ratio``;
- ``walk`` (SGL-RW): edge dropout drawn anew for every layer;
each renormalised, and every step propagates the same ego embeddings over both. The views'
kept edges are part of the model's state, so ``--resume`` continues with the same views. A node's two view
embeddings are a positive pair, the batch's other nodes of its type the negatives
(``losses.node_info_nce``, cosine / t, for the batch's distinct users and its distinct observed
items; the official PyTorch code's in-batch form; RecBole uses every user and item instead):

    L = L_LightGCN + ssl_weight * (InfoNCE_users + InfoNCE_items)

Recommendations use the unperturbed graph, as LightGCN's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .. import dist
from ..encoders.graph import edge_keep, node_keep, normalized_adjacency
from ..io import InputError
from ..losses import node_info_nce
from ..tasks.graph import GraphTask
from . import register_method
from .base import StepOutput
from .lightgcn import Config as LightGCNConfig
from .lightgcn import LightGCN, bpr_objective

VIEWS = ("edge", "node", "walk")
REFRESH = ("epoch", "step")


@dataclass
class Config(LightGCNConfig):
    view: str = "edge"              # edge | node | walk
    drop_ratio: float = 0.1         # rho
    ssl_weight: float = 0.05        # lambda_1 (the paper: 0.1); chosen on ml-100k's validation split
    ssl_temperature: float = 0.2    # tau
    view_refresh: str = "epoch"     # new views every epoch (the paper's code) or every step


@register_method("sgl", "recommendation on the user-item graph: LightGCN + InfoNCE between two edge-dropout "
                 "(or node-dropout, random-walk) views of each node",
                 "Wu et al. 2021, Self-supervised Graph Learning for Recommendation, arXiv:2010.10783")
class SGL(LightGCN):
    task = GraphTask

    def __init__(self, n_users: int, n_items: int, adj: Tensor, edges: tuple[Tensor, Tensor], cfg: Config):
        if cfg.view not in VIEWS:
            raise InputError(f"view must be one of {', '.join(VIEWS)}, got {cfg.view!r}")
        if cfg.view_refresh not in REFRESH:
            raise InputError(f"view_refresh must be one of {', '.join(REFRESH)}, got {cfg.view_refresh!r}")
        super().__init__(n_users, n_items, adj, edges, cfg)
        masks = self.encoder.layers if cfg.view == "walk" else 1
        # the two current views' kept edges, the epoch (or step) they were drawn for, records trained on
        self.register_buffer("kept", torch.ones(2, masks, len(edges[0]), dtype=torch.bool, device=edges[0].device))
        self.register_buffer("drawn_for", torch.tensor(-1))
        self.register_buffer("seen", torch.tensor(0))
        self._built: tuple[int, list] | None = None

    def keep_masks(self) -> Tensor:
        """One view's kept edges [masks, E], drawn from torch's generator (one mask per layer for walks)."""
        enc, (users, items), p = self.encoder, self.edges, self.cfg.drop_ratio
        if self.cfg.view == "node":
            return node_keep(users, items, enc.n_users, enc.n_items, p)[None]
        return torch.stack([edge_keep(len(users), p, users.device) for _ in range(len(self.kept[0]))])

    def adjacency(self, keep: Tensor) -> Tensor | list[Tensor]:
        """The renormalised adjacency of a view's kept edges (a list of one per layer for walks)."""
        enc, (users, items) = self.encoder, self.edges
        adj = [normalized_adjacency(users[k], items[k], enc.n_users, enc.n_items) for k in keep]
        return adj if self.cfg.view == "walk" else adj[0]

    def view(self) -> Tensor | list[Tensor]:
        """A freshly drawn perturbed, renormalised adjacency."""
        return self.adjacency(self.keep_masks())

    def views(self, records: int) -> list:
        """The two views for a step of ``records`` (all ranks): redrawn when a new epoch (or step) starts."""
        key = int(self.seen) // (len(self.edges[0]) if self.cfg.view_refresh == "epoch" else 1)
        if key != int(self.drawn_for):
            with torch.no_grad():
                self.kept.copy_(torch.stack([self.keep_masks(), self.keep_masks()]))
                self.drawn_for.fill_(key)
        if self.training:
            self.seen += records
        if self._built is None or self._built[0] != self.kept._version:   # also after a checkpoint is loaded
            self._built = (self.kept._version, [self.adjacency(k) for k in self.kept])
        return self._built[1]

    def forward(self, batch: dict, progress: float) -> StepOutput:
        users, items = self.encoder(self.adj)
        loss, _, _ = bpr_objective(self.encoder, users, items, batch, self.cfg.reg_weight)
        v1, v2 = self.views(len(batch["user"]) * dist.world())
        u1, i1 = self.encoder(v1)
        u2, i2 = self.encoder(v2)
        t = self.cfg.ssl_temperature
        ssl = node_info_nce(u1, u2, batch["user"], t) + node_info_nce(i1, i2, batch["pos"], t)
        return StepOutput(loss + self.cfg.ssl_weight * ssl, u1[batch["user"]].detach(), u2[batch["user"]].detach())

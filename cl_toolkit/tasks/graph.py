"""The user-item graph for the graph methods (``lightgcn``, ``sgl``, ``simgcl``).

Users and items with training interactions are the nodes (vocabularies sorted by id); each
distinct (user, item) pair is an edge and a record. The normalised adjacency is built once,
here (``encoders.graph.normalized_adjacency``), and handed to the model with the edge list (SGL
draws its dropped-edge views from it). A batch of records is BPR's triples: the user, the
observed item, and an item drawn uniformly from the catalogue that the user has not interacted
with (redrawn until it is one; torch's generator, so ``--resume`` replays the draws).

``export`` propagates the trained embeddings once over the whole graph and writes them
(``encoder/graph``) and ``rec.json``: ``cltk recommend`` scores a user's items by dot product.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..encoders.graph import normalized_adjacency, save_graph
from ..io import InputError, RunDir, atomic_dir, check_range, write_json
from ..io.interactions import Interactions, read_interactions
from ..io.run import REC as REC_SPEC
from . import Task
from .interactions import interactions_hash, rec_spec

NEGATIVE_DRAWS = 20       # rounds of redrawing a sampled negative that is an observed item


class GraphTask(Task):
    """Distinct (user, item) pairs as records, the normalised adjacency, BPR triples per batch."""

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: Interactions | None = None):
        super().__init__(cfg, method_cls, device, data)
        mc = cfg.method_config
        for name in ("dim", "layers"):
            check_range(f"method config {name}", getattr(mc, name), int, 1)
        inter = data if data is not None else read_interactions(cfg.data)
        self.resolved = {"encoder": "lightgcn"}
        self.cfg, self.mc, self.inter = cfg, mc, inter
        self.user_ids, self.item_ids = sorted(set(inter.users)), sorted(set(inter.items))
        upos = {u: k for k, u in enumerate(self.user_ids)}
        ipos = {i: k for k, i in enumerate(self.item_ids)}
        n_items = len(self.item_ids)
        keys = np.unique(np.asarray([upos[u] * n_items + ipos[i] for u, i in zip(inter.users, inter.items)],
                                    dtype=np.int64))
        if n_items < 2:
            raise InputError("a graph model needs at least 2 items (one observed, one to rank below it)", cfg.data)
        self.keys = torch.from_numpy(keys)                  # sorted: user * I + item, for negative checks
        self.users = torch.from_numpy(keys // n_items)
        self.items = torch.from_numpy(keys % n_items)
        self.n, self.hash = len(keys), interactions_hash(inter)
        adj = normalized_adjacency(self.users, self.items, len(self.user_ids), n_items).to(device)
        self.model = method_cls(len(self.user_ids), n_items, adj, (self.users.to(device), self.items.to(device)),
                                mc).to(device)

    def negatives(self, users: Tensor) -> Tensor:
        """An unobserved item per user, uniform over the catalogue (observed draws are redrawn)."""
        n_items = len(self.item_ids)
        neg = torch.randint(n_items, (len(users),))
        for _ in range(NEGATIVE_DRAWS):
            key = users * n_items + neg
            pos = torch.searchsorted(self.keys, key).clamp(max=len(self.keys) - 1)
            hit = self.keys[pos] == key
            if not hit.any():
                break
            neg[hit] = torch.randint(n_items, (int(hit.sum()),))
        return neg

    def batch(self, idx: Tensor) -> dict:
        users = self.users[idx]
        return {"user": users.to(self.device), "pos": self.items[idx].to(self.device),
                "neg": self.negatives(users).to(self.device)}

    def export(self, run: RunDir, extra: dict) -> None:
        with torch.no_grad():
            users, items = self.model.final()
        with atomic_dir(run.tower("graph"), force=True) as tmp:
            save_graph(users, items, tmp, self.user_ids, self.item_ids, {"method": self.cfg.method, **extra})
        write_json(run.root / REC_SPEC, rec_spec(self.cfg, self.inter, "graph", 0))

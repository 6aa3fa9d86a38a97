"""Two-tower retrieval with in-batch sampled softmax (Yi et al. 2019, "Sampling-Bias-Corrected
Neural Modeling for Large Corpus Item Recommendations", RecSys; the retrieval model of Yao et
al. 2021, arXiv:2007.12865).

User tower: the user id, the user's features (``NAME.user``) and the mean of the user's last
``history`` items (in training: the items before the one predicted, never the item itself).
Item tower: the item id and its features (tokens, token sets, text words, numbers of the item
file). Each training interaction (user, item) is a positive; the other items of the batch (the
global batch under torchrun) are the negatives, with the logQ correction of their sampling
probability (an item's share of the training interactions) and accidental hits (the same item
twice in a batch) removed: ``losses.sampled_softmax``. Item ids get embeddings only for items
with training interactions; an item without any (a cold item) is embedded from its features.

Data: ``--data`` a folder of atomic files (``NAME.inter`` + ``NAME.item`` [+ ``NAME.user``]), a
``.inter`` file (its sibling ``NAME.item`` is read), or interactions JSONL with ``--items``.
Exports ``encoder/item`` and ``encoder/user`` (``rectowers``) and ``rec.json`` for
``cltk recommend`` / ``cltk embed --field user|item``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..io import InputError, atomic_dir, write_json
from ..io.interactions import BUILTIN, Interactions, read_interactions
from ..io.run import REC as REC_SPEC
from ..losses import sampled_softmax
from ..recdata import build_spec, encode, time_order
from ..rectowers import FeatureTower, save_tower, to_tensors
from . import StepOutput, make_config, register_method


@dataclass
class Config:
    items: str = ""                 # item file (atomic .item or JSONL); default: the .inter file's sibling NAME.item
    users: str = ""                 # user file; default: the sibling NAME.user
    dim: int = 64                   # embedding size of both towers' outputs
    field_dim: int = 32             # size of each feature field's vector
    hidden: int = 256               # the towers' hidden layer
    dropout: float = 0.0
    temperature: float = 0.05
    logq_correction: bool = True
    mask_accidental_hits: bool = True
    history: int = 50               # the user tower pools the user's last N items (0: none)
    user_id: bool = True            # user id embedding in the user tower
    item_id: bool = True            # item id embedding in the item tower
    exclude_fields: list[str] = field(default_factory=list)   # item / user feature fields not to use


def data_hash(inter: Interactions) -> str:
    h = hashlib.sha256()
    for line in inter.raw:
        h.update(line.encode())
        h.update(b"\n")
    for t in (inter.item_table, inter.user_table):
        if t is not None:
            h.update(json.dumps(t.rows, sort_keys=True).encode())
    return h.hexdigest()[:16]


def load_data(cfg: Any, mc: Any) -> Interactions:
    """The run's interactions (``cfg.data``) with the item / user files of its method config."""
    return read_interactions(cfg.data, items=mc.items or None, users=mc.users or None)


class RecTask:
    """Training interactions -> batches of (user features + recent items, item features), for
    two-tower methods. ``catalogue``: every item of the item file and of the interactions."""

    def __init__(self, cfg, entry, device: torch.device, data: Interactions | None = None):
        mc = make_config(entry.config, cfg.method_config)
        inter = data if data is not None else load_data(cfg, mc)
        cfg.encoder = "feature-towers"
        self.cfg, self.mc, self.device, self.inter = cfg, mc, device, inter
        self.n, self.hash = len(inter), data_hash(inter)
        self.item_vocab = sorted(set(inter.items))
        vocab_pos = {i: k for k, i in enumerate(self.item_vocab)}
        self.catalogue = inter.catalogue()
        cat_pos = {i: k for k, i in enumerate(self.catalogue)}
        exclude = tuple(mc.exclude_fields)
        self.item_spec = build_spec(inter.item_table, self.item_vocab if mc.item_id else None, exclude=exclude)
        users = sorted(set(inter.users))
        self.user_spec = build_spec(inter.user_table, users if mc.user_id else None, exclude=exclude)
        if mc.history:
            self.user_spec.fields.append({"name": "history", "kind": "history", "vocab": self.item_vocab})
        for what, spec in (("item", self.item_spec), ("user", self.user_spec)):
            if not spec.fields:
                raise InputError(f"the {what} tower has no input: no {what} features and {what}_id / history off",
                                 cfg.data)
        self.cat_arrays = encode(self.item_spec, self.catalogue, inter.item_table)
        self.user_arrays = encode(self.user_spec, users, inter.user_table)
        upos = {u: k for k, u in enumerate(users)}
        self.row_user = np.asarray([upos[u] for u in inter.users], dtype=np.int64)
        self.row_item = np.asarray([cat_pos[i] for i in inter.items], dtype=np.int64)
        self.row_vocab = np.asarray([vocab_pos[i] for i in inter.items], dtype=np.int64)
        counts = np.bincount(self.row_vocab, minlength=len(self.item_vocab)).astype(np.float64)
        self.log_q = torch.from_numpy(np.log(counts / counts.sum())).float()
        self.hist = recent_items(inter, mc.history, {i: k + 1 for k, i in enumerate(self.item_vocab)})
        self.model = entry.cls(self.tower(self.item_spec), self.tower(self.user_spec), mc).to(device)

    def tower(self, spec) -> FeatureTower:
        mc = self.mc
        return FeatureTower(spec.to_json(), mc.field_dim, [mc.hidden], mc.dim, mc.dropout)

    def batch(self, idx: Tensor) -> dict:
        rows = idx.numpy()
        user = to_tensors(self.user_arrays, self.row_user[rows], self.device)
        if self.hist is not None:
            user["history"] = torch.from_numpy(self.hist[rows]).to(self.device)
        ids = torch.from_numpy(self.row_vocab[rows])
        return {"user": user, "item": to_tensors(self.cat_arrays, self.row_item[rows], self.device),
                "item_ids": ids.to(self.device), "log_q": self.log_q[ids].to(self.device)}

    def export(self, out: Path, extra: dict) -> None:
        m = self.model
        for name, tower in (("item", m.encoder), ("user", m.user_tower)):
            with atomic_dir(out / "encoder" / name, force=True) as tmp:
                save_tower(tower.float().cpu(), tmp, {"tower": name, **extra})
        write_json(out / REC_SPEC, rec_spec(self.cfg, self.inter, "tower", self.mc.history))


def rec_spec(cfg: Any, inter: Interactions, user_model: str, history: int) -> dict:
    """What ``cltk recommend`` needs besides the towers: the data (to know every user's history
    and the catalogue; absolute paths, so the run works from any folder) and how users are
    embedded (``tower`` or ``history-mean``)."""
    def where(p: str | None) -> str | None:
        return p if p is None or p == "-" or p in BUILTIN else str(Path(p).resolve())

    return {"method": cfg.method, "data": where(cfg.data), "items": where(inter.item_file),
            "users": where(inter.user_file), "user_model": user_model, "history": history,
            "method_config": dict(cfg.method_config)}


def recent_items(inter: Interactions, n: int, index: dict[str, int]) -> np.ndarray | None:
    """[rows, n] int64: for each interaction, the vocabulary indices (1-based) of the user's up to n
    items just before it in time order (0 = padding); None when n is 0."""
    if not n:
        return None
    hist = np.zeros((len(inter), n), dtype=np.int64)
    for rows in time_order(inter).values():
        seq = [index.get(inter.items[r], 0) for r in rows]
        for p, r in enumerate(rows):
            h = seq[max(0, p - n):p]
            hist[r, : len(h)] = h
    return hist


def retrieval_loss(u: Tensor, v: Tensor, batch: dict, cfg: Config) -> Tensor:
    """Sampled softmax of this rank's users against the items of the global batch."""
    keys, offset = dist.gather(v)
    ids = dist.gather_nograd(batch["item_ids"]) if cfg.mask_accidental_hits else None
    log_q = dist.gather_nograd(batch["log_q"]) if cfg.logq_correction else None
    return sampled_softmax(u, keys, cfg.temperature, log_q, ids, offset)


@register_method("twotower", "recommendation: user tower + item tower (ids and features), in-batch sampled "
                 "softmax with logQ correction and accidental hits masked",
                 "Yi et al. 2019, sampling-bias-corrected two-tower retrieval, RecSys")
class TwoTower(nn.Module):
    defaults = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-5, "batch_size": 1024, "warmup": 0.02,
                "epochs": 20, "augment": "none"}
    task = RecTask

    def __init__(self, item_tower: FeatureTower, user_tower: FeatureTower, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = item_tower                # the item tower (what `cltk embed --field item` uses)
        self.user_tower = user_tower

    def forward(self, batch: dict, progress: float) -> StepOutput:
        return self.objective(self.represent(batch, progress), batch, progress)

    def represent(self, batch: dict, progress: float) -> list[Tensor]:
        """Per interaction: the normalised user and item embeddings."""
        return [F.normalize(self.user_tower(batch["user"]).float(), dim=-1),
                F.normalize(self.encoder(batch["item"]).float(), dim=-1)]

    def objective(self, reps: list[Tensor], batch: dict, progress: float) -> StepOutput:
        u, v = reps
        return StepOutput(retrieval_loss(u, v, batch, self.cfg), u, v)

    def after_step(self, progress: float) -> None:
        pass

"""Interactions for the recommendation methods: training (user, item) interactions and the item /
user feature tables read through ``io.interactions``, encoded once (``recdata``); batches of user
features + recent items and item features (``RecTask``, for ``twotower``), plus feature-masked
views of uniformly drawn catalogue items (``FeatMaskTask``, ``featmask``), or the catalogue's items
as word2vec inputs with their click vectors (``TwinTask``, ``twin``). Each exports its towers
(``encoder/item``, ``encoder/user``) and ``rec.json`` for ``cltk recommend``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ..augment_features import correlated_groups, feature_masks
from ..encoders.towers import FeatureTower, save_tower, to_tensors
from ..io import InputError, RunDir, atomic_dir, write_json
from ..io.interactions import BUILTIN, Interactions, read_interactions
from ..io.run import REC as REC_SPEC
from ..recdata import FeatureSpec, build_spec, encode, field_categories, item_words, mutual_information, time_order
from . import Task

MASKINGS = ("correlated", "random", "mixed")


def interactions_hash(inter: Interactions) -> str:
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


class InteractionsTask(Task):
    """The shared start of the recommendation tasks: the run's interactions (``cfg.data``, or
    ``data`` already read) with its item / user files, and the method's settings."""

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: Interactions | None = None):
        super().__init__(cfg, method_cls, device, data)
        self.cfg, self.mc = cfg, cfg.method_config
        self.inter = data if data is not None else load_data(cfg, self.mc)
        self.resolved = {"encoder": "feature-towers"}


class RecTask(InteractionsTask):
    """Training interactions -> batches of (user features + recent items, item features), for
    two-tower methods. ``catalogue``: every item of the item file and of the interactions."""

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: Interactions | None = None):
        super().__init__(cfg, method_cls, device, data)
        mc, inter = self.mc, self.inter
        self.n, self.hash = len(inter), interactions_hash(inter)
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
        self.model = method_cls(self.tower(self.item_spec), self.tower(self.user_spec), mc).to(device)

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

    def export(self, run: RunDir, extra: dict) -> None:
        m = self.model
        for name, tower in (("item", m.encoder), ("user", m.user_tower)):
            with atomic_dir(run.tower(name), force=True) as tmp:
                save_tower(tower.float().cpu(), tmp, {"tower": name, **extra})
        write_json(run.root / REC_SPEC, rec_spec(self.cfg, self.inter, "tower", self.mc.history))


def rec_spec(cfg: Any, inter: Interactions, user_model: str, history: int) -> dict:
    """What ``cltk recommend`` needs besides the towers: the data (to know every user's history
    and the catalogue; absolute paths, so the run works from any folder) and how users are
    embedded (``tower`` or ``history-mean``)."""
    def where(p: str | None) -> str | None:
        return p if p is None or p == "-" or p in BUILTIN else str(Path(p).resolve())

    return {"method": cfg.method, "data": where(cfg.data), "items": where(inter.item_file),
            "users": where(inter.user_file), "user_model": user_model, "history": history,
            "method_config": dataclasses.asdict(cfg.method_config)}


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


class FeatMaskTask(RecTask):
    """RecTask plus a uniform sample of catalogue items with two complementary masks per step."""

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: Interactions | None = None):
        super().__init__(cfg, method_cls, device, data)
        mc = self.mc
        if mc.masking not in MASKINGS:
            raise InputError(f"masking must be one of {', '.join(MASKINGS)}, got {mc.masking!r}")
        spec = FeatureSpec.from_json(self.item_spec.to_json())
        if len(spec.fields) < 2:
            raise InputError("feature masking needs at least two item fields (the id and a feature)", cfg.data)
        self.groups = correlated_groups(mutual_information(field_categories(spec, self.cat_arrays)))
        self.ssl_batch = mc.ssl_batch or cfg.batch_size

    def batch(self, idx: Tensor) -> dict:
        out = super().batch(idx)
        m = min(self.ssl_batch, len(self.catalogue))
        rows = torch.randperm(len(self.catalogue))[:m]
        m1, m2 = feature_masks(self.mc.masking, m, len(self.groups), self.groups)
        out["ssl"] = {"item": to_tensors(self.cat_arrays, rows.numpy(), self.device), "mask1": m1.to(self.device),
                      "mask2": m2.to(self.device), "ids": rows.to(self.device)}
        return out


def word2vec(sentences: list[list[str]], dim: int, window: int, epochs: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Skip-gram word2vec (gensim) on the items' words, one thread (deterministic for a seed)."""
    from gensim.models import Word2Vec  # seconds to import; only twin runs pay it

    model = Word2Vec(sentences=[s for s in sentences if s], vector_size=dim, window=window, min_count=1, sg=1,
                     epochs=epochs, workers=1, seed=seed)
    return list(model.wv.index_to_key), np.asarray(model.wv.vectors, dtype=np.float32)


def click_matrix(inter: Interactions, items: list[str]) -> sp.csr_matrix:
    """[items, users] binary interactions, rows L2-normalised (row products = click cosine)."""
    ipos = {i: k for k, i in enumerate(items)}
    users = {u: k for k, u in enumerate(sorted(set(inter.users)))}
    pairs = {(ipos[i], users[u]) for u, i in zip(inter.users, inter.items) if i in ipos}
    r, c = zip(*pairs) if pairs else ((), ())
    m = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(items), max(1, len(users))))
    norm = np.sqrt(np.asarray(m.sum(1)).ravel())
    return (sp.diags(1 / np.maximum(norm, 1e-12)) @ m).tocsr()


class TwinTask(InteractionsTask):
    """The catalogue's items (those with words), their word ids and their click vectors."""

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: Interactions | None = None):
        super().__init__(cfg, method_cls, device, data)
        mc, inter = self.mc, self.inter
        self.catalogue = inter.catalogue()
        table = inter.item_table
        rows = table.rows if table is not None else {}
        sentences = [item_words(rows.get(i, {}), table.schema) if table is not None else [] for i in self.catalogue]
        if not any(sentences):
            raise InputError("the twin tower needs item words: an item file with a text field (title, text, ...) "
                             "or token features", cfg.data)
        vocab, vectors = word2vec(sentences, mc.w2v_dim, mc.w2v_window, mc.w2v_epochs, cfg.seed)
        spec = FeatureSpec([{"name": "words", "kind": "words", "vocab": vocab, "dim": mc.w2v_dim, "frozen": True}])
        tower = FeatureTower(spec.to_json(), mc.w2v_dim, [mc.hidden, mc.hidden], mc.dim)
        with torch.no_grad():
            tower.embeddings["words"].weight[1:] = torch.from_numpy(vectors)
        self.arrays = encode(spec, self.catalogue, table)
        self.rows = np.flatnonzero((self.arrays["words"] > 0).any(1))
        self.n, self.hash = len(self.rows), interactions_hash(inter)
        self.model = method_cls(tower, mc, click_matrix(inter, self.catalogue)).to(device)

    def batch(self, idx: Tensor) -> dict:
        rows = self.rows[idx.numpy()]
        return {"item": to_tensors(self.arrays, rows, self.device), "rows": torch.from_numpy(rows).to(self.device)}

    def export(self, run: RunDir, extra: dict) -> None:
        with atomic_dir(run.tower("item"), force=True) as tmp:
            save_tower(self.model.encoder.float().cpu(), tmp, {"tower": "item", **extra})
        write_json(run.root / REC_SPEC, rec_spec(self.cfg, self.inter, "history-mean", 0))



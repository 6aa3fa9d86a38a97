"""Recommendations from a trained run (``cltk recommend``) and its user / item embeddings
(``cltk embed RUN --field user|item``).

A recommendation run holds ``rec.json`` naming its training data and how users are embedded
(``user_model``), and its exported model under ``encoder/``:

- ``tower`` (``twotower``, ``featmask``): ``encoder/item`` and ``encoder/user``. The catalogue is
  every item of the item file and of the training interactions; items without interactions are
  embedded from their features; a user from their id, features and last items. Scores are cosines.
- ``history-mean`` (``twin``, which embeds items only): a user is the normalised mean of the
  embeddings of the items in their history, score(u, i) = cos(i, mean_{h in history(u)} e_h / |.|),
  so an item scores high when it is close to the user's history as a whole.
- ``sequence`` (``sasrec``, ``cl4srec``, ``duorec``): ``encoder/sequence``. A user is the sequence
  encoder's last-position representation of their last ``max_length`` items in time order, and
  score(u, i) = h_u . e_i: the model's next-item score. A new session needs no training: its
  items (``--history``) are the sequence.
- ``graph`` (``lightgcn``, ``sgl``, ``simgcl``): ``encoder/graph``, the propagated embeddings;
  score(u, i) = e_u . e_i. A user the graph did not have (only in ``--history``) is the mean of
  their history items' embeddings (a fold-in; the graph is not re-propagated).

Sequence and graph models embed items by id: their catalogue is the items with training
interactions. History = the user's training interactions (time order), plus those of
``--history``; by default every user of both is recommended for. The top k come from exact
search, or from the one Faiss module for large catalogues (``index.rank``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .encoders.graph import load_graph
from .encoders.sequence import encode_sequences, left_pad, load_sequence
from .encoders.towers import FeatureTower, embed_records, load_tower
from .index.rank import rank_vectors
from .io import InputError, RunDir, write_embeddings
from .io.interactions import Interactions, Table, read_id_list, read_interactions, read_table
from .io.run import REC as REC_SPEC
from .recdata import FeatureSpec, encode, histories


@dataclass
class Recommender:
    run: Path
    spec: dict
    data: Interactions
    item_tower: FeatureTower
    item_cfg: dict
    user_tower: FeatureTower | None
    user_cfg: dict | None
    device: str = "cpu"
    normalized = True             # scores are cosines
    by_features = True            # new items (of an item file) are embedded from their features

    @property
    def catalogue(self) -> list[str]:
        return self.data.catalogue()

    def embed_items(self, ids: list[str], table: Table | None = None) -> np.ndarray:
        """Normalised item embeddings [len(ids), D] from the item file's features (``table`` adds or
        overrides items, e.g. new ones)."""
        spec = FeatureSpec.from_json(self.item_cfg["spec"])
        merged = _merge(self.data.item_table, table)
        return embed_records(self.item_tower, encode(spec, ids, merged), device=self.device)

    def embed_users(self, users: list[str], hist: dict[str, list[str]], table: Table | None = None,
                    item_vecs: np.ndarray | None = None, item_ids: list[str] | None = None) -> np.ndarray:
        """Normalised user embeddings [len(users), D] from their histories (oldest first)."""
        if self.user_tower is None:                       # twin: the mean of the history's item embeddings
            ids = item_ids if item_ids is not None else self.catalogue
            vecs = item_vecs if item_vecs is not None else self.embed_items(ids)
            pos = {i: k for k, i in enumerate(ids)}
            out = np.zeros((len(users), vecs.shape[1]), dtype=np.float32)
            for r, u in enumerate(users):
                rows = [pos[i] for i in hist.get(u, []) if i in pos]
                if rows:
                    m = vecs[rows].mean(0)
                    out[r] = m / max(float(np.linalg.norm(m)), 1e-12)
            return out
        spec = FeatureSpec.from_json(self.user_cfg["spec"])
        arrays = encode(spec, users, _merge(self.data.user_table, table))
        n = self.spec.get("history", 0)
        if n:
            index = {i: k + 1 for k, i in enumerate(spec.field("history")["vocab"])}
            h = np.zeros((len(users), n), dtype=np.int64)
            for r, u in enumerate(users):
                seq = [index.get(i, 0) for i in hist.get(u, [])][-n:]
                h[r, : len(seq)] = seq
            arrays["history"] = h
        return embed_records(self.user_tower, arrays, device=self.device)


def _merge(base: Table | None, extra: Table | None) -> Table | None:
    if extra is None:
        return base
    if base is None:
        return extra
    return Table(base.source, {**base.rows, **extra.rows}, {**base.schema, **extra.schema})


class IdRecommender:
    """The common part of the models that embed items by id (sequence and graph models): their
    catalogue is their item vocabulary, and items outside it cannot be embedded."""

    normalized = False            # scores are dot products
    by_features = False
    vocab: list[str]
    data: Interactions
    spec: dict

    @property
    def catalogue(self) -> list[str]:
        return self.vocab

    def item_rows(self, ids: list[str]) -> list[int]:
        pos = {i: k for k, i in enumerate(self.vocab)}
        unknown = [i for i in ids if i not in pos]
        if unknown:
            raise InputError(f"{len(unknown)} item(s) have no embedding in this {self.spec['method']} run, e.g. "
                             f"{unknown[0]!r} (sequence and graph models embed only items with training interactions)")
        return [pos[i] for i in ids]


class SequenceRecommender(IdRecommender):
    """A sequence model: users are the encoder's representation of their last items."""

    def __init__(self, run: Path, spec: dict, data: Interactions, device: str = "cpu"):
        self.run, self.spec, self.data, self.device = run, spec, data, device
        self.model, self.model_spec = load_sequence(RunDir(run).tower("sequence"), device)
        self.vocab = self.model_spec["items"]
        self.table = self.model.item_table().detach().float().cpu().numpy()

    def embed_items(self, ids: list[str], table: Table | None = None) -> np.ndarray:
        return self.table[self.item_rows(ids)]

    def embed_users(self, users: list[str], hist: dict[str, list[str]], table: Table | None = None,
                    item_vecs: np.ndarray | None = None, item_ids: list[str] | None = None) -> np.ndarray:
        index = {i: k + 1 for k, i in enumerate(self.vocab)}
        seqs = [[index[i] for i in hist.get(u, []) if i in index] for u in users]
        return encode_sequences(self.model, left_pad(seqs, self.model.max_length), device=self.device)


class GraphRecommender(IdRecommender):
    """A graph model: its propagated user and item embeddings."""

    def __init__(self, run: Path, spec: dict, data: Interactions, device: str = "cpu"):
        self.run, self.spec, self.data = run, spec, data
        self.users, self.items, self.model_spec = load_graph(RunDir(run).tower("graph"))
        self.vocab = self.model_spec["items"]
        self.user_pos = {u: k for k, u in enumerate(self.model_spec["users"])}

    def embed_items(self, ids: list[str], table: Table | None = None) -> np.ndarray:
        return self.items[self.item_rows(ids)]

    def embed_users(self, users: list[str], hist: dict[str, list[str]], table: Table | None = None,
                    item_vecs: np.ndarray | None = None, item_ids: list[str] | None = None) -> np.ndarray:
        out = np.zeros((len(users), self.users.shape[1]), dtype=np.float32)
        index = {i: k for k, i in enumerate(self.vocab)}
        for r, u in enumerate(users):
            if u in self.user_pos:
                out[r] = self.users[self.user_pos[u]]
            else:
                rows = [index[i] for i in hist.get(u, []) if i in index]
                if rows:
                    out[r] = self.items[rows].mean(0)
        return out


def load(run: str | Path, device: str = "cpu") -> Recommender | SequenceRecommender | GraphRecommender:
    """A recommendation run: its model and its training data (re-read and validated)."""
    p = Path(run)
    spec_path = p / REC_SPEC
    if not spec_path.is_file():
        raise InputError(f"not a recommendation run (no {REC_SPEC}; train one with cltk pretrain --method "
                         "twotower|featmask|twin|sasrec|cl4srec|duorec|lightgcn|sgl|simgcl)", run)
    spec = json.loads(spec_path.read_text())
    if spec["data"] == "-":
        raise InputError("the run was trained on interactions from stdin, which cannot be read again; train it "
                         "from a file to recommend with it", run)
    data = read_interactions(spec["data"], items=spec.get("items"), users=spec.get("users"))
    if spec.get("user_model") == "sequence":
        return SequenceRecommender(p, spec, data, device)
    if spec.get("user_model") == "graph":
        return GraphRecommender(p, spec, data, device)
    item, icfg = load_tower(p / "encoder" / "item", device)
    user, ucfg = (load_tower(p / "encoder" / "user", device) if spec.get("user_model") == "tower" else (None, None))
    return Recommender(p, spec, data, item, icfg, user, ucfg, device)


def _histories(rec: Recommender | IdRecommender, history: str | None) -> tuple[dict[str, list[str]], list[str]]:
    """Every user's items in time order (training, then ``history``'s), and the users of ``history``."""
    hist = histories(rec.data)
    extra = histories(read_interactions(history)) if history is not None else {}
    for u, items in extra.items():
        hist[u] = hist.get(u, []) + items
    return hist, list(extra)


def recommend(run: str | Path, users: str | list[str] | None = None, k: int = 10,
              candidates: str | list[str] | None = None,
              include_seen: bool = False, history: str | None = None, device: str = "cpu") -> Iterator[dict]:
    """Top-k items per user, best first, as ``{"user", "items": [{"item", "score"}]}``: ``users`` a
    file of user ids (one a line, or a user file; ``-`` stdin) or a list (default: every user of the
    training data and of ``history``); ``candidates`` restricts the catalogue (a list, ids one a line,
    or an item file whose items may be new: feature models embed them from their features); the
    user's history is excluded unless ``include_seen``."""
    if k < 1:
        raise InputError(f"--k must be at least 1, got {k}")
    rec = load(run, device)
    hist, new_users = _histories(rec, history)
    if users is None:
        user_ids = sorted(set(rec.data.users) | set(new_users))
    else:
        user_ids = list(users) if isinstance(users, list) else read_id_list(users, "user_id")
    items, extra = rec.catalogue, None
    cand = None
    if candidates is not None:
        cand = list(candidates) if isinstance(candidates, list) else read_id_list(candidates, "item_id")
        known = set(items)
        if rec.by_features and isinstance(candidates, str) and candidates.endswith((".jsonl", ".item")):
            extra = read_table(candidates, "item_id")
            items = items + [i for i in cand if i not in known]
            known = set(items)
        unknown = [c for c in cand if c not in known]
        if unknown:
            hint = ("give an item file to embed new items from their features" if rec.by_features else
                    f"a {rec.spec['method']} run ranks only the items it was trained on")
            raise InputError(f"{len(unknown)} candidate(s) are not in the catalogue, e.g. {unknown[0]!r} ({hint})",
                             str(candidates))
    vecs = rec.embed_items(items, extra)
    uvecs = rec.embed_users(user_ids, hist, item_vecs=vecs, item_ids=items)
    seen = {u: set(hist.get(u, [])) for u in user_ids}
    yield from rank_vectors(uvecs, vecs, user_ids, items, seen, k, include_seen, cand)


def embed_field(run: str | Path, field: str, input: str | None = None, out: str | None = None,
                force: bool = False, device: str = "cpu") -> tuple[np.ndarray, list[dict], dict]:
    """``cltk embed RUN --field item|user``: an embeddings folder of the catalogue's items (or of an
    item file's, ``input``) or of the training users (or of an interactions file's users, embedded
    from their histories there), with the item features / user ids as meta."""
    if field not in ("item", "user"):
        raise InputError(f"--field must be item or user for a recommendation run, got {field!r}")
    t0 = time.time()
    rec = load(run, device)
    if field == "item":
        table = read_table(input, "item_id") if input is not None else None
        ids = list(table.rows) if table is not None else rec.catalogue
        emb = rec.embed_items(ids, table)
        rows = _merge(rec.data.item_table, table)
        records = [{"id": i, **((rows.rows.get(i, {})) if rows is not None else {})} for i in ids]
        source = input or rec.spec["data"]
    else:
        hist, new_users = _histories(rec, input)
        ids = sorted(set(rec.data.users) | set(new_users))
        emb = rec.embed_users(ids, hist)
        records = [{"id": u, "history": len(hist.get(u, []))} for u in ids]
        source = input or rec.spec["data"]
    info = {"model": str(run), "encoder": f"{rec.spec['method']}/{field}", "field": field, "dim": int(emb.shape[1]),
            "normalized": rec.normalized, "count": len(emb), "source": source, "seconds": round(time.time() - t0, 2),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if out is not None:
        write_embeddings(out, emb, records, info, force=force)
    return emb, records, info

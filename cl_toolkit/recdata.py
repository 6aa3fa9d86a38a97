"""Interaction data sets (the data layer for recommendation; numpy only): splits, users' histories
and the encoding of item / user features into index arrays the towers embed.

Splits (``split``), deterministic for a seed and leak-free:
- ``loo``: leave-one-out in time order. Per user, interactions sorted by timestamp (ties keep file
  order, a stable sort): the last is test, the second-to-last valid (users with 2 interactions: train
  + test; with 1: train only). Without timestamps, file order is time order.
- ``ratio``: per user, a seeded random share of interactions (default 0.8 / 0.1 / 0.1) to train /
  valid / test (at least one interaction stays in train).
- ``cold-items``: a seeded share of the items (default 10%) has all its interactions in test and
  another share in valid; train holds the interactions of the other items only.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .io import InputError, atomic_dir
from .io.interactions import Interactions, Table, words, write_interactions

PROTOCOLS = ("loo", "ratio", "cold-items")


# ---------------------------------------------------------------- splits

def time_order(inter: Interactions, rows: list[int] | None = None) -> dict[str, list[int]]:
    """Row numbers of each user's interactions, oldest first (ties and missing timestamps: file order)."""
    rows = list(range(len(inter))) if rows is None else rows
    by_user: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        by_user[inter.users[r]].append(r)
    has_ts = any(t is not None for t in inter.ts)
    if has_ts:
        for r in rows:
            if inter.ts[r] is None:
                raise InputError("missing (timestamps are given on other lines; time order needs all)",
                                 inter.source, inter.lines[r], "timestamp" if inter.fmt == "atomic" else "ts")
        for _u, rs in by_user.items():
            rs.sort(key=lambda r: inter.ts[r])  # stable: ties keep file order
    return by_user


def split(inter: Interactions, protocol: str = "loo", seed: int = 0,
          ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), cold_share: float = 0.1) -> dict[str, Interactions]:
    """Split interactions into ``train`` / ``valid`` / ``test`` (rows in file order within each part)."""
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; choose {', '.join(PROTOCOLS)}")
    part = np.zeros(len(inter), dtype=np.int8)            # 0 train, 1 valid, 2 test
    rng = np.random.default_rng(seed)
    if protocol == "loo":
        for rs in time_order(inter).values():
            if len(rs) >= 2:
                part[rs[-1]] = 2
            if len(rs) >= 3:
                part[rs[-2]] = 1
    elif protocol == "ratio":
        if len(ratios) != 3 or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
            raise InputError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
        by_user: dict[str, list[int]] = defaultdict(list)
        for r, u in enumerate(inter.users):
            by_user[u].append(r)
        for u in sorted(by_user):
            rs = np.asarray(by_user[u])[rng.permutation(len(by_user[u]))]
            n = len(rs)
            n_test = min(int(round(n * ratios[2])), n - 1)
            n_valid = min(int(round(n * ratios[1])), n - 1 - n_test)
            part[rs[:n_test]] = 2
            part[rs[n_test:n_test + n_valid]] = 1
    else:
        if not 0 < cold_share < 0.5:
            raise InputError(f"cold_share must be between 0 and 0.5, got {cold_share}")
        items = sorted(set(inter.items))
        order = [items[i] for i in rng.permutation(len(items))]
        k = max(1, int(round(len(items) * cold_share)))
        if 2 * k >= len(items):
            raise InputError(f"{len(items)} items are too few for a cold share of {cold_share}", inter.source)
        test_items, valid_items = set(order[:k]), set(order[k:2 * k])
        for r, i in enumerate(inter.items):
            part[r] = 2 if i in test_items else 1 if i in valid_items else 0
    out = {name: inter.subset(np.flatnonzero(part == p).tolist()) for p, name in enumerate(("train", "valid", "test"))}
    if not len(out["train"]):
        raise InputError("the split leaves no training interactions", inter.source)
    return out


def write_split(parts: dict[str, Interactions], out: str | os.PathLike, force: bool = False) -> dict[str, Any]:
    """Write a split as a folder: atomic input -> ``NAME.train.inter``, ``NAME.valid.inter``,
    ``NAME.test.inter`` (RecBole's benchmark-file names) with copies of ``NAME.item`` /
    ``NAME.user``; JSONL input -> ``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` (and
    ``items.jsonl`` / ``users.jsonl`` copies when given). Returns the file names and counts."""
    first = parts["train"]
    summary: dict[str, Any] = {"out": str(out), "files": {}, "counts": {}}
    with atomic_dir(out, force=force) as tmp:
        for name, inter in parts.items():
            fname = f"{first.name}.{name}.inter" if first.fmt == "atomic" else f"{name}.jsonl"
            write_interactions(inter, tmp / fname, force=True)
            summary["files"][name] = str(Path(out) / fname)
            summary["counts"][name] = {"interactions": len(inter), "users": len(set(inter.users)),
                                       "items": len(set(inter.items))}
        for kind, src in (("item", first.item_file), ("user", first.user_file)):
            if src is None or src == "-":
                continue
            fname = (f"{first.name}.{kind}" if first.fmt == "atomic" and not src.endswith(".jsonl")
                     else f"{kind}s{Path(src).suffix or '.jsonl'}")
            shutil.copyfile(src, tmp / fname)
            summary["files"][kind + "s"] = str(Path(out) / fname)
    return summary


# ---------------------------------------------------------------- histories

def histories(inter: Interactions) -> dict[str, list[str]]:
    """Each user's items in time order (oldest first)."""
    return {u: [inter.items[r] for r in rs] for u, rs in time_order(inter).items()}


# ---------------------------------------------------------------- feature encoding

TEXT_WORDS = 16           # words of a text field kept per item
SEQ_TOKENS = 32           # tokens of a token_seq field kept per item


@dataclass
class FeatureSpec:
    """How one table's features become arrays: per field a kind and a vocabulary (index 0 is the
    padding / unknown value: an id outside the vocabulary embeds as zeros), or for numbers the
    mean and std that standardise them. JSON-serialisable (``to_json`` / ``from_json``), so an
    exported tower embeds new records exactly as in training."""

    fields: list[dict]

    def to_json(self) -> dict:
        """Without the lookup tables ``encode`` caches in the fields."""
        return {"fields": [{k: v for k, v in f.items() if not k.startswith("_")} for f in self.fields]}

    @classmethod
    def from_json(cls, d: dict) -> FeatureSpec:
        return cls(list(d["fields"]))

    @property
    def names(self) -> list[str]:
        return [f["name"] for f in self.fields]

    def field(self, name: str) -> dict:
        return next(f for f in self.fields if f["name"] == name)


def item_words(row: dict[str, Any], schema: dict[str, str]) -> list[str]:
    """An item's words for word vectors: the words of its text fields, then ``field=value`` for
    its token and token-set features (so genres or a year count when there is little text)."""
    out: list[str] = []
    for name, v in row.items():
        kind = schema.get(name)
        if kind == "text":
            out += words(v)
    for name, v in row.items():
        kind = schema.get(name)
        if kind == "token":
            out.append(f"{name}={v}")
        elif kind == "token_seq":
            out += [f"{name}={t}" for t in v]
    return out


def _values(kind: str, v: Any) -> list[str]:
    if v is None:
        return []
    if kind == "token":
        return [str(v)]
    if kind == "token_seq":
        return [str(t) for t in v][:SEQ_TOKENS]
    if kind == "text":
        return words(v)[:TEXT_WORDS]
    raise ValueError(kind)


def build_spec(table: Table | None, id_vocab: list[str] | None, id_name: str = "id",
               exclude: tuple[str, ...] = ()) -> FeatureSpec:
    """A FeatureSpec over ``table``'s fields (vocabularies from every row of the table), led by an
    ``id`` field with vocabulary ``id_vocab`` (e.g. the items that have training interactions)."""
    fields: list[dict] = []
    if id_vocab is not None:
        fields.append({"name": id_name, "kind": "id", "vocab": list(id_vocab)})
    if table is None:
        return FeatureSpec(fields)
    for name, kind in table.schema.items():
        if name in exclude:
            continue
        if kind in ("token", "token_seq", "text"):
            counts: Counter = Counter()
            for row in table.rows.values():
                counts.update(_values(kind, row.get(name)))
            if counts:
                fields.append({"name": name, "kind": kind, "vocab": sorted(counts)})
        elif kind == "float":
            xs = np.asarray([row[name] for row in table.rows.values() if name in row], dtype=np.float64)
            if len(xs):
                fields.append({"name": name, "kind": "float", "width": 1, "mean": float(xs.mean()),
                               "std": float(xs.std() or 1.0)})
        elif kind == "float_seq":
            width = max((len(row.get(name, [])) for row in table.rows.values()), default=0)
            if width:
                fields.append({"name": name, "kind": "float_seq", "width": width, "mean": 0.0, "std": 1.0})
    return FeatureSpec(fields)


def encode(spec: FeatureSpec, ids: list[str], table: Table | None) -> dict[str, np.ndarray]:
    """Arrays for the records ``ids``: per bag field an int64 [N, L] of vocabulary indices (1-based,
    0 = padding or unknown), per number field a float32 [N, width] (standardised, 0 when missing).
    Records missing from ``table`` get only their id."""
    rows = table.rows if table is not None else {}
    schema = table.schema if table is not None else {}
    out: dict[str, np.ndarray] = {}
    for f in spec.fields:
        kind, name = f["kind"], f["name"]
        if kind == "history":              # filled by the caller (a user's recent items)
            continue
        if kind in ("float", "float_seq"):
            a = np.zeros((len(ids), f["width"]), dtype=np.float32)
            for n, i in enumerate(ids):
                v = rows.get(i, {}).get(name)
                if v is None:
                    continue
                v = [v] if kind == "float" else v[: f["width"]]
                a[n, : len(v)] = (np.asarray(v, dtype=np.float64) - f["mean"]) / f["std"]
            out[name] = a
            continue
        index = f.get("_index")
        if index is None:
            index = f["_index"] = {t: k + 1 for k, t in enumerate(f["vocab"])}
        if kind == "id":
            out[name] = np.asarray([[index.get(i, 0)] for i in ids], dtype=np.int64).reshape(len(ids), 1)
            continue
        if kind == "words":
            seqs = [[index.get(t, 0) for t in item_words(rows.get(i, {}), schema)][:TEXT_WORDS * 4] for i in ids]
        else:
            seqs = [[index.get(t, 0) for t in _values(kind, rows.get(i, {}).get(name))] for i in ids]
        width = max(1, max((len(s) for s in seqs), default=1))
        a = np.zeros((len(ids), width), dtype=np.int64)
        for n, s in enumerate(seqs):
            a[n, : len(s)] = s
        out[name] = a
    return out


# ---------------------------------------------------------------- feature correlation (for masking)

def field_categories(spec: FeatureSpec, arrays: dict[str, np.ndarray], bins: int = 10) -> np.ndarray:
    """One categorical value per record and field (int64 [N, F]) for mutual information: bag fields
    by their set of values, numbers by decile."""
    n = len(next(iter(arrays.values())))
    cols = []
    for f in spec.fields:
        a = arrays[f["name"]]
        if f["kind"] in ("float", "float_seq"):
            x = a[:, 0]
            edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
            cols.append(np.searchsorted(edges, x))
        else:
            keys: dict[tuple, int] = {}
            cols.append(np.asarray([keys.setdefault(tuple(sorted(set(r[r > 0].tolist()))), len(keys)) for r in a]))
    return np.stack(cols, 1) if cols else np.zeros((n, 0), dtype=np.int64)


def mutual_information(cats: np.ndarray) -> np.ndarray:
    """Pairwise mutual information (nats) between the columns of ``cats`` [N, F]:
    MI(a, b) = sum_{x,y} p(x,y) log( p(x,y) / (p(x) p(y)) )."""
    n, f = cats.shape
    mi = np.zeros((f, f))
    for a in range(f):
        for b in range(a, f):
            joint = Counter(zip(cats[:, a].tolist(), cats[:, b].tolist()))
            pa, pb = Counter(cats[:, a].tolist()), Counter(cats[:, b].tolist())
            v = sum(c / n * math.log(c * n / (pa[x] * pb[y])) for (x, y), c in joint.items())
            mi[a, b] = mi[b, a] = v
    return mi

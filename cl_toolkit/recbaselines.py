"""Baselines a recommendation table reports beside every model (benchmarks/recsys.py): each one
scores (user, item) and ranks through ``index.rank.rank``, so their lists are the ``cltk recommend``
format and ``cltk eval rec`` scores them the same way.

- ``popularity``: an item's count of training interactions, the same list for every user.
- ``als``: implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) with the
  ``implicit`` library's alternating least squares on the binary user x item matrix.
- ``feature_profile``: cosine between a user's counts of feature values over their history (a
  bag of ``field=value`` over the token, token-set and text-word fields) and the item's feature
  values: a content baseline that needs no interactions of the item, so it ranks cold items.
- ``random``: a seeded random order.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from .index.rank import rank
from .io.interactions import Interactions, Table, words


def _matrix(train: Interactions, users: list[str], items: list[str]) -> sp.csr_matrix:
    up = {u: j for j, u in enumerate(users)}
    ip = {i: j for j, i in enumerate(items)}
    pairs = {(up[u], ip[i]) for u, i in zip(train.users, train.items) if u in up and i in ip}
    r, c = zip(*pairs) if pairs else ((), ())
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(users), len(items)))


def seen_items(inter: Interactions) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for u, i in zip(inter.users, inter.items):
        out.setdefault(u, set()).add(i)
    return out


def popularity(train: Interactions, users: list[str], items: list[str], k: int = 10,
               candidates: list[str] | None = None) -> Iterator[dict]:
    counts = np.asarray(_matrix(train, sorted(set(train.users)), items).sum(0)).ravel()
    return rank(lambda rows: np.broadcast_to(counts, (len(rows), len(items))).copy(), users, items,
                seen_items(train), k, candidates=candidates)


def als(train: Interactions, users: list[str], items: list[str], k: int = 10, factors: int = 64,
        regularization: float = 0.05, alpha: float = 2.0, iterations: int = 15, seed: int = 0,
        candidates: list[str] | None = None) -> Iterator[dict]:
    from implicit.cpu.als import AlternatingLeastSquares  # a baseline's library, loaded only for ALS
    from threadpoolctl import threadpool_limits

    m = _matrix(train, users, items)
    with threadpool_limits(1, "blas"):   # implicit parallelises itself; BLAS threads inside it slow it down
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                        iterations=iterations, random_state=seed, num_threads=0)
        model.fit(m, show_progress=False)
    uf, vf = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return rank(lambda rows: uf[rows] @ vf.T, users, items, seen_items(train), k, candidates=candidates)


def item_feature_matrix(table: Table | None, items: list[str]) -> sp.csr_matrix:
    """Binary item x feature-value matrix over the token, token-set and text fields."""
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for r, i in enumerate(items):
        feats = (table.rows.get(i, {}) if table is not None else {})
        vals: set[str] = set()
        for name, v in feats.items():
            kind = table.schema[name]
            if kind == "token":
                vals.add(f"{name}={v}")
            elif kind == "token_seq":
                vals.update(f"{name}={t}" for t in v)
            elif kind == "text":
                vals.update(f"{name}={w}" for w in words(v))
        for t in vals:
            rows.append(r)
            cols.append(vocab.setdefault(t, len(vocab)))
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(items), max(1, len(vocab))))


def feature_profile(train: Interactions, users: list[str], items: list[str], k: int = 10,
                    candidates: list[str] | None = None) -> Iterator[dict]:
    feats = item_feature_matrix(train.item_table, items)
    profile = _matrix(train, users, items) @ feats                      # user x feature-value counts
    norm = lambda m: sp.diags(1 / np.maximum(np.sqrt(np.asarray(m.multiply(m).sum(1)).ravel()), 1e-12)) @ m  # noqa: E731
    pu, fi = norm(profile.tocsr()).tocsr(), norm(feats).T.tocsc()
    return rank(lambda rows: (pu[rows] @ fi).toarray(), users, items, seen_items(train), k, candidates=candidates)


def random_ranking(train: Interactions, users: list[str], items: list[str], k: int = 10, seed: int = 0,
                   candidates: list[str] | None = None) -> Iterator[dict]:
    rng = np.random.default_rng(seed)
    return rank(lambda rows: rng.random((len(rows), len(items))), users, items, seen_items(train), k,
                candidates=candidates)


BASELINES = {"popularity": popularity, "als": als, "feature-profile": feature_profile, "random": random_ranking}

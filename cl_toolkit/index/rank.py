"""Top-k ranking of a catalogue for many users, shared by ``cltk recommend`` and the baselines.

``rank`` takes a function that scores a block of users against every catalogue item and keeps,
per user, the k best items among the candidates, minus the user's history unless
``include_seen``. ``rank_vectors`` does the same for embeddings (score = inner product): exact
for catalogues up to EXACT_MAX items, an HNSW index above (searching
k + the longest history, then dropping seen items).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .choose import HNSW_M, make_index
from .store import search
from .tune import set_params

EXACT_MAX = 200_000
BLOCK = 512


def _topk_row(s: np.ndarray, k: int) -> np.ndarray:
    k = min(k, int(np.isfinite(s).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
    return part[np.lexsort((part, -s[part]))]        # best first; ties by catalogue order


def rank(score_block: Callable[[np.ndarray], np.ndarray], users: list[str], items: list[str],
         seen: dict[str, set[str]], k: int = 10, include_seen: bool = False,
         candidates: list[str] | None = None) -> Iterator[dict]:
    """Yield ``{"user", "items": [{"item", "score"}]}`` per user, best first. ``score_block(rows)``
    returns float scores [len(rows), len(items)] for the user rows ``rows`` (positions in ``users``)."""
    pos = {i: j for j, i in enumerate(items)}
    allowed = None
    if candidates is not None:
        allowed = np.zeros(len(items), dtype=bool)
        allowed[[pos[c] for c in candidates if c in pos]] = True
    for start in range(0, len(users), BLOCK):
        rows = np.arange(start, min(start + BLOCK, len(users)))
        s = np.asarray(score_block(rows), dtype=np.float64)
        if allowed is not None:
            s[:, ~allowed] = -np.inf
        for r, row in zip(rows, s):
            u = users[r]
            if not include_seen:
                cols = [pos[i] for i in seen.get(u, ()) if i in pos]
                row[cols] = -np.inf
            top = _topk_row(row, k)
            yield {"user": u, "items": [{"item": items[j], "score": round(float(row[j]), 6)} for j in top]}


def rank_vectors(user_vecs: np.ndarray, item_vecs: np.ndarray, users: list[str], items: list[str],
                 seen: dict[str, set[str]], k: int = 10, include_seen: bool = False,
                 candidates: list[str] | None = None) -> Iterator[dict]:
    """``rank`` with score = user_vec . item_vec; large catalogues go through a Faiss HNSW index."""
    u = np.ascontiguousarray(user_vecs, dtype=np.float32)
    v = np.ascontiguousarray(item_vecs, dtype=np.float32)
    if candidates is not None:
        keep = set(candidates)
        idx = [j for j, i in enumerate(items) if i in keep]
        v, items = v[idx], [items[j] for j in idx]
    if len(items) <= EXACT_MAX:
        yield from rank(lambda rows: u[rows] @ v.T, users, items, seen, k, include_seen)
        return
    index = make_index(f"HNSW{HNSW_M}", v.shape[1], "ip")
    index.add(v)
    longest = 0 if include_seen else max((len(seen.get(x, ())) for x in users), default=0)
    want = min(len(items), k + longest)
    set_params(index, {"efSearch": max(64, 2 * want)})
    scores, ids = search(index, u, want, normalize=False)
    for r, name in enumerate(users):
        hist = set() if include_seen else seen.get(name, set())
        out = [{"item": items[j], "score": round(float(s), 6)} for s, j in zip(scores[r], ids[r])
               if j >= 0 and items[j] not in hist][:k]
        yield {"user": name, "items": out}

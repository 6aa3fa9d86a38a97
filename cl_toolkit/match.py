"""Nearest neighbours of queries in an index (``cltk match``): similar items, text -> image and
image -> text search. Queries come as vectors (an embeddings folder, ``.npy``, or JSONL lines with
``embedding``) or as records embedded on the fly by a model (``embed.embed_records``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .embed import embed_records
from .index import search
from .io import InputError, embeddings_from_records, public, read_embeddings, read_jsonl


def read_queries(spec: str, model: str | None = None, device: str = "cpu",
                 batch_size: int = 256, field: str | None = None) -> tuple[np.ndarray, list[dict], dict]:
    """Queries for ``match``: an embeddings folder or ``.npy``; or JSONL (``-`` = stdin) whose
    lines carry ``embedding`` (what ``cltk embed --out -`` prints); or JSONL records embedded with
    ``model`` (``field`` picks what to embed and the tower). Returns (vectors, meta, info)."""
    p = Path(spec)
    if spec != "-" and (p.is_dir() or p.suffix == ".npy"):
        emb, meta, info = read_embeddings(p)
        return emb, meta, {**info, "model": model or info.get("model")}
    recs = read_jsonl(spec)
    name = "<stdin>" if spec == "-" else spec
    with_emb = [("embedding" in r) for r in recs]
    if any(with_emb):
        if not all(with_emb):
            r = recs[with_emb.index(False)]
            raise InputError("missing (some lines have embeddings, this one does not)", name, r["_line"], "embedding")
        meta = [{k: v for k, v in public(r).items() if k != "embedding"} for r in recs]
        return embeddings_from_records(recs, name), meta, {"model": model}
    if model is None:
        raise InputError("records have no 'embedding'; pass --model RUN to embed them", name)
    emb, info = embed_records(recs, name, model, device, batch_size, field)
    return emb, [public(r) for r in recs], {"model": model, "dim": info["dim"]}


def match(queries: np.ndarray, qmeta: list[dict], index, meta: list[dict], info: dict,
          k: int = 10, exclude_self: bool = False, batch_size: int = 4096) -> Iterator[dict]:
    """Nearest neighbours of each query, one output record per query:
    ``{"id", ..query fields.., "neighbors": [{"id", "score", ..target fields..}, ...]}``.
    ``exclude_self`` drops a neighbour whose id equals the query id (k+1 are searched)."""
    extra = 1 if exclude_self else 0
    targets = [{k2: v for k2, v in r.items() if k2 != "id"} for r in meta]
    for i in range(0, len(queries), batch_size):
        scores, ids = search(index, queries[i:i + batch_size], k + extra, info.get("normalized", False))
        for q, srow, irow in zip(qmeta[i:i + batch_size], scores, ids, strict=True):
            qid = str(q["id"])
            neigh = []
            for s, j in zip(srow, irow, strict=True):
                if j < 0 or (exclude_self and meta[j]["id"] == qid):
                    continue
                neigh.append({"id": meta[j]["id"], "score": round(float(s), 6), **targets[j]})
            yield {"id": qid, **{f: v for f, v in q.items() if f != "id"}, "neighbors": neigh[:k]}

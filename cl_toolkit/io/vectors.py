"""Embeddings folders (``embeddings.npy`` float32 N x D, ``meta.jsonl`` one record per row,
``info.json``) and bare ``.npy`` files: the one reader, writer and validator of vectors, with
numpy alone, so the Faiss tooling reads them without torch."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import atomic_dir
from .records import public, read_jsonl, write_jsonl
from .run import EMBEDDINGS, INFO, META


def check_vectors(emb: np.ndarray, meta: list[dict] | None = None, where: str | os.PathLike | None = None) -> None:
    """Refuse what Faiss or an evaluation would silently accept or crash on: not 2-D, empty,
    NaN/inf, a count of ids different from the count of vectors, duplicate ids."""
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise InputError(f"expected a non-empty 2-D array of vectors, got shape {tuple(emb.shape)}", where)
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        rid = f" (id {meta[row]['id']!r})" if meta is not None and row < len(meta) else ""
        raise InputError(f"{int(bad.sum())} vector(s) contain NaN or infinite values, first at row {row}{rid}",
                         where)
    if meta is not None:
        if len(meta) != len(emb):
            raise InputError(f"{len(meta)} ids for {len(emb)} vectors", where)
        ids = [str(r["id"]) for r in meta]
        if len(set(ids)) != len(ids):
            raise InputError("duplicate ids", where)


def _npy(path: str | os.PathLike) -> Path:
    p = Path(path)
    npy = p / EMBEDDINGS if p.is_dir() else p
    if not npy.is_file():
        raise InputError("not an embeddings folder or .npy file", path)
    return npy


def open_vectors(source: str | os.PathLike) -> np.ndarray:
    """The vectors of an embeddings folder or ``.npy``, memory-mapped (a shard build reads only
    its own rows); the shape is checked here, the values by whoever reads the rows."""
    npy = _npy(source)
    try:
        emb = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read embeddings ({e})", npy) from None
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise InputError(f"expected a non-empty 2-D array, got shape {emb.shape}", npy)
    return emb


def read_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, list[dict], dict]:
    """An embeddings folder (or a bare ``.npy``, whose rows get ids "0", "1", ...), validated
    (``check_vectors``): returns (float32 vectors, meta records, info)."""
    p = Path(path)
    emb = np.asarray(open_vectors(p), dtype=np.float32)
    if p.is_dir() and (p / META).is_file():
        meta = [public(r) for r in read_jsonl(p / META)]
        if len(meta) != len(emb):
            raise InputError(f"{len(meta)} ids for {len(emb)} vectors", p / META)
    else:
        meta = [{"id": str(i)} for i in range(len(emb))]
    check_vectors(emb, meta, path)
    info = {}
    if p.is_dir() and (p / INFO).is_file():
        try:
            info = json.loads((p / INFO).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"corrupt {INFO} ({type(e).__name__})", p) from None
    return emb, meta, info


def meta_record(rec: dict) -> dict:
    """What an output row keeps of an input record: its public fields without the in-memory
    row number ``index``."""
    r = public(rec)
    r.pop("index", None)
    return r


def write_embeddings(out: str | os.PathLike, emb: np.ndarray, records: list[dict], info: dict,
                     force: bool = False) -> None:
    """Write an embeddings folder atomically."""
    with atomic_dir(out, force=force) as tmp:
        np.save(tmp / EMBEDDINGS, np.asarray(emb, dtype=np.float32))
        with (tmp / META).open("w", encoding="utf-8") as f:
            write_jsonl(f, (meta_record(r) for r in records))
        (tmp / INFO).write_text(json.dumps(info, indent=2) + "\n")


def embedding_records(emb: np.ndarray, records: list[dict]) -> Iterator[dict]:
    """JSONL lines for ``cltk embed --out -``: each record's fields plus ``embedding``."""
    for r, e in zip(records, emb):
        yield {**meta_record(r), "embedding": [round(float(x), 6) for x in e]}


def embeddings_from_records(recs: list[dict], name: str) -> np.ndarray:
    """The ``embedding`` field of JSONL records (``cltk embed --out -`` lines) as vectors, each
    line checked: a non-empty list of finite numbers, the same length on every line."""
    d = None
    rows = []
    for r in recs:
        v = r["embedding"]
        if not isinstance(v, list) or not v or not all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                                         for t in v):
            raise InputError("must be a non-empty list of numbers", name, r["_line"], "embedding")
        if d is not None and len(v) != d:
            raise InputError(f"has {len(v)} numbers, earlier lines have {d}", name, r["_line"], "embedding")
        d = len(v)
        rows.append(v)
    x = np.asarray(rows, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InputError("NaN or infinite values", name, recs[int(np.flatnonzero(bad)[0])]["_line"], "embedding")
    return x

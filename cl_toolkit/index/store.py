"""Index folders on disk: load, search, the model that produced the vectors, the printed summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..io import InputError, public, read_jsonl, resolve_encoder_dir
from ..io.run import ENCODER, INDEX, INFO, META
from .choose import _faiss_msg, prepare
from .tune import set_params


def model_identity(model: str | None) -> str | None:
    """A comparable name for the model that produced vectors: the absolute run dir when ``model``
    is a run dir or encoder folder (both towers of a two-tower run share it), else the string
    as given. None when unknown."""
    if not model:
        return None
    try:
        enc = resolve_encoder_dir(model).resolve()
    except InputError:
        return _strip_encoder(os.path.normpath(str(model)))
    return _strip_encoder(str(enc))


def _strip_encoder(path: str) -> str:
    parts = Path(path).parts
    if ENCODER in parts[-2:]:
        parts = parts[:len(parts) - 1 - parts[::-1].index(ENCODER)]
    return str(Path(*parts)) if parts else path


def same_model(a: str | None, b: str | None) -> bool:
    """True when two model identities can be the same model (unknown counts as the same; a
    relative path matches an absolute one ending with it)."""
    if a is None or b is None or a == b:
        return True
    pa, pb = Path(a), Path(b)
    if pa.is_absolute() != pb.is_absolute():
        rel, full = (pb, pa) if pa.is_absolute() else (pa, pb)
        return full.parts[-len(rel.parts):] == rel.parts
    return False


# ---------------------------------------------------------------- load and search

def load(idx_dir: str | os.PathLike) -> tuple[faiss.Index, list[dict], dict]:
    """Read an index folder; the tuned search parameters from info.json are applied.
    Returns (index, meta, info)."""
    p = Path(idx_dir)
    if not (p / INDEX).is_file():
        raise InputError("not an index folder (no index.faiss)", p)
    try:
        info = json.loads((p / INFO).read_text())
        info["dim"], info["metric"]  # noqa: B018
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"missing or corrupt info.json ({type(e).__name__})", p) from None
    try:
        index = faiss.read_index(str(p / INDEX))
    except (RuntimeError, MemoryError) as e:
        raise InputError(f"corrupt or unreadable index.faiss ({_faiss_msg(e)})", p) from None
    meta = [public(r) for r in read_jsonl(p / META)]
    if index.ntotal != len(meta):
        raise InputError(f"index.faiss has {index.ntotal} vectors but meta.jsonl has {len(meta)} ids", p)
    if index.d != info["dim"]:
        raise InputError(f"index.faiss has dimension {index.d} but info.json says {info['dim']}", p)
    set_params(index, info.get("search_params") or {})
    return index, meta, info


def search(index: faiss.Index, queries: np.ndarray, k: int, normalize: bool,
           batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Batched k-NN search: (scores [Q, k], row ids [Q, k], -1 where fewer than k were found).
    Scores are inner products (cosine when ``normalize``) or squared L2 distances."""
    if queries.ndim != 2 or queries.shape[1] != index.d:
        raise InputError(f"queries have dimension {queries.shape[-1]} but the index has {index.d}")
    k = max(1, min(k, index.ntotal))
    scores, ids = [], []
    for i in range(0, len(queries), batch_size):
        s, j = index.search(prepare(queries[i:i + batch_size], normalize), k)
        scores.append(s)
        ids.append(j)
    return np.concatenate(scores), np.concatenate(ids)


def check_compatible(info: dict, dim: int, model: str | None, what: str = "queries") -> None:
    """Refuse vectors of another dimension or another model than the index's."""
    if dim != info["dim"]:
        raise InputError(f"{what} have dimension {dim} but the index has {info['dim']} "
                         f"(built from model {info.get('model')})")
    if not same_model(info.get("model"), model_identity(model)):
        raise InputError(f"the index holds vectors of model {info.get('model')}, {what} come from "
                         f"{model_identity(model)}")


def describe(info: dict) -> dict[str, Any]:
    """The short summary ``cltk build-index`` prints."""
    keys = ("factory", "metric", "dim", "count", "search_params", "recall_at_10", "qps", "flat_qps",
            "speedup_vs_flat", "index_bytes", "build_seconds")
    shards = {"shards": info["sharding"]["shards"]} if "sharding" in info else {}
    return {k: info.get(k) for k in keys} | {"target_met": info.get("recall", {}).get("target_met")} | shards

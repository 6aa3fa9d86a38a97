"""Hard-negative mining (``cltk mine``), as sentence-transformers' ``mine_hard_negatives``: for each
record, the candidates nearest to it under a model (searched through the Faiss module) that are
neither the record itself nor one of its known positives, inside a rank window and below a margin
of the positive's own score, written as the ``negative`` field the methods read.

What a record is decides what is mined (``kind``):

- ``positive``: text records with a ``positive`` (supervised SimCSE). Query: the ``text``;
  candidates: the distinct positives of all records; known positives: the record's own text and
  positive; ``negative``: one text.
- ``pairs``: image-text pairs (CLIP). Query: the ``image`` (a two-tower run's image tower);
  candidates: the distinct captions (its text tower); known positive: the pair's caption;
  ``negative``: one caption (NegCLIP's hard-negative caption of the image).
- ``tags``: posts with tags (CD-TOM). Query: the ``text`` (the post tower); candidates: the tag
  vocabulary (every tag of the records, or a tags file; the tag tower); known positives: the
  post's tags; ``negative``: a list of up to ``num`` tags.

``index``: search an existing index folder instead (its rows are the candidates; their ``text`` /
``tag`` field is what is written); its vectors must come from the model's target tower.

Selection, per record: candidates ranked by cosine, the record itself and its known positives
removed; then ranks ``range_min`` .. ``range_max - 1`` of what is left form the window (rank 0 is
the nearest; skipping the first few avoids near-paraphrases, likely unlabelled positives); inside
it a candidate is dropped when its score exceeds ``max_score`` or exceeds the positive's score
minus ``margin`` (for several positives, the lowest positive score): a candidate closer than a
known positive is more likely an unlabelled positive than a negative. Of the rest the ``num``
best (``sampling=top``) or ``num`` drawn at random (``random``, seeded) are kept. A text or pairs
record left without a negative is not written (counted as ``dropped``): supervised SimCSE and CLIP
read a negative on every record or on none.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .data import check_posts, check_text, read_tag_list
from .embed import embed_records
from .index import check_compatible, load, make_index, prepare, search
from .io import InputError, atomic_file, public, read_jsonl, write_jsonl

KINDS = {"positive": ("text", "text"), "pairs": ("image", "text"), "tags": ("text", "tag")}   # query, candidates
SAMPLING = ("top", "random")


def read_records(spec: str) -> tuple[list[dict], str]:
    """The records to mine for and their kind, validated: posts with ``tags``, image-text pairs
    (``image``), or texts with a ``positive``; one line naming file, line and field otherwise."""
    name = "<stdin>" if spec == "-" else spec
    recs = read_jsonl(spec)
    first = recs[0]
    fields = {"tags": ("text",), "pairs": ("text",), "positive": ("text", "positive")}
    kind = "tags" if "tags" in first else "pairs" if "image" in first else "positive" if "positive" in first else None
    if kind is None:
        raise InputError("missing: records to mine for need 'positive' (texts), 'image' (pairs) or 'tags' (posts)",
                         name, first["_line"], "positive")
    for r in recs:
        for f in fields[kind]:
            check_text(r, f, name)
    return (check_posts(recs, name) if kind == "tags" else recs), kind


def _own(rec: dict, kind: str) -> list[str]:
    """The known positives whose score bounds the negatives' (the margin)."""
    return list(rec["tags"]) if kind == "tags" else [rec["text"] if kind == "pairs" else rec["positive"]]


def _known(rec: dict, kind: str) -> set[str]:
    """Candidate values that are never a negative of ``rec``: its positives (and its own text)."""
    return set(rec["tags"]) if kind == "tags" else {rec["text"]} | ({rec["positive"]} if kind == "positive" else set())


def _embed_values(values: list[str], field: str, model: str, device: str, batch_size: int) -> np.ndarray:
    """The target tower's normalised vectors of candidate values (texts, or tags read as text)."""
    recs = [{"id": str(i), field: v, "_line": i + 1} for i, v in enumerate(values)]
    emb, _ = embed_records(recs, "<candidates>", model, device, batch_size, field=field)
    return emb


def select(scores: np.ndarray, rows: np.ndarray, excluded: list[set[int]], positive_scores: np.ndarray,
           num: int, range_min: int, range_max: int, margin: float | None, max_score: float | None,
           sampling: str, rng: random.Random) -> list[list[int]]:
    """The chosen candidate rows per query from its search result (``scores`` / ``rows`` [Q, k], best
    first, -1 = none): rows in ``excluded[q]`` removed, then the rank window, then the score filters
    (``max_score``; ``positive_scores[q] - margin``, skipped where the positive score is NaN), then
    ``num`` by ``sampling``."""
    out = []
    for q in range(len(rows)):
        ranked = [(float(s), int(j)) for s, j in zip(scores[q], rows[q]) if j >= 0 and int(j) not in excluded[q]]
        window = ranked[range_min:range_max]
        limit = min(max_score if max_score is not None else np.inf,
                    positive_scores[q] - margin if margin is not None and np.isfinite(positive_scores[q]) else np.inf)
        kept = [j for s, j in window if s <= limit]
        out.append(kept[:num] if sampling == "top" else sorted(rng.sample(kept, min(num, len(kept))), key=kept.index))
    return out


def mine(records: list[dict], kind: str, name: str, model: str, index: str | None = None, tags: str | None = None,
         num: int = 1, range_min: int = 0, range_max: int = 50, margin: float | None = 0.0,
         max_score: float | None = None, sampling: str = "top", seed: int = 0, batch_size: int = 256,
         device: str = "cpu", progress: Callable[[int], None] | None = None) -> tuple[list[dict], dict]:
    """Hard negatives for ``records`` of ``kind`` (``read_records``) under ``model``; see the module
    docstring. Returns (the records with ``negative``, in input order, without the dropped ones;
    a summary)."""
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if sampling not in SAMPLING:
        raise InputError(f"--sampling must be top or random, got {sampling!r}")
    if range_max <= range_min:
        raise InputError(f"--range-max ({range_max}) must be above --range-min ({range_min})")
    if num > 1 and kind != "tags":
        raise InputError(f"--num {num}: supervised SimCSE and CLIP read one negative per record; several are for "
                         "posts (tags)")
    if tags is not None and kind != "tags":
        raise InputError("--tags is the candidate vocabulary of posts (records with 'tags')")
    query_field, field = KINDS[kind]
    queries, _ = embed_records(records, name, model, device, batch_size, field=query_field, progress=progress)
    own = [_own(r, kind) for r in records]
    if index is not None:
        idx, meta, info = load(index)
        check_compatible(info, queries.shape[1], model, "the model's vectors")
        missing = next((i for i, m in enumerate(meta) if not isinstance(m.get(field), str)), None)
        if missing is not None:
            raise InputError(f"index row {missing} has no '{field}' to write as a negative", index)
        values = [m[field] for m in meta]
        row_of_id = {m["id"]: i for i, m in enumerate(meta)}
        needed = list(dict.fromkeys(v for vs in own for v in vs))
        vectors = dict(zip(needed, _embed_values(needed, field, model, device, batch_size)))
    else:
        if kind == "tags":
            values = read_tag_list(tags) if tags else sorted({t for r in records for t in r["tags"]})
        else:
            values = list(dict.fromkeys(v for vs in own for v in vs))
        row_of_id = {}
        emb = _embed_values(values, field, model, device, batch_size)
        idx = make_index("Flat", emb.shape[1], "ip")
        idx.add(prepare(emb, True))
        vectors = dict(zip(values, emb))
    row_of = {v: i for i, v in enumerate(values)}
    # the record itself (an index row with its id) and its known positives are never negatives
    excluded = [{row_of[v] for v in _known(r, kind) if v in row_of} | (
        {row_of_id[r["id"]]} if r["id"] in row_of_id else set()) for r in records]
    pos_scores = np.array([min((float(q @ vectors[v]) for v in vs if v in vectors), default=np.nan)
                           for q, vs in zip(queries, own)])
    k = min(len(values), range_max + max((len(e) for e in excluded), default=0))
    scores, rows = search(idx, queries, k, True)
    chosen = select(scores, rows, excluded, pos_scores, num, range_min, range_max, margin, max_score, sampling,
                    random.Random(seed))
    out, dropped = [], 0
    for r, picks in zip(records, chosen):
        rec = public(r)
        if kind == "tags":
            rec["negative"] = [values[j] for j in picks]
        elif picks:
            rec["negative"] = values[picks[0]]
        else:
            dropped += 1
            continue
        out.append(rec)
    summary = {"kind": kind, "records": len(records), "written": len(out), "dropped": dropped,
               "without_negatives": sum(1 for r in out if not r["negative"]), "candidates": len(values),
               "model": model, "index": index, "query_field": query_field, "target_field": field,
               "num": num, "range_min": range_min, "range_max": range_max, "margin": margin,
               "max_score": max_score, "sampling": sampling, "seed": seed}
    return out, summary


def write_mined(records: list[dict], kind: str, source: str, out: str | os.PathLike, force: bool = False) -> None:
    """Write mined records as JSONL (atomically); image paths, relative to the source file, are
    rewritten relative to ``out`` so the pairs still open from there."""
    if kind == "pairs":
        src = Path.cwd() if source in ("-", "<stdin>") else Path(source).resolve().parent
        dst = Path(out).resolve().parent
        records = [{**r, "image": os.path.relpath(src / r["image"], dst)} for r in records]
    with atomic_file(out, force=force) as f:
        write_jsonl(f, records)

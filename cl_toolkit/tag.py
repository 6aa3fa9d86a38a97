"""Hashtag generation: rank a tag vocabulary for each post by nearest-neighbour search.

A tagger is a post encoder, the tag vocabulary embedded by a tag encoder in a Faiss index, and
a score calibration. ``cltk pretrain --method cdtom`` writes all three into its run dir
(``encoder/text``, ``encoder/tag``, ``tag_index/``, ``tagger.json``); any text encoder plus a
tag list (``--tags``) is the zero-shot tagger the trained one must beat.

Calibrated scores: a raw cosine means different things for different runs (temperature, heads,
vocabulary). At the end of training, the top ``CALIBRATION_DEPTH`` tags of each held-out post
are labelled right or wrong against its gold tags and a logistic curve
P(right | cosine) = sigmoid(a * cosine + b) is fitted (Platt scaling). The score ``cltk tag``
prints is that probability, so ``--min-score 0.5`` keeps the tags the run itself estimates to
be right at least half the time, whatever the run. Zero-shot taggers have no gold data to
calibrate on; their score is the raw cosine (``"calibrated": false`` in the output's info).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import load_posts, read_tag_list, tag_text
from .encoders import load_encoder
from .index import build, load, make_index, search
from .io import InputError, RunDir, check_range, public, write_json
from .io.run import TAG_INDEX, TAGGER
from .tasks.posts import split_posts

CALIBRATION_DEPTH = 10


# ---------------------------------------------------------------- calibration

def fit_calibration(scores: np.ndarray, labels: np.ndarray, iters: int = 50) -> dict:
    """Platt scaling by Newton's method: (a, b) maximising the likelihood of
    P(label | score) = sigmoid(a * score + b), with a small ridge for stability."""
    x = np.stack([scores.astype(np.float64), np.ones(len(scores))], 1)
    y = labels.astype(np.float64)
    w = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + 1e-6 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return {"a": float(w[0]), "b": float(w[1]), "pairs": len(y), "positive_rate": float(y.mean())}


def calibrate(cal: dict | None, cosine: np.ndarray) -> np.ndarray:
    if cal is None:
        return cosine
    return 1 / (1 + np.exp(-(cal["a"] * cosine + cal["b"])))


# ---------------------------------------------------------------- the tagger

@dataclass
class Tagger:
    post_encoder: torch.nn.Module
    index: object                    # a Faiss index over the normalised tag embeddings
    tags: list[str]
    calibration: dict | None = None
    info: dict = field(default_factory=dict)

    def rank(self, texts: list[str], k: int, batch_size: int = 128, device: str = "cpu",
             progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores [N, k], tag rows [N, k]) for each text, best first."""
        q = self.post_encoder.encode(texts, batch_size=batch_size, device=device, progress=progress)
        cos, rows = search(self.index, q, k, normalize=True)
        return calibrate(self.calibration, cos), rows


def _flat_index(emb: np.ndarray):
    index = make_index("Flat", emb.shape[1], "ip")
    index.add(np.ascontiguousarray(emb, dtype=np.float32))
    return index


def load_tagger(model: str, tags: str | None = None, device: str = "cpu") -> Tagger:
    """A CD-TOM run dir (its post tower, tag index and calibration), or with ``tags`` (a file,
    one tag a line) any text model: the run's tag tower (or the model itself, zero-shot)
    embeds that list."""
    run = RunDir(model)
    is_run = (run.root / TAGGER).is_file()
    post, _ = load_encoder(model, device, tower="text" if is_run else None)
    if getattr(post, "modality", "image") != "text":
        raise InputError("the model is an image encoder; tagging needs a text encoder or a cdtom run", model)
    if tags is not None:
        vocab = read_tag_list(tags)
        tag_enc = load_encoder(model, device, tower="tag")[0] if run.has_tower("tag") else post
        emb = tag_enc.encode([tag_text(t) for t in vocab], device=device)
        meta = json.loads((run.root / TAGGER).read_text()) if is_run else {}
        return Tagger(post, _flat_index(emb), vocab, meta.get("calibration"),
                      {"model": model, "tags": tags, "zero_shot": not is_run})
    if not is_run:
        raise InputError("not a cdtom run dir (no tagger.json); give --tags TAGS.txt to tag zero-shot with a "
                         "text encoder", model)
    meta = json.loads((run.root / TAGGER).read_text())
    index, rows, _ = load(run.root / TAG_INDEX)
    return Tagger(post, index, [r["id"] for r in rows], meta.get("calibration"),
                  {"model": model, "tags": str(run.root / TAG_INDEX), "zero_shot": False})


def tag_posts(tagger: Tagger, records: list[dict], top_k: int = 3, min_score: float | None = None,
              batch_size: int = 128, device: str = "cpu", chunk: int = 8192,
              progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    """One output record per post, in input order:
    ``{"id", ..extra fields.., "tags": [{"tag", "score"}, ...]}`` (best first; ``min_score``
    drops weaker tags, possibly all). The input's own ``text`` and ``tags`` are not copied."""
    check_range("--top-k", top_k, int, 1)
    check_range("--batch-size", batch_size, int, 1)
    if min_score is not None:
        check_range("--min-score", min_score)
    for s in range(0, len(records), chunk):
        part = records[s:s + chunk]
        scores, rows = tagger.rank([r["text"] for r in part], top_k, batch_size, device, progress)
        for r, srow, irow in zip(part, scores, rows, strict=True):
            ranked = [{"tag": tagger.tags[j], "score": round(float(v), 4)} for v, j in zip(srow, irow) if j >= 0
                      and (min_score is None or v >= min_score)]
            extra = {k: v for k, v in public(r).items() if k not in ("id", "text", "tags")}
            yield {"id": r["id"], **extra, "tags": ranked}


# ---------------------------------------------------------------- the end of a cdtom run

def finish_run(run: str | Path, device: str = "cpu") -> dict:
    """The end of a cdtom run, after its towers are exported: embed the vocabulary with the tag
    tower into ``RUN/tag_index`` and fit the score calibration on the run's calibration posts
    (held out by id hash; see ``tasks.posts``) into ``RUN/tagger.json``. Reads the run dir only."""
    rd = RunDir(run)
    cfg = rd.read_config()
    mc = cfg["method_config"]
    split = split_posts(load_posts(cfg["data"]), mc["tags"], mc["calibration_holdout"], cfg["data"])
    vocab = split.vocab
    post_enc, _ = load_encoder(rd.root, device, tower="text")
    tag_enc, _ = load_encoder(rd.root, device, tower="tag")
    emb = tag_enc.encode([tag_text(t) for t in vocab], device=device)
    build(emb, [{"id": t} for t in vocab], rd.root / TAG_INDEX, kind="auto", metric="ip",
          emb_info={"model": str(rd.tower("tag")), "source": "tag vocabulary"}, force=True)
    depth = min(CALIBRATION_DEPTH, len(vocab))
    q = post_enc.encode([p["text"] for p in split.calibration], device=device)
    cos, rows = search(_flat_index(emb), q, depth, normalize=True)
    gold = [set(p["tags"]) for p in split.calibration]
    labels = np.array([[vocab[j] in g for j in row] for row, g in zip(rows, gold)])
    cal = fit_calibration(cos.ravel(), labels.ravel()) if 0 < labels.mean() < 1 else None
    meta = {"vocabulary": len(vocab), "calibration": cal and {**cal, "fitted_on": split.calibrated_on,
                                                             "posts": len(split.calibration), "depth": depth},
            "score": "P(tag is right) = sigmoid(a * cosine + b)" if cal else "cosine"}
    write_json(rd.root / TAGGER, meta)
    return meta


# ---------------------------------------------------------------- evaluation

def tag_metrics(pred: list[dict], gold: list[dict], k: int = 3, pred_name: str = "pred") -> dict:
    """hit@1, hit@k (a gold tag among the first 1 / k), recall@k (share of a post's gold tags
    among its first k) and MRR (1 / rank of the first gold tag, 0 if none is predicted), over
    the gold posts with at least one tag; a gold post missing from ``pred`` counts as a miss."""
    ranked = {}
    for r in pred:
        tags = r.get("tags")
        if not isinstance(tags, list):
            raise InputError("must be a list of tags (strings or {\"tag\", \"score\"})", pred_name,
                             r.get("_line"), "tags")
        ranked[r["id"]] = [t["tag"] if isinstance(t, dict) else t for t in tags]
    h1 = hk = rec = rr = 0.0
    n = missing = 0
    for g in gold:
        truth = set(g.get("tags") or [])
        if not truth:
            continue
        n += 1
        got = ranked.get(g["id"])
        if got is None:
            missing += 1
            continue
        h1 += bool(got[:1] and got[0] in truth)
        hk += any(t in truth for t in got[:k])
        rec += len(truth & set(got[:k])) / len(truth)
        first = next((i for i, t in enumerate(got) if t in truth), None)
        rr += 0.0 if first is None else 1 / (first + 1)
    if n == 0:
        raise InputError("no gold post has tags to evaluate against")
    return {"posts": n, "missing": missing, "hit@1": round(h1 / n, 4), f"hit@{k}": round(hk / n, 4),
            f"recall@{k}": round(rec / n, 4), "mrr": round(rr / n, 4)}

"""Evaluation: weighted kNN classification (and the training-time kNN monitor), the linear probe,
retrieval recall@k and MRR, zero-shot classification."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import collapse
from .data import ImageData, load_labelled, tag_text
from .embed import embed_images
from .encoders import load_encoder
from .index import load, prepare, search
from .io import InputError, check_range, check_vectors, read_embeddings, read_jsonl


@torch.no_grad()
def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, center: bool = False,
                chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN (Wu et al. 2018, the protocol of the SSL literature): cosine similarity,
    the k nearest bank rows vote for their class with weight exp(sim / temperature).
    ``center`` subtracts the bank mean before normalising. Returns class scores [Q, C]."""
    bank, query = bank.float(), query.float()
    if center:
        mu = bank.mean(0, keepdim=True)
        bank, query = bank - mu, query - mu
    bank, query = F.normalize(bank, dim=1), F.normalize(query, dim=1)
    k = min(k, len(bank))
    scores = []
    for i in range(0, len(query), chunk):
        sim, idx = (query[i:i + chunk] @ bank.T).topk(k, dim=1)
        w = (sim / temperature).exp()
        votes = torch.zeros(len(sim), num_classes).scatter_add_(1, bank_labels[idx], w)
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(bank: np.ndarray | torch.Tensor, bank_labels, query, query_labels, k: int = 20,
                 temperature: float = 0.07, center: bool = False) -> dict:
    """Top-1 (and top-5 where there are more than 5 classes) weighted-kNN accuracy."""
    check_range("--k", k, int, 1)
    check_range("--temperature", temperature, float, 0, False)
    bl = torch.as_tensor(np.asarray(bank_labels), dtype=torch.long)
    ql = torch.as_tensor(np.asarray(query_labels), dtype=torch.long)
    if (bl < 0).any() or (ql < 0).any():
        raise InputError("kNN evaluation needs a label on every bank and query record")
    num_classes = int(max(bl.max(), ql.max())) + 1
    scores = knn_predict(torch.as_tensor(bank), bl, torch.as_tensor(query), num_classes, k, temperature, center)
    top = scores.topk(min(5, num_classes), dim=1).indices
    out = {"knn_top1": round(float((top[:, 0] == ql).float().mean()), 4)}
    if num_classes > 5:
        out["knn_top5"] = round(float((top == ql[:, None]).any(1).float().mean()), 4)
    out.update({"k": k, "temperature": temperature, "center": center, "n_bank": len(bl), "n_query": len(ql),
                "classes": num_classes})
    return out


def labelled_features(first: str, second: str, model: str | None = None, device="cpu",
                      names: tuple[str, str] = ("bank", "query")):
    """Features and shared class indices of two labelled sets, for kNN and linear evaluation:
    two embeddings folders (labels from meta.jsonl), or two image data sets embedded with
    ``model``. Returns (x1, y1, x2, y2) with numpy features and integer labels."""
    if model:

        enc, spec = load_encoder(model, device)
        c, s = spec["input"]["channels"], spec["input"]["image_size"]
        a = load_labelled(first, c, s, what=f"--{names[0]}")
        b = load_labelled(second, c, s, a.classes, f"--{names[1]}")
        xa, xb = (embed_images(enc, d.images, normalize=False, device=device) for d in (a, b))
        ya, yb, _ = label_ids(a.records, b.records, (first, second))
        return xa, np.asarray(ya), xb, np.asarray(yb)

    xa, ma, _ = read_embeddings(first)
    xb, mb, _ = read_embeddings(second)
    if xa.shape[1] != xb.shape[1]:
        raise InputError(f"{names[0]} has dimension {xa.shape[1]} but {names[1]} has {xb.shape[1]}", second)
    ya, yb, _ = label_ids(ma, mb, (first, second))
    return xa, np.asarray(ya), xb, np.asarray(yb)


def label_ids(bank_meta: list[dict], query_meta: list[dict], where: tuple[str, str] = ("bank", "query")):
    """String labels of two metadata lists -> shared class indices (bank classes first).
    ``where`` names the two sources in the error for a record without a label."""
    for meta, name in zip((bank_meta, query_meta), where):
        for i, r in enumerate(meta, 1):
            if r.get("label") is None:
                raise InputError("missing (this evaluation needs labels)", f"{name}/meta.jsonl", i, "label")
    classes = sorted({str(r["label"]) for r in bank_meta})
    index = {c: i for i, c in enumerate(classes)}
    for r in query_meta:
        index.setdefault(str(r["label"]), len(index))
    return ([index[str(r["label"])] for r in bank_meta], [index[str(r["label"])] for r in query_meta],
            list(index))


# ---------------------------------------------------------------- retrieval

def relevance(qmeta: list[dict], tmeta: list[dict], ranked: np.ndarray, pairs: dict[str, set[str]] | None = None,
              match_field: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Which ranked targets are relevant. ``ranked`` [Q, depth] holds target rows (-1 = none).
    Relevant: by default the target with the query's id; with ``pairs`` (query id -> target ids)
    the listed targets; with ``match_field`` every target whose field equals the query's.
    Returns (hits bool [Q, depth], has_relevant bool [Q]: the query has a relevant target at all)."""

    valid = ranked >= 0
    safe = np.where(valid, ranked, 0)
    if match_field is not None:
        for name, meta in (("query", qmeta), ("target", tmeta)):
            missing = next((i for i, r in enumerate(meta, 1) if match_field not in r), None)
            if missing is not None:
                raise InputError(f"missing (needed by --match-field) in {name} record {missing}", field=match_field)
        codes: dict[str, int] = {}
        tcode = np.array([codes.setdefault(json.dumps(r[match_field]), len(codes)) for r in tmeta])
        qcode = np.array([codes.get(json.dumps(r[match_field]), -1) for r in qmeta])
        return (tcode[safe] == qcode[:, None]) & valid, qcode >= 0
    tids = np.array([str(r["id"]) for r in tmeta], dtype=object)
    if pairs is None:
        rel = [{str(r["id"])} for r in qmeta]
    else:
        rel = [pairs.get(str(r["id"]), set()) for r in qmeta]
    known = set(tids.tolist())
    has = np.array([bool(s & known) for s in rel])
    hits = np.array([[valid[i, j] and tids[safe[i, j]] in rel[i] for j in range(ranked.shape[1])]
                     for i in range(len(rel))], dtype=bool).reshape(ranked.shape)
    return hits, has


def retrieval_metrics(hits: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    """Recall@k (the share of queries with a relevant target among their first k results, the
    R@K of text-image retrieval papers) and MRR (mean of 1 / rank of the first relevant result,
    0 when none is within the ranking depth). ``hits`` bool [Q, depth]."""
    if len(hits) == 0:
        raise InputError("no query has a relevant target; check the ids, --pairs or --match-field")
    out = {f"recall@{k}": round(float(hits[:, :k].any(axis=1).mean()), 4) for k in ks}
    first = hits.argmax(axis=1)
    rr = np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)
    out["mrr"] = round(float(rr.mean()), 4)
    return out


def read_pairs(path: str) -> dict[str, set[str]]:
    """A JSONL file of ``{"query": QID, "target": TID}`` lines (several lines per query allowed)."""

    pairs: dict[str, set[str]] = {}
    for r in read_jsonl(path, required=("query", "target")):
        pairs.setdefault(str(r["query"]), set()).add(str(r["target"]))
    return pairs


def retrieval_eval(queries: np.ndarray, qmeta: list[dict], targets: np.ndarray | None = None,
                   tmeta: list[dict] | None = None, *, index_dir: str | None = None,
                   pairs: dict[str, set[str]] | None = None, match_field: str | None = None,
                   exclude_self: bool = False, ks: tuple[int, ...] = (1, 5, 10), depth: int = 100) -> dict:
    """Query -> target retrieval quality: recall@1/5/10 and MRR@``depth``. Targets are searched
    exactly (cosine similarity, ``faiss.knn``) or through the index folder ``index_dir`` (its
    metric, tuned parameters and meta). ``exclude_self`` drops a result with the query's own id
    (for queries that are also targets). Queries without any relevant target are left out and
    counted in ``n_without_relevant``."""


    check_vectors(queries, qmeta, "queries")
    if index_dir is not None:
        index, tmeta, info = load(index_dir)
        if queries.shape[1] != info["dim"]:
            raise InputError(f"queries have dimension {queries.shape[1]} but the index has {info['dim']}", index_dir)
        kk = min(depth + exclude_self, index.ntotal)
        _, ranked = search(index, queries, kk, info.get("normalized", False))
        how = {"index": index_dir, "factory": info["factory"], "metric": info["metric"]}
    else:
        assert targets is not None and tmeta is not None
        check_vectors(targets, tmeta, "targets")
        if targets.shape[1] != queries.shape[1]:
            raise InputError(f"queries have dimension {queries.shape[1]} but targets have {targets.shape[1]}")
        kk = min(depth + exclude_self, len(targets))
        _, ranked = faiss.knn(prepare(queries, True), prepare(targets, True), kk,
                              metric=faiss.METRIC_INNER_PRODUCT)
        how = {"search": "exact", "metric": "cosine"}
    if exclude_self:
        tids = np.array([str(r["id"]) for r in tmeta], dtype=object)
        qids = np.array([str(r["id"]) for r in qmeta], dtype=object)
        self_ = (tids[np.where(ranked >= 0, ranked, 0)] == qids[:, None]) & (ranked >= 0)
        ranked = np.take_along_axis(ranked, np.argsort(self_, axis=1, kind="stable"), axis=1)
        ranked = np.where(np.sort(self_, axis=1), -1, ranked)[:, :depth]
    hits, has = relevance(qmeta, tmeta, ranked, pairs, match_field)
    res = retrieval_metrics(hits[has], ks)
    relevant_by = "pairs" if pairs is not None else (f"same {match_field}" if match_field else "same id")
    return {**res, "mrr_depth": int(ranked.shape[1]), "n_query": int(has.sum()),
            "n_without_relevant": int((~has).sum()), "n_target": len(tmeta), "relevant": relevant_by,
            "exclude_self": exclude_self, **how}


# ---------------------------------------------------------------- zero-shot classification

def read_classes(path: str) -> tuple[list[str], list[str]]:
    """A classes file: one class a line, ``label`` or ``label<TAB>name in prompts``; returns
    (labels, names). Without a name, the label is read as words (``ankle-boot`` -> ankle boot)."""


    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", path)
    labels, names = [], []
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, _, name = line.partition("\t")
        labels.append(label.strip())
        names.append(name.strip() or tag_text(label.strip()))
    if len(labels) < 2:
        raise InputError("need at least 2 classes", path)
    return labels, names


def read_templates(path: str | None) -> list[str]:
    if path is None:
        return ["a photo of a {}."]

    if not Path(path).is_file():
        raise InputError("no such file", path)
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    for n, t in enumerate(lines, 1):
        if "{}" not in t:
            raise InputError("a template needs {} where the class name goes", path, n)
    if not lines:
        raise InputError("no templates", path)
    return lines


@torch.no_grad()
def zeroshot(model: str, data: str, classes: str, templates: str | None = None, device="cpu") -> dict:
    """Zero-shot classification with a two-tower (clip) run: each class is the mean of its
    prompts' text embeddings (``templates`` with the class name filled in); an image gets the
    class whose embedding is closest. Returns accuracy, per-class accuracy and the setup."""

    image_enc, ispec = load_encoder(model, device, tower="image")
    text_enc, _ = load_encoder(model, device, tower="text")
    if getattr(text_enc, "modality", "image") != "text" or ispec.get("modality", "image") != "image":
        raise InputError("zero-shot classification needs a run with encoder/image and encoder/text towers", model)
    labels, names = read_classes(classes)
    temps = read_templates(templates)
    inp = ispec["input"]
    ds = load_labelled(data, inp["channels"], inp["image_size"], classes=labels, what="--data")
    bad = next((r for r, y in zip(ds.records, ds.labels.tolist()) if y < 0), None)
    if bad is not None:
        raise InputError(f"label {bad['label']!r} is not in {classes}", bad.get("_src", data), bad.get("_line"),
                         "label")
    prompts = [t.format(n) for n in names for t in temps]
    t = torch.from_numpy(text_enc.encode(prompts, device=device)).view(len(names), len(temps), -1).mean(1)
    t = F.normalize(t, dim=-1)
    x = torch.from_numpy(embed_images(image_enc, ds.images, normalize=True, device=device))
    pred = (x @ t.T).argmax(1)
    y = ds.labels
    per_class = {lab: round(float((pred[y == i] == i).float().mean()), 4) for i, lab in enumerate(labels)
                 if (y == i).any()}
    return {"accuracy": round(float((pred == y).float().mean()), 4), "per_class": per_class, "images": len(y),
            "classes": len(labels), "templates": temps, "prompts_for": dict(zip(labels, names))}


# ---------------------------------------------------------------- collapse diagnostics

def collapse_report(emb: np.ndarray, meta: list[dict], views: tuple[np.ndarray, list[dict]] | None = None,
                    pairs: dict[str, set[str]] | None = None, sample: int = 5000, seed: int = 0) -> dict:
    """Collapse statistics of an embeddings set (``collapse.stats``: per-dimension std against the
    1/sqrt(D) of spread-out embeddings, effective rank, uniformity; alignment where a second view of
    each row is known: ``views`` (another embeddings set, rows matched by id) or ``pairs`` (query
    id -> positive ids within the set)), with the trainer's collapse warnings. Statistics are taken
    on up to ``sample`` rows drawn with ``seed`` (uniformity is quadratic in the rows)."""
    check_range("--sample", sample, int, 2)
    rows = np.arange(len(emb))
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(len(emb), sample, replace=False))
    second, how = None, None
    if views is not None:
        index = {str(r["id"]): i for i, r in enumerate(views[1])}
        rows = np.array([i for i in rows if str(meta[i]["id"]) in index], dtype=np.int64)
        if len(rows) < 2:
            raise InputError("fewer than 2 ids are in both embeddings sets (--views rows are matched by id)")
        second, how = views[0][[index[str(meta[i]["id"])] for i in rows]], "views matched by id"
    elif pairs is not None:
        index = {str(r["id"]): i for i, r in enumerate(meta)}
        found = [(index[q], index[t]) for q, ts in pairs.items() for t in sorted(ts) if q in index and t in index]
        if not found:
            raise InputError("no pair has both ids in the embeddings set", field="pairs")
        a, b = np.array(found[:sample]).T
        align = collapse.stats(torch.from_numpy(emb[a]), torch.from_numpy(emb[b]))["alignment"]
        how = f"{min(len(found), sample)} pairs"
    stats = collapse.stats(torch.from_numpy(emb[rows]), None if second is None else torch.from_numpy(second))
    if pairs is not None:
        stats["alignment"] = align
    out = {k: round(v, 5) for k, v in stats.items()}
    out.update({"dim": int(emb.shape[1]), "rows": int(len(emb)), "rows_used": int(len(rows)),
                "warnings": collapse.warnings_for(stats, len(rows)), "alignment_from": how})
    return out


# ---------------------------------------------------------------- the training-time kNN monitor

def knn_monitor(data: ImageData, query: ImageData | None = None, max_bank: int = 2000, k: int = 20,
                seed: int = 0) -> Callable:
    """A ``pretrain`` monitor measuring weighted-kNN accuracy (k=20, t=0.07) with labelled
    images: ``query`` against ``data``, or without a query a fixed random 20% of (up to
    ``max_bank``) images of ``data`` against the rest."""
    if not data.has_labels:
        raise InputError("kNN monitoring needs labels on every training record (or class subfolders)", data.source)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[:max_bank]
    if query is None:
        n_q = max(1, len(idx) // 5)
        q_imgs, q_lab = data.images[idx[:n_q]], data.labels[idx[:n_q]]
        idx = idx[n_q:]
    else:
        q_imgs, q_lab = query.images, query.labels
    b_imgs, b_lab = data.images[idx], data.labels[idx]

    def monitor(model, state) -> dict:
        encoder = model.encoder
        dev = next(encoder.parameters()).device
        bank = embed_images(encoder, b_imgs, device=dev)
        q = embed_images(encoder, q_imgs, device=dev)
        res = knn_accuracy(bank, b_lab, q, q_lab, k=min(k, len(b_lab)))
        return {key: res[key] for key in ("knn_top1", "knn_top5") if key in res}

    return monitor


# ---------------------------------------------------------------- the linear probe

@dataclass
class LinearHead:
    weight: Tensor       # [C, D]
    bias: Tensor         # [C]
    mean: Tensor         # [D] feature standardisation (zeros / ones when not standardised)
    std: Tensor          # [D]

    def logits(self, x: Tensor) -> Tensor:
        return ((x.float() - self.mean) / self.std) @ self.weight.T + self.bias


def fit_linear(x: Tensor, y: Tensor, num_classes: int, weight_decay: float = 1e-4, max_iter: int = 300,
               standardize: bool = True) -> LinearHead:
    """Multinomial logistic regression on frozen features x [N, D] with labels y [N] (L-BFGS)."""
    x = x.float()
    mean = x.mean(0) if standardize else torch.zeros(x.shape[1])
    std = x.std(0).clamp_min(1e-6) if standardize and len(x) > 1 else torch.ones(x.shape[1])
    xs = (x - mean) / std
    w = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w.T + b, y) + weight_decay / 2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearHead(w.detach(), b.detach(), mean, std)


def accuracy(logits: Tensor, y: Tensor) -> float:
    return round(float((logits.argmax(1) == y).float().mean()), 4) if len(y) else float("nan")


def linear_eval(train_x, train_y, test_x, test_y, weight_decay: float = 1e-4) -> tuple[dict, LinearHead]:
    """Linear-probe top-1 accuracy of test features with a head fitted on the training features."""
    check_range("--weight-decay", weight_decay, float, 0)
    tx, ty = torch.as_tensor(np.asarray(train_x)).float(), torch.as_tensor(np.asarray(train_y)).long()
    qx, qy = torch.as_tensor(np.asarray(test_x)).float(), torch.as_tensor(np.asarray(test_y)).long()
    if len(ty) and (ty < 0).any():
        raise InputError("the linear probe needs a known label on every training record")
    num_classes = int(ty.max()) + 1
    head = fit_linear(tx, ty, num_classes, weight_decay)
    res = {"linear_top1": accuracy(head.logits(qx), qy), "train_top1": accuracy(head.logits(tx), ty),
           "weight_decay": weight_decay, "n_train": len(ty), "n_test": len(qy), "classes": num_classes}
    return res, head

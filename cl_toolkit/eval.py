"""Evaluation: weighted kNN classification (more protocols extend this module)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .io import InputError


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


def label_ids(bank_meta: list[dict], query_meta: list[dict], where: tuple[str, str] = ("bank", "query")):
    """String labels of two metadata lists -> shared class indices (bank classes first)."""
    for meta, name in zip((bank_meta, query_meta), where):
        for i, r in enumerate(meta, 1):
            if "label" not in r:
                raise InputError("missing (kNN evaluation needs labels)", f"{name} meta.jsonl", i, "label")
    classes = sorted({str(r["label"]) for r in bank_meta})
    index = {c: i for i, c in enumerate(classes)}
    for r in query_meta:
        index.setdefault(str(r["label"]), len(index))
    return ([index[str(r["label"])] for r in bank_meta], [index[str(r["label"])] for r in query_meta],
            list(index))

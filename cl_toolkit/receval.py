"""Full-ranking evaluation of recommendations (``cltk eval rec``).

For every user of the test set, the relevant items T_u are that user's test items and R_u is the
user's ranked list (``cltk recommend`` output). A test user without a list counts as a miss
(every metric 0 for that user); users of the predictions without test items are not scored.
Given the training interactions, items a user already interacted with are dropped from R_u
before scoring (history excluded) and the catalogue for coverage is every item of train and test.
With r_1 < r_2 < ... the 1-based ranks of the relevant items in R_u:

    HR@k      = 1 if r_1 <= k else 0
    Recall@k  = |{r <= k}| / |T_u|
    NDCG@k    = sum_{r <= k} 1 / log2(r + 1)  /  sum_{n=1}^{min(|T_u|, k)} 1 / log2(n + 1)
    MRR       = 1 / r_1 (0 when no relevant item is in R_u)
    coverage@k = |union_u of the top k of R_u| / |catalogue|

each averaged over the test users. Full ranking: every catalogue item competes, no sampled negatives.
"""

from __future__ import annotations

import math
from collections import defaultdict

from .io.interactions import Interactions


def relevant(inter: Interactions) -> dict[str, set[str]]:
    """user -> the set of items of that user in ``inter``."""
    out: dict[str, set[str]] = defaultdict(set)
    for u, i in zip(inter.users, inter.items):
        out[u].add(i)
    return dict(out)


def rec_metrics(pred: dict[str, list[str]], test: dict[str, set[str]], ks: tuple[int, ...] = (10, 20),
                seen: dict[str, set[str]] | None = None, catalogue: set[str] | None = None) -> dict:
    """The metrics above for ranked lists ``pred`` (user -> item ids, best first) against ``test``
    (user -> relevant items); ``seen`` (user -> training items) is dropped from the lists."""
    ks = tuple(sorted(set(ks)))
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("hr", "recall", "ndcg")}
    mrr = 0.0
    covered: dict[int, set[str]] = {k: set() for k in ks}
    dropped = missing = 0
    for u, rel in test.items():
        ranked = pred.get(u)
        if ranked is None:
            missing += 1
            continue
        if seen is not None and u in seen:
            before = len(ranked)
            ranked = [i for i in ranked if i not in seen[u]]
            dropped += before - len(ranked)
        hits = [r for r, i in enumerate(ranked, 1) if i in rel]
        if hits:
            mrr += 1 / hits[0]
        for k in ks:
            covered[k].update(ranked[:k])
            top = [r for r in hits if r <= k]
            sums[f"hr@{k}"] += 1.0 if top else 0.0
            sums[f"recall@{k}"] += len(top) / len(rel)
            idcg = sum(1 / math.log2(n + 1) for n in range(1, min(len(rel), k) + 1))
            sums[f"ndcg@{k}"] += sum(1 / math.log2(r + 1) for r in top) / idcg
    n = max(1, len(test))
    out: dict = {"users": len(test), "users_without_predictions": missing,
                 "predicted_users_not_in_test": len(set(pred) - set(test))}
    out.update({m: round(v / n, 6) for m, v in sums.items()})
    out["mrr"] = round(mrr / n, 6)
    if catalogue:
        for k in ks:
            out[f"coverage@{k}"] = round(len(covered[k] & catalogue) / len(catalogue), 6)
        out["catalogue"] = len(catalogue)
    if seen is not None:
        out["seen_items_dropped"] = dropped
    return out


def evaluate(pred: dict[str, list[str]], test: Interactions, train: Interactions | None = None,
             ks: tuple[int, ...] = (10, 20)) -> dict:
    """``rec_metrics`` on interaction files: the catalogue for coverage is every item of train and
    test (without train: of test and the predictions)."""
    catalogue = set(test.items) | (set(train.items) if train is not None else {i for r in pred.values() for i in r})
    return rec_metrics(pred, relevant(test), ks, relevant(train) if train is not None else None, catalogue)

"""Faiss indexes over embeddings: choose a type from size and memory, train, add, measure recall
against exact search, tune the search-time knob, search and match.

The index folder (DESIGN.md) is ``index.faiss``, ``meta.jsonl`` (one record per index row: the
id and the fields passed through from the embeddings folder) and ``info.json`` (factory string,
metric, dim, count, producing model, search parameters, measured recall@10, QPS, memory, build
seconds).

How recall is measured (``build``): ``nq`` rows (1,000, or a tenth of a smaller set) are held
out, the index is built from the other rows, the held-out rows are searched and their top 10
compared with exact ``IndexFlat`` search over the same rows (recall@10 = share of the exact top
10 found). The knob (``nprobe`` for IVF, ``efSearch`` for HNSW, and ``k_factor_rf`` for a
refining index) is swept upwards and bisected to the smallest value whose recall reaches the
target with margin (mean minus two standard errors over the queries, so that other queries from
the same distribution reach it too), and the fastest such setting is kept. Then the held-out
rows are added as the *last* ``nq`` rows of the index, so the final index holds every vector and
the measurement is reproducible: the held-out rows are the last ``recall.queries`` rows of
``meta.jsonl``.

Modules: ``choose`` (factory by size and memory), ``tune`` (knobs, recall, tuning), ``build`` (build,
append), ``shards`` (sharded builds), ``store`` (load, search, model identity). Faiss and numpy
only: nothing here imports torch or a model (embedding queries is ``embed``'s job, matching is
the ``match`` app's).
"""

from .build import build, fill
from .choose import (
    FLAT_MAX,
    HNSW_MAX,
    METRICS,
    RECALL_K,
    choose_factory,
    choose_ivf_factory,
    default_memory,
    estimate_memory,
    make_index,
    parse_memory,
    prepare,
    use_threads,
)
from .shards import build_shard, build_sharded, merge_shards, parse_shard, read_plan, train_shared
from .store import check_compatible, describe, load, model_identity, same_model, search
from .tune import (
    exact_neighbors,
    knob,
    lower_bound,
    measure_qps,
    measure_recall,
    per_query_recall,
    recall_at_k,
    set_params,
    tune,
)

__all__ = [
    "FLAT_MAX", "HNSW_MAX", "METRICS", "RECALL_K", "build", "build_shard", "build_sharded", "check_compatible",
    "choose_factory", "choose_ivf_factory", "default_memory", "describe", "estimate_memory", "exact_neighbors",
    "fill", "knob", "load", "lower_bound", "make_index", "measure_qps", "measure_recall", "merge_shards",
    "model_identity", "parse_memory", "parse_shard", "per_query_recall", "prepare", "read_plan", "recall_at_k",
    "same_model", "search", "set_params", "train_shared", "tune", "use_threads",
]

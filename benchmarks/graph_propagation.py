"""LightGCN propagation on this CPU: torch.sparse CSR against the alternatives (docs/benchmarks.md,
"Graph propagation"). Not a test.

One training step of LightGCN propagates the whole graph K times and back-propagates through it:
out = mean(E_0, A E_0, ..., A^K E_0), loss = sum(out * W), backward. Each implementation of
y = A x (A the symmetric normalised adjacency, 64 dimensions) is timed on that step:

- ``csr_symmetric``: torch CSR forward, and A g for the backward (A is symmetric); what
  ``encoders.graph.spmm`` uses;
- ``csr_autograd``: torch.sparse.mm on CSR with torch's own backward (A^T g through a transpose);
- ``coo_autograd``: torch.sparse.mm on a coalesced COO tensor;
- ``scatter``: gather the neighbours' rows, weight them, ``index_add_`` into the output;
- ``scipy``: scipy.sparse CSR products inside an autograd function (numpy round trips);
- ``dense``: A as a dense matrix (only for graphs up to 10,000 nodes);
- ``pyg_lgconv``: torch_geometric's ``LGConv`` (message passing over edge_index), when importable
  (``--pyg PATH`` adds a folder it was installed into with ``pip install --target``).

Graphs: MovieLens-100k's training graph (the loo split's train + valid: 943 users, 1,682 items),
and a synthetic larger one (``--big``: 50,000 users, 20,000 items, 2,000,000 interactions with
power-law item popularity). Run 1-core rows under ``taskset -c 0``. The JSON records the commit,
the load average before and after each row, threads, repetitions and the median seconds.

    taskset -c 0 python benchmarks/graph_propagation.py --threads 1 --out benchmarks/results/graph_propagation.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch

from cl_toolkit.encoders.graph import normalized_adjacency, spmm
from cl_toolkit.io import write_json
from cl_toolkit.io.interactions import read_interactions
from cl_toolkit.recdata import split
from cl_toolkit.runtime import environment


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ml100k_graph() -> tuple[torch.Tensor, torch.Tensor, int, int]:
    data = read_interactions("ml-100k")
    parts = split(data, "loo", seed=0)
    pairs = set(zip(parts["train"].users + parts["valid"].users, parts["train"].items + parts["valid"].items))
    users, items = sorted({u for u, _ in pairs}), sorted({i for _, i in pairs})
    up, ip = {u: k for k, u in enumerate(users)}, {i: k for k, i in enumerate(items)}
    e = sorted((up[u], ip[i]) for u, i in pairs)
    return torch.tensor([a for a, _ in e]), torch.tensor([b for _, b in e]), len(users), len(items)


def big_graph(n_users=50_000, n_items=20_000, n=2_000_000, seed=0) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    rng = np.random.default_rng(seed)
    pop = 1 / np.arange(1, n_items + 1) ** 0.8
    keys = np.unique(rng.integers(n_users, size=n) * n_items + rng.choice(n_items, size=n, p=pop / pop.sum()))
    return torch.from_numpy(keys // n_items), torch.from_numpy(keys % n_items), n_users, n_items


class ScipySpmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, mat: sp.csr_matrix) -> torch.Tensor:
        ctx.mat = mat
        return torch.from_numpy(mat @ x.detach().numpy())

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return torch.from_numpy(ctx.mat @ g.numpy()), None


def implementations(users, items, n_users, n_items, pyg) -> dict:
    csr = normalized_adjacency(users, items, n_users, n_items)
    coo = csr.to_sparse_coo().coalesce()
    rows, cols = coo.indices()
    w = coo.values()
    mat = sp.csr_matrix((csr.values().numpy(), csr.col_indices().numpy(), csr.crow_indices().numpy()),
                        shape=csr.shape)
    out = {
        "csr_symmetric": lambda x: spmm(csr, x),
        "csr_autograd": lambda x: torch.sparse.mm(csr, x),
        "coo_autograd": lambda x: torch.sparse.mm(coo, x),
        "scatter": lambda x: torch.zeros_like(x).index_add_(0, rows, x[cols] * w[:, None]),
        "scipy": lambda x: ScipySpmm.apply(x, mat),
    }
    if csr.shape[0] <= 10_000:
        dense = csr.to_dense()
        out["dense"] = lambda x: dense @ x
    if pyg is not None:
        conv = pyg.nn.LGConv(normalize=False)
        edge_index = torch.stack([cols, rows])         # messages flow source (col) -> target (row)
        out["pyg_lgconv"] = lambda x: conv(x, edge_index, w)
    return out


def step(fn, ego: torch.Tensor, weight: torch.Tensor, layers: int) -> None:
    e, acc = ego, [ego]
    for _ in range(layers):
        e = fn(e)
        acc.append(e)
    (torch.stack(acc).mean(0) * weight).sum().backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--big-reps", type=int, default=5, help="repetitions on the synthetic graph (seconds each)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="also the synthetic 2M-interaction graph")
    ap.add_argument("--pyg", default=None, help="a folder holding torch_geometric (pip install --target)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pyg = None
    if args.pyg:
        sys.path.insert(0, args.pyg)
    try:
        import torch_geometric as pyg  # optional: only measured when installed
    except ImportError:
        pyg = None
    result = {"benchmark": "graph_propagation", "threads": args.threads, "dim": args.dim, "layers": args.layers,
              "reps": args.reps, "big_reps": args.big_reps, "cpu_affinity": sorted(os.sched_getaffinity(0)),
              "env": environment(),
              "torch_geometric": getattr(pyg, "__version__", None), "argv": sys.argv, "graphs": []}
    graphs = [("ml-100k train+valid", ml100k_graph(), args.reps)]
    if args.big:
        graphs.append(("synthetic 50k x 20k", big_graph(), args.big_reps))
    for name, (users, items, n_users, n_items), reps in graphs:
        g = {"graph": name, "users": n_users, "items": n_items, "edges": len(users), "rows": []}
        torch.manual_seed(0)
        ego = torch.randn(n_users + n_items, args.dim)
        weight = torch.randn(n_users + n_items, args.dim)
        grads = {}
        for impl, fn in implementations(users, items, n_users, n_items, pyg).items():
            x = ego.clone().requires_grad_(True)
            try:
                step(fn, x, weight, args.layers)            # warm-up, and the gradient to compare
            except (RuntimeError, NotImplementedError) as e:   # an implementation this torch lacks
                g["rows"].append({"impl": impl, "error": str(e).splitlines()[0][:200]})
                continue
            grads[impl] = x.grad
            before, times = load(), []
            for _ in range(reps):
                x = ego.clone().requires_grad_(True)
                t0 = time.perf_counter()
                step(fn, x, weight, args.layers)
                times.append(time.perf_counter() - t0)
            row = {"impl": impl, "median_ms": round(1000 * statistics.median(times), 3),
                   "min_ms": round(1000 * min(times), 3), "steps": reps,
                   "max_grad_diff_vs_csr_symmetric": float((grads[impl] - grads["csr_symmetric"]).abs().max()),
                   "load_before": before, "load_after": load()}
            g["rows"].append(row)
            print(json.dumps({"graph": name, **row}), file=sys.stderr, flush=True)
        result["graphs"].append(g)
        write_json(args.out, result)


if __name__ == "__main__":
    main()

"""LightGCN on the user-item graph (He et al. 2020, "LightGCN: Simplifying and Powering Graph
Convolution Network for Recommendation", SIGIR): the encoder of ``lightgcn``, ``sgl`` and
``simgcl``.

The graph has a node per user and per item (users first) and an undirected edge per observed
(user, item) pair. Its symmetrically normalised adjacency, built once from the training pairs,

    A_hat = D^-1/2 A D^-1/2,   A = [[0, R], [R^T, 0]]   (R the binary user x item matrix)

propagates the layer-0 (ego) embeddings E_0 without weights or non-linearities: E_k = A_hat
E_(k-1), and a node's final embedding is the mean of its layers, mean(E_0, ..., E_K) (SimGCL:
mean(E_1, ..., E_K), with noise added to every layer; ``propagate``). The score of (u, i) is the
dot product of their final embeddings.

Propagation is a sparse x dense product per layer (``spmm``): torch's CSR kernel forward, and
since A_hat is symmetric its gradient is A_hat times the incoming gradient, the same kernel again
(``SymmetricSpmm``); benchmarks/graph_propagation.py measured it against COO, the built-in
CSR backward, index_add_ scatter, scipy and torch_geometric's LGConv on this CPU
(docs/benchmarks.md, "Graph propagation").

An exported model is a folder of the final embeddings: ``graph.json`` (the user and item
vocabularies, the dimension) + ``embeddings.safetensors`` (``users`` [U, D], ``items`` [I, D]).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..io import InputError

GRAPH_SPEC = "graph.json"
EMBEDDINGS = "embeddings.safetensors"


def normalized_adjacency(users: Tensor, items: Tensor, n_users: int, n_items: int) -> Tensor:
    """The symmetric D^-1/2 A D^-1/2 of the bipartite graph of the (user, item) pairs ``users[k]``,
    ``items[k]`` (distinct pairs), as a sparse CSR tensor [U + I, U + I]; isolated nodes get an
    empty row."""
    n = n_users + n_items
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    deg = torch.bincount(rows, minlength=n).float()
    inv = deg.clamp(min=1).rsqrt()
    order = torch.argsort(rows * n + cols)                      # row-major: CSR needs sorted rows
    rows, cols = rows[order], cols[order]
    crow = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    with warnings.catch_warnings():      # "sparse CSR support is in beta": the product used here is stable
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols, inv[rows] * inv[cols], (n, n), check_invariants=False)


class SymmetricSpmm(torch.autograd.Function):
    """y = A x for a symmetric sparse A (no gradient to A): the backward is A g, one more product
    with the same CSR matrix instead of torch's transposed-CSR backward. Always float32 (autocast
    off: the sparse kernels have no bf16 path, and propagation is cheap next to the rest)."""

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj
        with torch.autocast(x.device.type, enabled=False):
            return adj @ x.float()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        with torch.autocast(grad.device.type, enabled=False):
            return None, ctx.adj @ grad.float()


def spmm(adj: Tensor, x: Tensor) -> Tensor:
    """A_hat x for the normalised (symmetric) adjacency, in float32."""
    return SymmetricSpmm.apply(adj, x.float())


def propagate(adj: Tensor | list[Tensor], ego: Tensor, layers: int, noise: float = 0.0,
              with_ego: bool = True) -> Tensor:
    """The mean of the layers E_0 (if ``with_ego``), E_1, ..., E_K of ``ego`` [N, D] propagated
    ``layers`` times. ``adj`` is one matrix, or one per layer (SGL's random-walk views). With
    ``noise`` = eps > 0, SimGCL's perturbation after each layer: E_k += sign(E_k) * eps * d / |d|,
    d ~ U(0, 1)^D per node (a random direction in E_k's orthant, of length eps)."""
    mats = adj if isinstance(adj, list) else [adj] * layers
    e, out = ego.float(), [ego.float()] if with_ego else []
    for k in range(layers):
        e = spmm(mats[k], e)
        if noise:
            e = e + torch.sign(e) * F.normalize(torch.rand_like(e), dim=-1) * noise
        out.append(e)
    return torch.stack(out).mean(0)


class LightGCN(nn.Module):
    """Ego embeddings of the users and items (``users``, ``items``, N(0, 0.1)); ``forward(adj)``
    returns their final embeddings (``propagate``) split into users [U, D] and items [I, D]."""

    def __init__(self, n_users: int, n_items: int, dim: int = 64, layers: int = 3):
        super().__init__()
        self.n_users, self.n_items, self.dim, self.layers = n_users, n_items, dim, layers
        self.users, self.items = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)

    def ego(self) -> Tensor:
        return torch.cat([self.users.weight, self.items.weight])

    def forward(self, adj: Tensor | list[Tensor], noise: float = 0.0, with_ego: bool = True) -> tuple[Tensor, Tensor]:
        e = propagate(adj, self.ego(), self.layers, noise, with_ego)
        return e[:self.n_users], e[self.n_users:]


def edge_keep(n_edges: int, ratio: float, device: torch.device | str = "cpu") -> Tensor:
    """SGL's edge dropout as a mask [E]: each (user, item) edge kept with probability 1 - ratio."""
    return torch.rand(n_edges, device=device) >= ratio


def node_keep(users: Tensor, items: Tensor, n_users: int, n_items: int, ratio: float) -> Tensor:
    """SGL's node dropout as an edge mask [E]: each user and item dropped with probability
    ``ratio``, with its edges."""
    du = torch.rand(n_users, device=users.device) < ratio
    di = torch.rand(n_items, device=users.device) < ratio
    return ~(du[users] | di[items])


def save_graph(users: Tensor, items: Tensor, folder: Path, user_ids: list[str], item_ids: list[str],
               extra: dict | None = None) -> None:
    """The final embeddings with their vocabularies."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"users": users.detach().float().cpu().contiguous(), "items": items.detach().float().cpu().contiguous()},
              folder / EMBEDDINGS)
    spec = {"model": "lightgcn", "dim": int(users.shape[1]), "users": user_ids, "items": item_ids, **(extra or {})}
    (folder / GRAPH_SPEC).write_text(json.dumps(spec) + "\n")


def load_graph(folder: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(user embeddings, item embeddings, spec) of an exported graph model."""
    spec_path = Path(folder) / GRAPH_SPEC
    if not spec_path.is_file():
        raise InputError(f"not a graph model folder (no {GRAPH_SPEC})", folder)
    spec = json.loads(spec_path.read_text())
    t = load_file(str(Path(folder) / EMBEDDINGS))
    return t["users"].numpy(), t["items"].numpy(), spec

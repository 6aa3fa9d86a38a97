"""Graph recommendation: LightGCN propagation against a dense reference (values and gradients),
the views of SGL and SimGCL, negative sampling, and lightgcn / sgl / simgcl through the one
trainer on data_samples/rec, then `recommend` from the propagated embeddings (library calls)."""

import numpy as np
import pytest
import torch
from conftest import SAMPLES
from safetensors.numpy import load_file

from cl_toolkit.config import TrainConfig, resolve_config
from cl_toolkit.encoders.graph import (
    LightGCN,
    edge_keep,
    node_keep,
    normalized_adjacency,
    propagate,
)
from cl_toolkit.io.interactions import read_interactions
from cl_toolkit.pipeline import pretrain
from cl_toolkit.recdata import split, write_split
from cl_toolkit.receval import evaluate
from cl_toolkit.recommend import embed_field, recommend

USERS = torch.tensor([0, 0, 1, 1, 1, 2])
ITEMS = torch.tensor([0, 1, 1, 2, 3, 3])        # 3 users, 4 items, 6 edges


def dense_adjacency(n_users=3, n_items=4):
    a = torch.zeros(n_users + n_items, n_users + n_items)
    a[USERS, ITEMS + n_users] = 1
    a[ITEMS + n_users, USERS] = 1
    d = a.sum(1).clamp(min=1).rsqrt()
    return d[:, None] * a * d[None, :]


def test_normalized_adjacency_equals_the_dense_formula():
    adj = normalized_adjacency(USERS, ITEMS, 3, 4)
    assert adj.layout == torch.sparse_csr
    assert torch.allclose(adj.to_dense(), dense_adjacency(), atol=1e-7)
    assert adj.to_dense()[0, 3].item() == pytest.approx(1 / (2 ** 0.5 * 1))     # user 0 (deg 2) - item 0 (deg 1)


def test_propagation_equals_a_dense_reference_values_and_gradients():
    torch.manual_seed(0)
    ego = torch.randn(7, 5, requires_grad=True)
    ref_ego = ego.detach().clone().requires_grad_(True)
    a = dense_adjacency()
    got = propagate(normalized_adjacency(USERS, ITEMS, 3, 4), ego, 3)
    layers = [ref_ego]
    for _ in range(3):
        layers.append(a @ layers[-1])
    want = torch.stack(layers).mean(0)
    assert torch.allclose(got, want, atol=1e-6)
    w = torch.randn(7, 5)
    (got * w).sum().backward()
    (want * w).sum().backward()
    assert torch.allclose(ego.grad, ref_ego.grad, atol=1e-6)        # the symmetric backward is exact
    no_ego = propagate(normalized_adjacency(USERS, ITEMS, 3, 4), ego, 3, with_ego=False)
    assert torch.allclose(no_ego, torch.stack(layers[1:]).mean(0), atol=1e-6)     # SimGCL's mean of layers 1..K


def test_simgcl_noise_has_length_eps_in_the_embeddings_orthant():
    torch.manual_seed(0)
    adj = normalized_adjacency(USERS, ITEMS, 3, 4)
    ego = torch.randn(7, 6)
    clean = adj @ ego
    noisy = propagate(adj, ego, 1, noise=0.1, with_ego=False)
    delta = noisy - clean
    assert torch.allclose(delta.norm(dim=1), torch.full((7,), 0.1), atol=1e-6)
    assert ((delta * clean) >= 0).all()                                        # same sign as the embedding


def test_edge_and_node_dropout():
    torch.manual_seed(0)
    u, i = torch.arange(200) % 50, torch.arange(200) % 40                   # 200 distinct edges

    def whole_nodes(ku, ki):
        """True when the kept edges are exactly the edges between the nodes that are left."""
        left_u, left_i = set(ku.tolist()), set(ki.tolist())
        want = {(a, b) for a, b in zip(u.tolist(), i.tolist()) if a in left_u and b in left_i}
        return set(zip(ku.tolist(), ki.tolist())) == want

    keep = edge_keep(len(u), 0.2)
    ku, ki = u[keep], i[keep]
    assert 140 < len(ku) < 185 and not whole_nodes(ku, ki)                  # about 80% of the edges, any edges
    keep = node_keep(u, i, 50, 40, 0.3)
    nu, ni = u[keep], i[keep]
    assert len(nu) < 150 and whole_nodes(nu, ni)                            # nodes leave with all their edges
    g = LightGCN(3, 4, dim=8, layers=2)
    users, items = g(normalized_adjacency(USERS, ITEMS, 3, 4))
    assert users.shape == (3, 8) and items.shape == (4, 8)


@pytest.fixture(scope="module")
def loo(tmp_path_factory):
    out = tmp_path_factory.mktemp("graph") / "loo"
    write_split(split(read_interactions(SAMPLES / "rec"), "loo"), out)
    return out


def train(method, data, out, epochs=30, **kw):
    cfg = resolve_config({"method": method, "data": str(data), "out": str(out), "epochs": epochs, "batch_size": 128,
                          "lr": 1e-2, "threads": 1, "checkpoint_every": 10000, "log_every": 5, **kw})
    return pretrain(cfg, force=True, quiet=True)


def test_negatives_are_never_observed_items(loo):
    from cl_toolkit.methods import get_method

    cfg = resolve_config({"method": "lightgcn", "data": str(loo / "sample.train.inter"), "out": "unused", "epochs": 1})
    entry = get_method("lightgcn")
    task = entry.cls.task(cfg, entry.cls, torch.device("cpu"))
    torch.manual_seed(0)
    b = task.batch(torch.arange(task.n))
    observed = set(zip(task.users.tolist(), task.items.tolist()))
    assert not any((u, j) in observed for u, j in zip(b["user"].tolist(), b["neg"].tolist()))
    assert task.n == len(observed) and len(set(b["neg"].tolist())) > 40          # spread over the catalogue


@pytest.mark.parametrize("method", ["lightgcn", "sgl", "simgcl"])
def test_graph_methods_learn_and_recommend_unseen_items(method, loo, tmp_path):
    # a small contrastive weight: with 60 users, nearly all in every batch, a strong uniformity term
    # pushes every pair of users apart and erases what they share
    s = train(method, loo / "sample.train.inter", tmp_path / method,
              **({"method_config": {"ssl_weight": 0.02}} if method != "lightgcn" else {}))
    assert s["complete"]
    recs = list(recommend(tmp_path / method, k=10))
    train_data = read_interactions(loo / "sample.train.inter")
    seen = {}
    for u, i in zip(train_data.users, train_data.items):
        seen.setdefault(u, set()).add(i)
    assert len(recs) == 60 and all(len(r["items"]) == 10 and not {x["item"] for x in r["items"]} & seen[r["user"]]
                                   for r in recs)
    m = evaluate({r["user"]: [x["item"] for x in r["items"]] for r in recs},
                 read_interactions(loo / "sample.valid.inter"), train_data)
    assert m["hr@10"] > 0.25                                 # random ranking of the ~64 unseen items: ~0.15
    users, umeta, info = embed_field(tmp_path / method, "user")
    items, meta, _ = embed_field(tmp_path / method, "item")
    assert users.shape == (60, 64) and items.shape == (len(set(train_data.items)), 64) and not info["normalized"]
    top = recs[0]["items"]
    ids = [x["id"] for x in meta]
    assert np.allclose(items[[ids.index(x["item"]) for x in top]] @ users[0], [x["score"] for x in top], atol=1e-4)


def test_graph_fold_in_for_users_of_a_new_history(loo, tmp_path):
    train("lightgcn", loo / "sample.train.inter", tmp_path / "g", epochs=5)
    h = tmp_path / "h.jsonl"
    h.write_text('{"user": "newcomer", "item": "i001", "ts": 1}\n{"user": "newcomer", "item": "i007", "ts": 2}\n')
    items, meta, _ = embed_field(tmp_path / "g", "item")
    recs = list(recommend(tmp_path / "g", users=["newcomer"], k=3, history=str(h)))
    ids = [x["id"] for x in meta]
    mean = items[[ids.index("i001"), ids.index("i007")]].mean(0)
    assert [x["item"] for x in recs[0]["items"]] == [ids[j] for j in np.argsort(-(items @ mean)) if ids[j] not in
                                                    ("i001", "i007")][:3]


def test_sgl_resumes_exactly(loo, tmp_path):
    data = loo / "sample.train.inter"
    full = train("sgl", data, tmp_path / "full", epochs=4)
    cfg = resolve_config({"method": "sgl", "data": str(data), "out": str(tmp_path / "cut"), "epochs": 4,
                          "batch_size": 128, "lr": 1e-2, "threads": 1, "checkpoint_every": 10000})
    assert not pretrain(cfg, quiet=True, stop_at_step=10)["complete"]
    again = pretrain(TrainConfig(out=str(tmp_path / "cut")), resume=True, quiet=True)
    assert again["complete"] and again["steps"] == full["steps"]
    a = load_file(str(tmp_path / "full" / "encoder" / "graph" / "embeddings.safetensors"))
    b = load_file(str(tmp_path / "cut" / "encoder" / "graph" / "embeddings.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)          # views and negatives replayed from the restored RNG

import numpy as np
import pytest
import torch

from cl_toolkit import collapse
from cl_toolkit.eval import knn_accuracy, knn_predict


def test_effective_rank_of_rank_one_and_isotropic():
    v = torch.randn(1, 16)
    z = torch.randn(64, 1) * v
    assert collapse.effective_rank(z) == pytest.approx(1.0, abs=1e-3)
    iso = torch.cat([torch.eye(8), -torch.eye(8)])
    assert collapse.effective_rank(iso) == pytest.approx(8.0, rel=1e-4)


def test_collapsed_embeddings_have_zero_std():
    z = torch.ones(32, 8) + 1e-4 * torch.randn(32, 8)
    s = collapse.stats(z, z)
    assert s["std"] < 1e-3 and s["alignment"] == pytest.approx(0.0, abs=1e-6)
    spread = collapse.stats(torch.randn(512, 8))
    assert spread["std"] == pytest.approx(spread["std_ideal"], rel=0.1)


def test_weighted_knn_hand_example():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    query = torch.tensor([[0.2, 1.0]])
    scores = knn_predict(bank, labels, query, num_classes=2, k=2, temperature=1.0)
    qn = query / query.norm()
    sims = (torch.nn.functional.normalize(bank, dim=1) @ qn.T).flatten()
    # the two nearest are rows 2 (class 1) and 1 (class 0)
    assert scores[0, 1].item() == pytest.approx(sims[2].exp().item(), rel=1e-5)
    assert scores[0, 0].item() == pytest.approx(sims[1].exp().item(), rel=1e-5)


def test_knn_accuracy_on_separable_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    bank = np.concatenate([c + rng.normal(size=(20, 16)) for c in centres])
    query = np.concatenate([c + rng.normal(size=(5, 16)) for c in centres])
    res = knn_accuracy(bank, np.repeat(np.arange(3), 20), query, np.repeat(np.arange(3), 5))
    assert res["knn_top1"] == 1.0 and res["n_bank"] == 60 and res["n_query"] == 15
    wrong = knn_accuracy(bank, np.repeat(np.arange(3), 20), query, np.repeat([1, 2, 0], 5))
    assert wrong["knn_top1"] == 0.0

"""Recommendation losses and feature-masking views against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from cl_toolkit.augment_features import correlated_groups, correlated_masks, feature_masks, random_masks
from cl_toolkit.losses import bpr_loss, info_nce, l2_reg, next_item_ce, node_info_nce, sampled_softmax, twin_bce
from cl_toolkit.recdata import mutual_information


def test_sampled_softmax_logq_and_accidental_hits():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    ids = torch.tensor([10, 20, 10])                 # key 2 is item 10 again: an accidental hit for query 0
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    # query 0: logits 1 + log 2, 0 + log 4, (masked) -> L0 = log(1 + 2/e)
    l0 = math.log(1 + 2 / math.e)
    # query 1: logits 0 + log 2, 1 + log 4, 0.8 + log 4, target 1 -> L1 = log(0.5/e + 1 + e^-0.2)
    l1 = math.log(0.5 / math.e + 1 + math.exp(-0.2))
    got = sampled_softmax(q, k, temperature=1.0, log_q=log_q, ids=ids)
    assert got.item() == pytest.approx((l0 + l1) / 2, abs=1e-6)
    # without the mask the hit counts as a negative: query 0 gets e^(0.6 + log 4) more in its denominator
    l0_hit = math.log(1 + 2 / math.e + 2 * math.exp(0.6) / math.e)
    assert sampled_softmax(q, k, 1.0, log_q).item() == pytest.approx((l0_hit + l1) / 2, abs=1e-6)
    # plain in-batch softmax (no correction, no ids) is InfoNCE
    assert sampled_softmax(q, k[:2], 0.5).item() == pytest.approx(info_nce(q, k[:2], 0.5).item(), abs=1e-6)


def test_sampled_softmax_offset_gathered_keys():
    q = torch.tensor([[0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])       # this rank's query is row 1 of the global batch
    want = -1 + math.log(1 + math.e)
    assert sampled_softmax(q, k, 1.0, offset=1).item() == pytest.approx(want, abs=1e-6)


def test_twin_bce_hand_value():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    keep = torch.tensor([[False, True], [False, False]])   # (1, 0) is co-clicked: not a negative
    # s = 2 * cos - 1: positives s00 = 1, s11 = 0.6; kept negative s01 = 0.2
    sp = lambda x: math.log(1 + math.exp(x))  # noqa: E731
    want = (sp(-1.0) + sp(-0.6)) / 2 + sp(0.2)
    assert twin_bce(z1, z2, 2.0, -1.0, keep).item() == pytest.approx(want, abs=1e-6)
    # default: every off-diagonal pair is a negative (s10 = -1)
    want_all = (sp(-1.0) + sp(-0.6)) / 2 + (sp(0.2) + sp(-1.0)) / 2
    assert twin_bce(z1, z2, 2.0, -1.0).item() == pytest.approx(want_all, abs=1e-6)
    # no negative left: the positive term alone
    assert twin_bce(z1, z2, 2.0, -1.0, torch.zeros(2, 2, dtype=torch.bool)).item() == pytest.approx(
        (sp(-1.0) + sp(-0.6)) / 2, abs=1e-6)


def test_feature_masking_contrastive_hand_value():
    """Yao et al.'s SSL loss: softmax over the batch of the other view, temperature 0.5."""
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    l0 = -1.2 + math.log(math.exp(1.2) + math.exp(0.0))
    l1 = -2.0 + math.log(math.exp(1.6) + math.exp(2.0))
    assert info_nce(z1, z2, 0.5).item() == pytest.approx((l0 + l1) / 2, abs=1e-6)


def test_random_masks_are_complementary_halves():
    g = torch.Generator().manual_seed(0)
    m1, m2 = random_masks(64, 5, g)
    assert (m1 ^ m2).all() and (m1.sum(1) == 2).all()
    assert len({tuple(r.tolist()) for r in m1}) > 3          # not the same mask for every row


def test_mutual_information_and_correlated_groups():
    cats = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 2], [1, 1, 1, 3]])
    mi = mutual_information(cats)
    assert mi[0, 1] == pytest.approx(math.log(2))          # identical columns: MI = entropy
    assert mi[0, 2] == pytest.approx(0.0)                  # independent columns
    assert mi[3, 3] == pytest.approx(math.log(4))
    groups = correlated_groups(mi)
    # seed 0: fields 1 and 3 both have MI log 2 with it; the tie goes to the earlier field
    assert groups[0].tolist() == [True, True, False, False]
    assert groups[2].tolist() == [False, False, True, True]  # field 2's best partner is the id-like field 3
    m1, m2 = correlated_masks(groups, 32, torch.Generator().manual_seed(1))
    assert (m1 ^ m2).all()
    assert all(any((row == groups[s]).all() for s in range(4)) for row in m1)
    mixed1, mixed2 = feature_masks("mixed", 32, 4, groups, torch.Generator().manual_seed(2))
    assert (mixed1 ^ mixed2).all() and (mixed1.sum(1) == 2).all()


def test_next_item_ce_hand_value():
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # row 0: logits (1, 0, 1), target 0; row 1: logits (0, 2, 2), target 2
    l0 = -1 + math.log(2 * math.e + 1)
    l1 = -2 + math.log(1 + 2 * math.exp(2))
    assert next_item_ce(h, items, torch.tensor([0, 2])).item() == pytest.approx((l0 + l1) / 2, abs=1e-6)


def test_bpr_and_l2_hand_values():
    want = (math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2       # -log sigmoid(2-1), -log sigmoid(0-1)
    assert bpr_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])).item() == pytest.approx(want, abs=1e-6)
    # (|(3, 4)|^2 + |(1, 0)|^2 + |(0, 2)|^2 + |(0, 0)|^2) / (2 * 2 rows)
    a, b = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    assert l2_reg(a, b).item() == pytest.approx(30 / 4)


def test_node_info_nce_hand_value():
    """SGL / SimGCL: the batch's distinct nodes, cosine / t, own view-2 embedding the positive."""
    z1 = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])     # node 2 is not in the batch
    z2 = torch.tensor([[0.6, 0.8], [0.0, 3.0], [1.0, 0.0]])
    nodes = torch.tensor([1, 0, 1])                             # node 1 twice: counted once
    # q0 = (1, 0), q1 = (0, 1); k0 = (0.6, 0.8), k1 = (0, 1); t = 0.5
    l0 = -1.2 + math.log(math.exp(1.2) + 1)
    l1 = -2.0 + math.log(math.exp(1.6) + math.exp(2.0))
    assert node_info_nce(z1, z2, nodes, 0.5).item() == pytest.approx((l0 + l1) / 2, abs=1e-6)
    # the two views swapped give the other direction's value
    l0s = -1.2 + math.log(math.exp(1.2) + math.exp(1.6))
    l1s = -2.0 + math.log(1 + math.exp(2.0))
    assert node_info_nce(z2, z1, nodes, 0.5).item() == pytest.approx((l0s + l1s) / 2, abs=1e-6)

"""Hand-value tests of the method-zoo losses (Barlow, VICReg, SwAV, SimSiam's cosine)."""

import math

import pytest
import torch

from cl_toolkit.losses import barlow_loss, negative_cosine, sinkhorn, swav_loss, symmetric_negative_cosine, vicreg_loss


def test_negative_cosine_hand_value_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    z = torch.tensor([[0.0, 1.0], [3.0, 0.0]], requires_grad=True)
    loss = negative_cosine(p, z)
    # cosines 0 and 1/sqrt(2)
    assert loss.item() == pytest.approx(-(1 / math.sqrt(2)) / 2, abs=1e-6)
    loss.backward()
    assert p.grad is not None and z.grad is None


def test_symmetric_negative_cosine_pairs_each_prediction_with_the_other_view():
    p1, z1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    p2, z2 = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]])
    # D(p1, z2) = 0 (orthogonal), D(p2, z1) = 0 -> 0; the same-view pairing would give -1
    assert symmetric_negative_cosine(p1, z1, p2, z2).item() == pytest.approx(0.0, abs=1e-6)
    assert symmetric_negative_cosine(p1, z2, p2, z1).item() == pytest.approx(-1.0, abs=1e-6)


Z = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])  # standardised, uncorrelated columns


def test_barlow_loss_hand_values():
    # identical views with uncorrelated unit-variance dimensions: C = I, loss 0
    assert barlow_loss(Z, Z).item() == pytest.approx(0.0, abs=1e-4)
    # swapped dimensions: C = [[0, 1], [1, 0]] -> 2 on the diagonal + lambd * 2 off it
    assert barlow_loss(Z, Z.flip(1), lambd=0.5).item() == pytest.approx(2 + 0.5 * 2, abs=1e-4)
    # standardisation makes it invariant to the scale and offset of a dimension
    assert barlow_loss(Z * 7 + 3, Z.flip(1), lambd=0.5).item() == pytest.approx(3.0, abs=1e-4)


def test_vicreg_loss_hand_value():
    z1 = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    z2 = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    inv = 4 / 4                                   # one squared difference of 4 among 4 entries
    var = (0 + (0 + (1 - math.sqrt(1e-4))) / 2) / 2  # only z2's constant 2nd dimension is under gamma = 1
    cov = (2**2 + 2**2) / 2 + 0                   # z1's covariance [[2, 2], [2, 2]]; z2's is diagonal
    assert vicreg_loss(z1, z2).item() == pytest.approx(25 * inv + 25 * var + cov, abs=1e-4)
    assert vicreg_loss(z1, z2, 1, 0, 0).item() == pytest.approx(inv, abs=1e-6)


def test_sinkhorn_hand_value_and_equipartition():
    e = math.e
    q = sinkhorn(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), eps=1.0, iters=3)
    assert torch.allclose(q, torch.tensor([[e / (1 + e), 1 / (1 + e)], [1 / (1 + e), e / (1 + e)]]), atol=1e-6)
    torch.manual_seed(0)
    scores = torch.randn(64, 8)
    scores[:, 0] += 3  # every sample prefers prototype 0; the codes must still spread out
    q = sinkhorn(scores, eps=0.5, iters=100)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-4)
    assert torch.allclose(q.sum(0), torch.full((8,), 64 / 8), atol=0.05)
    q3 = sinkhorn(scores)  # SwAV's settings (eps 0.05, 3 iterations): already far from argmax
    assert torch.allclose(q3.sum(1), torch.ones(64), atol=1e-4) and q3.sum(0).max() < 24  # not all 64


def test_swav_loss_hand_value():
    s0, s1 = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]])
    q0, q1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])
    # view 1 predicts q0: -log(3/4); view 0 predicts q1: -(0.5 log 0.5 + 0.5 log 0.5) = log 2
    want = (math.log(4 / 3) + math.log(2)) / 2
    assert swav_loss([s0, s1], [q0, q1], temperature=1.0).item() == pytest.approx(want, abs=1e-6)
    # a third (small-crop) view also predicts both codes; it has no code of its own
    s2 = torch.tensor([[0.0, math.log(3)]])
    want3 = ((math.log(4 / 3) + math.log(4)) / 2 + (math.log(2) + (math.log(4) + math.log(4 / 3)) / 2) / 2) / 2
    assert swav_loss([s0, s1, s2], [q0, q1], temperature=1.0).item() == pytest.approx(want3, abs=1e-6)


@pytest.mark.parametrize("loss", ["info_nce", "nt_xent", "barlow", "vicreg", "swav"])
def test_losses_keep_float32_precision_inside_bf16_autocast(loss):
    import torch.nn.functional as F

    from cl_toolkit import losses

    torch.manual_seed(0)
    z1 = F.normalize(torch.randn(64, 256), dim=1)
    z2 = F.normalize(z1 + 0.3 * torch.randn(64, 256), dim=1)
    fn = {"info_nce": lambda: losses.info_nce(z1, z2, 0.1), "nt_xent": lambda: losses.nt_xent(z1, z2, 0.1),
          "barlow": lambda: losses.barlow_loss(z1, z2), "vicreg": lambda: losses.vicreg_loss(z1, z2),
          "swav": lambda: losses.swav_loss([z1[:, :32] * 10, z2[:, :32] * 10],
                                           [losses.sinkhorn(z2[:, :32] * 10), losses.sinkhorn(z1[:, :32] * 10)])}[loss]
    want = fn().item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn()
    assert got.dtype == torch.float32 and got.item() == pytest.approx(want, rel=1e-5)

import math

import pytest
import torch

from cl_toolkit.losses import byol_loss, info_nce, nt_xent

E = math.e


def test_info_nce_hand_value():
    q = torch.eye(2)
    # row i: -1 + log(e^1 + e^0)
    assert info_nce(q, q, temperature=1.0).item() == pytest.approx(math.log(1 + 1 / E), abs=1e-6)


def test_info_nce_temperature_scales_logits():
    q = torch.eye(2)
    # t = 0.5: -2 + log(e^2 + e^0)
    assert info_nce(q, q, temperature=0.5).item() == pytest.approx(math.log(1 + E**-2), abs=1e-6)


def test_info_nce_mask_removes_known_positive_from_denominator():
    q = torch.eye(2)
    mask = torch.tensor([[False, True], [True, False]])
    assert info_nce(q, q, temperature=1.0, mask=mask).item() == pytest.approx(0.0, abs=1e-6)
    # the diagonal of the mask is ignored: the positive itself is never removed
    full = torch.ones(2, 2, dtype=torch.bool)
    assert info_nce(q, q, temperature=1.0, mask=full).item() == pytest.approx(0.0, abs=1e-6)


def test_nt_xent_hand_value():
    z = torch.eye(2)
    # row a0: positive b0 (sim 1), denominator a1 (0), b0 (1), b1 (0); self excluded
    assert nt_xent(z, z, temperature=1.0).item() == pytest.approx(math.log(1 + 2 / E), abs=1e-6)


def test_nt_xent_mask_drops_all_view_pairs_of_a_known_positive():
    z = torch.eye(2)
    mask = torch.tensor([[False, True], [True, False]])
    # row a0: only b0 remains besides itself -> loss 0
    assert nt_xent(z, z, temperature=1.0, mask=mask).item() == pytest.approx(0.0, abs=1e-6)


def test_nt_xent_equals_two_directional_info_nce_on_orthogonal_views():
    torch.manual_seed(0)
    z1 = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    z2 = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    manual = []
    z = torch.cat([z1, z2])
    sim = z @ z.T / 0.3
    for a in range(16):
        p = (a + 8) % 16
        others = [b for b in range(16) if b != a]
        manual.append(-sim[a, p] + torch.logsumexp(sim[a, others], 0))
    assert nt_xent(z1, z2, 0.3).item() == pytest.approx(torch.stack(manual).mean().item(), abs=1e-5)


def test_byol_loss_hand_value():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    # row 0: 2 - 2 cos = 2; row 1: 2 - 2 / sqrt(2)
    assert byol_loss(p, z).item() == pytest.approx((2 + 2 - math.sqrt(2)) / 2, abs=1e-6)


def test_byol_loss_stops_gradient_into_target():
    p = torch.randn(4, 3, requires_grad=True)
    z = torch.randn(4, 3, requires_grad=True)
    byol_loss(p, z).backward()
    assert p.grad is not None and z.grad is None

"""Negatives and targets: DCL / HCL and CWCL against hand-computed values (and their reduction to
InfoNCE at the neutral settings), the key queue's order, the mining selection rule."""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cl_toolkit.losses import (
    cwcl_targets,
    cwcl_weights,
    debiased_cross_entropy,
    info_nce,
    multi_positive_info_nce,
    nt_xent,
    sampled_softmax,
    soft_target_info_nce,
)
from cl_toolkit.methods import KeyQueue
from cl_toolkit.mine import select

E = math.e
# one query, keys at cosine 1 (the positive), 0 and -1: logits 1, 0, -1 at t = 1
Q = torch.tensor([[1.0, 0.0]])
K = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


def test_dcl_hand_value():
    # R = e^0 + e^-1 (N = 2); Ng = (R - N tau+ e^1) / (1 - tau+), above the floor N e^-1
    ng = (1 + 1 / E - 2 * 0.1 * E) / 0.9
    assert ng > 2 / E
    assert info_nce(Q, K, 1.0, tau_plus=0.1).item() == pytest.approx(-1 + math.log(E + ng), abs=1e-6)


def test_dcl_estimate_is_floored_at_n_exp_min_logit():
    # tau+ = 0.5: R - N tau+ e^1 < 0, so Ng = N e^{-1/t} = 2 / e
    assert info_nce(Q, K, 1.0, tau_plus=0.5).item() == pytest.approx(-1 + math.log(E + 2 / E), abs=1e-6)


def test_hcl_hand_value():
    # weights w_j = softmax(beta * l_j) over the negatives (l = 0, -1), beta = 1:
    # R = N * sum_j w_j e^{l_j} = 2 (1 * 1 + e^-1 * e^-1) / (1 + e^-1)
    r = 2 * (1 + E ** -2) / (1 + 1 / E)
    assert info_nce(Q, K, 1.0, beta=1.0).item() == pytest.approx(-1 + math.log(E + r), abs=1e-6)
    ng = (r - 2 * 0.1 * E) / 0.9
    assert info_nce(Q, K, 1.0, tau_plus=0.1, beta=1.0).item() == pytest.approx(-1 + math.log(E + ng), abs=1e-6)
    # harder negatives weigh more: HCL's estimate exceeds the plain sum
    assert r > 1 + 1 / E


def test_dcl_and_hcl_reduce_to_infonce_at_neutral_settings():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(6, 5), dim=1)
    k = F.normalize(torch.randn(9, 5), dim=1)
    mask = torch.rand(6, 9) < 0.2
    t = 0.1
    logits = (q @ k.T / t).masked_fill(mask & ~torch.eye(6, 9, dtype=torch.bool), float("-inf"))
    target = torch.arange(6)
    plain = F.cross_entropy(logits, target)
    # the formula itself (not the shortcut to cross-entropy) at tau+ = 0, beta = 0
    assert debiased_cross_entropy(logits, target, -1 / t).item() == pytest.approx(plain.item(), abs=1e-5)
    # and every loss that takes the options, a hair away from neutral, lands on its plain value
    for kw in ({"tau_plus": 1e-7}, {"beta": 1e-7}):
        assert info_nce(q, k, t, mask, **kw).item() == pytest.approx(info_nce(q, k, t, mask).item(), abs=1e-4)
        assert nt_xent(q, k[:6], t, **kw).item() == pytest.approx(nt_xent(q, k[:6], t).item(), abs=1e-4)
        pos = torch.eye(6, 9, dtype=torch.bool) | (torch.rand(6, 9) < 0.1)
        prior = torch.log_softmax(torch.randn(9), 0)
        assert multi_positive_info_nce(q, k, pos, t, prior, **kw).item() == pytest.approx(
            multi_positive_info_nce(q, k, pos, t, prior).item(), abs=1e-4)
        ids = torch.tensor([0, 1, 2, 3, 4, 5, 1, 7, 8])
        assert sampled_softmax(q, k, t, prior, ids, **kw).item() == pytest.approx(
            sampled_softmax(q, k, t, prior, ids).item(), abs=1e-4)


def test_dcl_multi_positive_hand_value():
    # one post, tags 0 and 1 gold, tag 2 the only negative (N = 1), t = 1
    pos = torch.tensor([[True, False, True]])
    k = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])       # logits 1, -1, 0; negative: the second key
    terms = []
    for lp in (1.0, 0.0):
        ng = max((math.exp(-1) - 0.2 * math.exp(lp)) / 0.8, math.exp(-1))
        terms.append(-lp + math.log(math.exp(lp) + ng))
    assert multi_positive_info_nce(Q, k, pos, 1.0, tau_plus=0.2).item() == pytest.approx(sum(terms) / 2, abs=1e-6)


def test_cwcl_targets_reduce_to_one_hot_with_an_identity_similarity():
    torch.manual_seed(1)
    q = F.normalize(torch.randn(5, 4), dim=1)
    k = F.normalize(torch.randn(5, 4), dim=1)
    assert torch.equal(cwcl_targets(torch.eye(5)), torch.eye(5))
    assert soft_target_info_nce(q, k, 0.2, cwcl_targets(torch.eye(5))).item() == pytest.approx(
        info_nce(q, k, 0.2).item(), abs=1e-6)


def test_cwcl_weights_and_soft_targets_hand_value():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    w = cwcl_weights(a, b)                          # (1 + cos) / 2
    assert w.flatten().tolist() == pytest.approx([1.0, 0.8, 0.5, 0.9])
    assert cwcl_weights(a, b, 2.0).flatten().tolist() == pytest.approx([1.0, 0.64, 0.25, 0.81])
    targets = cwcl_targets(w)
    assert targets.flatten().tolist() == pytest.approx([1 / 1.8, 0.8 / 1.8, 0.5 / 1.4, 0.9 / 1.4])
    s = (a @ b.T / 0.5).tolist()
    lsm = [[x - math.log(sum(math.exp(y) for y in row)) for x in row] for row in s]
    want = -sum(sum(t * x for t, x in zip(tr, lr)) for tr, lr in zip(targets.tolist(), lsm)) / 2
    assert soft_target_info_nce(a, b, 0.5, targets).item() == pytest.approx(want, abs=1e-6)
    # a masked key leaves the denominator and must carry no target
    mask = torch.tensor([[False, True], [False, False]])
    t2 = cwcl_targets(w.masked_fill(mask, 0))
    want0 = -(0.0 - 0.0)      # query 0: all its target on key 0, the only candidate left -> log 1 = 0
    got = soft_target_info_nce(a[:1], b, 0.5, t2[:1], mask[:1]).item()
    assert got == pytest.approx(want0, abs=1e-6)


def test_key_queue_enqueues_in_order_and_overwrites_the_oldest():
    q = KeyQueue(4, 2, features=1)
    assert not q.valid().any()
    q.push(torch.arange(6.0).view(3, 2), torch.tensor([10, 11, 12]), torch.tensor([[0.1], [0.2], [0.3]]))
    assert q.ids.tolist() == [10, 11, 12, -1] and q.ptr.item() == 3
    assert q.valid().tolist() == [True, True, True, False]
    q.push(torch.full((3, 2), 7.0), torch.tensor([13, 14, 15]))
    assert q.ids.tolist() == [14, 15, 12, 13]                     # 10 and 11, the oldest, are gone
    assert q.ids[q.newest_first()].tolist() == [15, 14, 13, 12]
    assert q.keys[2].tolist() == [4.0, 5.0] and q.features[2].item() == pytest.approx(0.3)
    q.push(torch.zeros(6, 2), torch.arange(20, 26))               # more keys than slots: the newest 4
    assert sorted(q.ids.tolist()) == [22, 23, 24, 25]
    assert q.ids[q.newest_first()].tolist() == [25, 24, 23, 22]


def test_selection_skips_self_and_positives_then_applies_window_and_margin():
    # candidates ranked 0..5 by score; row 0 is the record itself, row 2 its positive
    scores = np.array([[0.99, 0.9, 0.85, 0.8, 0.7, 0.6]])
    rows = np.array([[0, 1, 2, 3, 4, 5]])
    pick = lambda **kw: select(scores, rows, [{0, 2}], np.array([0.85]),  # noqa: E731
                               **{"num": 1, "range_min": 0, "range_max": 10, "margin": None, "max_score": None,
                                  "sampling": "top", "rng": random.Random(0), **kw})[0]
    assert pick() == [1]                                       # the nearest that is neither self nor positive
    assert pick(num=3) == [1, 3, 4]
    assert pick(range_min=1, num=2) == [3, 4]                  # ranks count after removing self and positive
    assert pick(range_max=2, num=5) == [1, 3]
    assert pick(margin=0.0, num=2) == [3, 4]                   # 0.9 > positive's 0.85: a likely false negative
    assert pick(margin=0.1, num=5) == [4, 5]                   # at most 0.85 - 0.1
    assert pick(margin=0.2, num=5) == [5]
    assert pick(max_score=0.75, num=5) == [4, 5]
    got = pick(sampling="random", num=2)
    assert len(got) == 2 and set(got) <= {1, 3, 4, 5}
    nan = select(scores, rows, [{0, 2}], np.array([np.nan]), 1, 0, 10, 0.0, None, "top", random.Random(0))
    assert nan == [[1]]                                        # no positive score: no margin test


def test_option_ranges_are_checked_by_name():
    from cl_toolkit.io import InputError
    from cl_toolkit.methods import get_method, make_config

    for method in ("simclr", "mocov2", "mocov3", "simcse", "cdtom", "clip", "twotower", "featmask"):
        cfg = get_method(method).config
        assert make_config(cfg, {"tau_plus": 0.1, "beta": 0.5}).tau_plus == 0.1, method
        with pytest.raises(InputError, match="tau_plus must be >= 0 and < 1"):
            make_config(cfg, {"tau_plus": 1.0})
        with pytest.raises(InputError, match="beta must be >= 0"):
            make_config(cfg, {"beta": -1.0})
    for key, bad in (("queue", -1), ("dup_rate", 1.5), ("momentum", 2.0)):
        with pytest.raises(InputError, match=key):
            make_config(get_method("simcse").config, {key: bad})


def test_esimcse_settings_are_refused_in_the_other_modes(samples, tiny_bert, tmp_path):
    from cl_toolkit.config import resolve_config
    from cl_toolkit.io import InputError
    from cl_toolkit.methods import get_method
    from cl_toolkit.tasks.text import TextTask

    cfg = resolve_config({"method": "simcse", "data": str(samples / "posts.jsonl"), "out": str(tmp_path / "s"),
                          "encoder": str(tiny_bert), "method_config": {"mode": "unsup", "queue": 32}})
    with pytest.raises(InputError, match="queue is a setting of mode=esimcse"):
        TextTask(cfg, get_method("simcse").cls, torch.device("cpu"))


def test_word_repetition_doubles_inner_tokens_in_place():
    from cl_toolkit.augment import word_repetition

    ids = torch.tensor([[101, 5, 6, 7, 8, 9, 102, 0, 0], [101, 11, 102, 0, 0, 0, 0, 0, 0]])
    mask = (ids > 0).long()
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        out, m = word_repetition(ids, mask, 0.32, g)
        a = out[0, : int(m[0].sum())].tolist()
        assert a[0] == 101 and a[-1] == 102 and sorted(set(a)) == [5, 6, 7, 8, 9, 101, 102]
        assert len(a) - 7 <= max(2, int(0.32 * 7)) and all(a.count(x) <= 2 for x in a)
        assert [x for i, x in enumerate(a) if i == 0 or a[i - 1] != x] == [101, 5, 6, 7, 8, 9, 102]
        assert out[1, : int(m[1].sum())].tolist() in ([101, 11, 102], [101, 11, 11, 102])
        seen.add(len(a))
    assert seen == {7, 8, 9}                       # k uniform in [0, max(2, int(0.32 * 7))] = [0, 2]

"""Text encoders, the text losses, SimCSE."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cl_toolkit.config import TrainConfig, resolve_config
from cl_toolkit.encoders import create_text_encoder, load_encoder
from cl_toolkit.losses import info_nce, multi_positive_info_nce
from cl_toolkit.pipeline import pretrain


def test_mean_pooling_ignores_padding(tiny_bert):
    enc = create_text_encoder(str(tiny_bert))
    short, long = "a short post", "a much longer post with many more words in it than the other one"
    alone = enc.encode([short], normalize=False)
    together = enc.encode([long, short], batch_size=2, normalize=False)   # padded to the long one
    np.testing.assert_allclose(alone[0], together[1], atol=1e-5)


def test_minilm_is_the_real_sentence_encoder():
    enc = create_text_encoder("minilm-l6")
    e = enc.encode(["a cat sits on the mat", "a kitten is sitting on a rug", "the stock market fell today"])
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > 0.5 > e[0] @ e[2]


def test_info_nce_with_extra_negatives_hand_value():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])     # rows 0, 1 positives; row 2 a hard negative
    t = 0.5
    s = (q @ k.T / t).tolist()
    want = (-s[0][0] + math.log(sum(math.exp(x) for x in s[0]))
            - s[1][1] + math.log(sum(math.exp(x) for x in s[1]))) / 2
    assert info_nce(q, k, t).item() == pytest.approx(want, rel=1e-6)


def test_multi_positive_loss_hand_value_and_masking():
    q = F.normalize(torch.tensor([[1.0, 0.2], [0.3, 1.0]]), dim=-1)
    k = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=-1)
    pos = torch.tensor([[True, True, False], [False, False, True]])
    t = 0.1
    s = (q @ k.T / t).tolist()
    lse = lambda xs: math.log(sum(math.exp(x) for x in xs))  # noqa: E731
    terms = [-s[0][0] + lse([s[0][0], s[0][2]]),      # post 0, gold tag 0: tag 1 (also gold) is not a negative
             -s[0][1] + lse([s[0][1], s[0][2]]),
             -s[1][2] + lse([s[1][2], s[1][0], s[1][1]])]
    assert multi_positive_info_nce(q, k, pos, t).item() == pytest.approx(sum(terms) / 3, rel=1e-5)

    # the second gold tag is never a negative: the loss is that of each gold tag with the other removed
    pure = multi_positive_info_nce(q[:1], k[[0, 2]], pos[:1, [0, 2]], t)
    alone = multi_positive_info_nce(q[:1], k[[1, 2]], pos[:1, [1, 2]], t)
    assert multi_positive_info_nce(q[:1], k, pos[:1], t).item() == pytest.approx((pure + alone).item() / 2, rel=1e-5)

    prior = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    s2 = [[x - p for x, p in zip(row, prior.tolist())] for row in (q @ k.T / t).tolist()]
    terms2 = [-s2[0][0] + lse([s2[0][0], s2[0][2]]), -s2[0][1] + lse([s2[0][1], s2[0][2]]),
              -s2[1][2] + lse([s2[1][2], s2[1][0], s2[1][1]])]
    assert multi_positive_info_nce(q, k, pos, t, prior).item() == pytest.approx(sum(terms2) / 3, rel=1e-5)


def _texts(path, n=24):
    words = ["red", "blue", "green", "fast", "slow", "cat", "dog", "car", "tree", "house", "river", "music"]
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for i in range(n):
            w = rng.choice(words, 5)
            rec = {"id": f"s{i}", "text": " ".join(w), "positive": " ".join(w[::-1]),
                   "negative": " ".join(rng.choice(words, 5))}
            f.write(json.dumps(rec) + "\n")
    return path


@pytest.mark.parametrize("mode", ["unsup", "sup"])
def test_simcse_trains_and_exports_a_text_encoder(tiny_bert, tmp_path, mode):
    data = _texts(tmp_path / "texts.jsonl")
    cfg = resolve_config({"method": "simcse", "data": str(data), "out": str(tmp_path / "run"),
                          "encoder": str(tiny_bert), "epochs": 3, "batch_size": 8, "lr": 1e-3, "log_every": 1,
                          "method_config": {"mode": mode}})
    before = create_text_encoder(str(tiny_bert)).model.state_dict()
    summary = pretrain(cfg, quiet=True)
    assert summary["complete"] and summary["steps"] == 9
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(v) for v in losses)
    enc, spec = load_encoder(tmp_path / "run")
    assert spec["modality"] == "text" and spec["embedding_dim"] == 32
    after = enc.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["method_config"]["mode"] == mode and saved["encoder_args"]["max_length"] == 32
    assert isinstance(TrainConfig(**saved), TrainConfig)


def test_top_layers_on_cached_hidden_states_equal_the_full_forward(tiny_bert):
    enc = create_text_encoder(str(tiny_bert), head=True).eval()
    b = enc.tokenize(["one short text", "and a second, somewhat longer text to pad against"])
    with torch.no_grad():
        full = enc(b)
        for layer in (0, 1, 2):
            part = enc.forward_from(enc.hidden_at(b, layer), b["attention_mask"], layer)
            torch.testing.assert_close(part, full, atol=1e-5, rtol=1e-5)


def test_top_layers_run_in_length_groups_with_the_outputs_and_gradients_of_one_padded_batch(tiny_bert):
    from cl_toolkit.encoders import text

    enc = create_text_encoder(str(tiny_bert), head=True).eval()
    gen = torch.Generator().manual_seed(0)
    words = ["tag", "post", "library", "tool", "data", "web"]
    sizes = [28 if k % 16 == 0 else int(n) for k, n in enumerate(torch.randint(1, 8, (2 * text.GROUP_ROWS + 5,),
                                                                              generator=gen))]   # short, a few long
    texts = [" ".join(words[int(j)] for j in torch.randint(0, 6, (n,), generator=gen)) for n in sizes]
    b = enc.tokenize(texts)
    h = enc.hidden_at(b, 1).detach()
    grouped_h, padded_h = h.clone().requires_grad_(), h.clone().requires_grad_()
    grouped = enc.forward_from(grouped_h, b["attention_mask"], 1)
    padded = enc.project(enc._pooled_from(padded_h, b["attention_mask"], 1))    # the whole batch at once
    torch.testing.assert_close(grouped, padded, atol=1e-5, rtol=1e-5)
    weights = torch.randn(grouped.shape, generator=gen)
    (grouped * weights).sum().backward()
    (padded * weights).sum().backward()
    torch.testing.assert_close(grouped_h.grad, padded_h.grad, atol=1e-5, rtol=1e-5)
    lengths = b["attention_mask"].sum(1)
    assert lengths.max() > 2 * lengths.float().median()        # a batch where grouping cuts most padding


@pytest.mark.parametrize("max_bytes", [None, 0])     # in memory, and spilled to a temporary file
def test_token_cache_keeps_each_texts_states_in_half_precision(max_bytes):
    from cl_toolkit.encoders.text import TokenCache, collate_cache

    torch.manual_seed(0)
    states = [torch.randn(n, 8) for n in (3, 1, 5, 2)]
    cache = TokenCache([len(s) for s in states], 8, max_bytes=max_bytes)
    assert (cache.file is not None) == (max_bytes == 0) and cache.nbytes == 11 * 8 * 2
    for r in (2, 0, 3, 1):                                   # any order
        cache.put(r, states[r])
    for r, s in enumerate(states):
        assert torch.equal(cache.get(r), s.half().float())   # float16 storage, float32 out
    batch = collate_cache(cache, [3, 2])
    assert batch["hidden"].shape == (2, 5, 8) and batch["mask"].tolist() == [[1, 1, 0, 0, 0], [1] * 5]
    assert torch.equal(batch["hidden"][0, :2], states[3].half().float())
    with pytest.raises(ValueError, match="expected"):
        cache.put(0, torch.randn(4, 8))

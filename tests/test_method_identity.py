"""What makes each method that method: which views meet which branch, where the stop-gradient
is, what the target network sees. Each test rebuilds the method's loss by hand from its own
modules and checks the method computes exactly that, and that the nearest wrong variant (the
same view twice, a branch swapped, a missing stop-gradient) gives something else."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cl_toolkit.augment import ViewGenerator, preset
from cl_toolkit.data import load_images
from cl_toolkit.encoders import create_encoder
from cl_toolkit.losses import (
    barlow_loss,
    bpr_loss,
    byol_loss,
    info_nce,
    l2_reg,
    next_item_ce,
    node_info_nce,
    nt_xent,
    sinkhorn,
    swav_loss,
    vicreg_loss,
)
from cl_toolkit.methods import get_method, make_config, momentum_schedule, update_momentum

SMALL = {"proj_hidden": 32, "proj_dim": 16}


@pytest.fixture(scope="module")
def views():
    images = load_images(str(Path(__file__).parents[1] / "data_samples" / "fashion")).images[:8]
    torch.manual_seed(0)
    v = ViewGenerator(preset("simclr", 28, 1), 28, 1)(images)
    assert not torch.equal(v[0], v[1])
    return v


def _model(name: str, **mc):
    torch.manual_seed(0)
    entry = get_method(name)
    return entry.cls(create_encoder("convnet-tiny", 1, 28), make_config(entry.config, mc)).eval()


def _grads(model) -> dict:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_simclr_contrasts_the_two_views_of_each_image(views):
    m = _model("simclr", **SMALL)
    with torch.no_grad():
        z = F.normalize(m.projector(m.encoder(torch.cat(views))), dim=-1).split(8)
        loss = m(views, 0.5).loss
    assert loss.item() == pytest.approx(nt_xent(z[0], z[1], 0.2).item(), abs=1e-5)
    assert loss.item() != pytest.approx(nt_xent(z[0], z[0], 0.2).item(), abs=1e-3)


def test_byol_online_predicts_the_target_projection_of_the_other_view(views):
    m = _model("byol", **SMALL, pred_hidden=32)
    with torch.no_grad():
        for p in m.target_encoder.parameters():   # a target different from the online network
            p.add_(0.05 * torch.randn_like(p))
    out = m(views, 0.5)
    with torch.no_grad():
        p = m.predictor(m.projector(m.encoder(torch.cat(views)))).split(8)
        z = m.target_projector(m.target_encoder(torch.cat(views))).split(8)
        zo = m.projector(m.encoder(torch.cat(views))).split(8)
    assert out.loss.item() == pytest.approx((byol_loss(p[0], z[1]) + byol_loss(p[1], z[0])).item(), abs=1e-5)
    assert out.loss.item() != pytest.approx((byol_loss(p[0], zo[1]) + byol_loss(p[1], zo[0])).item(), abs=1e-3)
    out.loss.backward()
    grads = _grads(m)
    assert any(k.startswith("predictor.") for k in grads) and any(k.startswith("encoder.") for k in grads)
    assert not any(k.startswith("target_") for k in grads)       # the target gets no gradient


def test_momentum_targets_follow_their_online_modules_at_the_schedules_rate():
    for name, pairs, rate in (("byol", ("encoder", "projector"), momentum_schedule(0.99, 0.3)),
                              ("mocov3", ("encoder", "projector"), momentum_schedule(0.99, 0.3)),
                              ("directpred", ("encoder", "projector"), momentum_schedule(0.99, 0.3)),
                              ("mocov2", ("encoder", "projector"), 0.99)):
        m = _model(name, **SMALL)
        targets = [t for _, t in m.momentum_pairs()]
        assert [o for o, _ in m.momentum_pairs()] == [getattr(m, a) for a in pairs], name
        with torch.no_grad():
            for p in m.encoder.parameters():
                p.add_(1.0)
        before = [[p.clone() for p in t.parameters()] for t in targets]
        online = [[p.clone() for p in getattr(m, a).parameters()] for a in pairs]
        update_momentum(m, 0.3)
        for t, b, o in zip(targets, before, online):
            for pt, pb, po in zip(t.parameters(), b, o):
                assert torch.allclose(pt, rate * pb + (1 - rate) * po, atol=1e-6), name


def test_simsiam_stops_the_gradient_at_the_projection(views):
    m = _model("simsiam", proj_hidden=32, proj_dim=16, pred_hidden=8)
    m(views, 0.5).loss.backward()
    got = _grads(m)

    def manual(stop: bool) -> dict:
        m.zero_grad()
        z = m.projector(m.encoder(torch.cat(views)))
        p = m.predictor(z).split(8)
        t = (z.detach() if stop else z).split(8)
        loss = -(F.cosine_similarity(p[0], t[1]).mean() + F.cosine_similarity(p[1], t[0]).mean()) / 2
        loss.backward()
        return _grads(m)

    want, without_stop = manual(True), manual(False)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    assert not all(torch.allclose(got[k], without_stop[k], atol=1e-6) for k in without_stop)


@pytest.mark.parametrize("name", ["barlow", "vicreg"])
def test_barlow_and_vicreg_compare_the_projections_of_two_different_views(views, name):
    m = _model(name, proj_hidden=32, proj_dim=16)
    with torch.no_grad():
        z = m.projector(m.encoder(torch.cat(views))).split(8)
        loss = m(views, 0.5).loss.item()
    fn = (lambda a, b: barlow_loss(a, b, m.cfg.lambd)) if name == "barlow" else (
        lambda a, b: vicreg_loss(a, b, m.cfg.sim_weight, m.cfg.var_weight, m.cfg.cov_weight))
    assert loss == pytest.approx(fn(z[0], z[1]).item(), abs=2e-5)
    assert loss != pytest.approx(fn(z[0], z[0]).item(), abs=2e-4)    # the same view twice is another loss


def test_mocov2_queries_meet_the_other_views_key_and_the_queue(views):
    m = _model("mocov2", **SMALL, queue_size=32)
    with torch.no_grad():
        for p in m.key_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = m(views, 0.5)
    with torch.no_grad():
        q = F.normalize(m.projector(m.encoder(torch.cat(views))), dim=-1).split(8)
        k = F.normalize(m.key_projector(m.key_encoder(torch.cat(views))), dim=-1).split(8)
        want = (info_nce(q[0], torch.cat([k[1], m.queue]), 0.2) + info_nce(q[1], torch.cat([k[0], m.queue]), 0.2)) / 2
        no_queue = (info_nce(q[0], k[1], 0.2) + info_nce(q[1], k[0], 0.2)) / 2
    assert out.loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert out.loss.item() != pytest.approx(no_queue.item(), abs=1e-3)
    out.loss.backward()
    assert not any(k.startswith("key_") for k in _grads(m))


def test_mocov3_queries_go_through_the_predictor_keys_do_not(views):
    m = _model("mocov3", **SMALL, pred_hidden=32)
    with torch.no_grad():
        for p in m.momentum_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
        loss = m(views, 0.5).loss
        x = torch.cat(views)
        q = F.normalize(m.predictor(m.projector(m.encoder(x))), dim=-1).split(8)
        k = F.normalize(m.momentum_projector(m.momentum_encoder(x)), dim=-1).split(8)
        kp = F.normalize(m.predictor(m.momentum_projector(m.momentum_encoder(x))), dim=-1).split(8)
    t = m.cfg.temperature
    assert loss.item() == pytest.approx((2 * t * (info_nce(q[0], k[1], t) + info_nce(q[1], k[0], t))).item(), abs=1e-5)
    assert loss.item() != pytest.approx((2 * t * (info_nce(q[0], kp[1], t) + info_nce(q[1], kp[0], t))).item(),
                                        abs=1e-3)


def test_swav_predicts_each_views_codes_from_the_other_view(views):
    m = _model("swav", **SMALL, prototypes=10)
    out = m(views[:2], 0.5)
    with torch.no_grad():
        z = F.normalize(m.projector(m.encoder(torch.cat(views[:2]))), dim=-1)
        scores = list((z @ m.prototypes.weight.T).split(8))
        codes = [sinkhorn(s, m.cfg.sinkhorn_eps, m.cfg.sinkhorn_iters) for s in scores]
    assert out.loss.item() == pytest.approx(swav_loss(scores, codes, m.cfg.temperature).item(), abs=1e-5)
    # swapped: view 1's scores predict view 2's codes; predicting a view's own codes is another loss
    own = -sum((codes[i] * F.log_softmax(scores[i] / m.cfg.temperature, dim=1)).sum(1).mean() for i in (0, 1)) / 2
    assert out.loss.item() != pytest.approx(own.item(), abs=1e-3)
    out.loss.backward()
    assert m.prototypes.weight.grad is not None       # the codes carry no gradient, the scores do


def test_directpred_predictor_is_set_not_trained(views):
    m = _model("directpred", **SMALL)
    assert "predictor" not in dict(m.named_parameters()) and "predictor" in dict(m.named_buffers())
    out = m(views, 0.5)
    with torch.no_grad():
        x = torch.cat(views)
        z = m.projector(m.encoder(x))
        p = (z @ m.predictor.T).split(8)
        zt = m.target_projector(m.target_encoder(x)).split(8)
    assert out.loss.item() == pytest.approx((byol_loss(p[0], zt[1]) + byol_loss(p[1], zt[0])).item(), abs=1e-5)


def test_simcse_unsupervised_views_are_two_dropout_masks(tiny_bert):
    from cl_toolkit.encoders import create_text_encoder

    entry = get_method("simcse")
    enc = create_text_encoder(str(tiny_bert))
    m = entry.cls(enc, make_config(entry.config, {"mode": "unsup"})).train()
    texts = ["a red shoe", "a blue coat", "a green bag", "a red shoe"]
    batch = {"text": enc.tokenize(texts), "ids": torch.tensor([0, 1, 2, 0])}
    torch.manual_seed(1)
    z1, z2 = m.represent(batch, 0.5)
    assert not torch.allclose(z1, z2)                   # dropout: two different views of each sentence
    torch.manual_seed(1)
    loss = m(batch, 0.5).loss
    mask = batch["ids"][:, None] == batch["ids"][None, :]
    assert loss.item() == pytest.approx(info_nce(z1, z2, 0.05, mask).item(), abs=1e-5)
    assert math.isfinite(loss.item()) and loss.item() != pytest.approx(info_nce(z1, z2, 0.05).item(), abs=1e-4)


# ---------------------------------------------------------------- negatives and targets (issue 19)

def _clip_task(samples, tmp_path, tiny_bert, data=None, **mc):
    from cl_toolkit.config import resolve_config
    from cl_toolkit.tasks.pairs import PairsTask

    cfg = resolve_config({"method": "clip", "data": str(data or samples / "pairs.jsonl"), "out": str(tmp_path / "c"),
                          "encoder": "convnet-tiny", "method_config": {"text_encoder": str(tiny_bert), **mc}})
    torch.manual_seed(0)
    return PairsTask(cfg, get_method("clip").cls, torch.device("cpu"))


def _perturb(module, scale=0.05):
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad or p.is_leaf:
                p.add_(scale * torch.randn_like(p))


def test_clip_queue_holds_the_other_modalitys_momentum_keys(samples, tmp_path, tiny_bert):
    task = _clip_task(samples, tmp_path, tiny_bert, queue=16)
    m = task.model.eval()
    assert not any(p.requires_grad for n, p in m.named_parameters() if n.startswith("momentum_"))
    # the locked text transformer is shared with the momentum tower, only its head is copied
    shared = m.momentum_text.model.embeddings.word_embeddings.weight
    assert shared is m.text_encoder.model.embeddings.word_embeddings.weight
    assert m.momentum_text.head.weight is not m.text_encoder.head.weight
    _perturb(m.momentum_image)
    with torch.no_grad():
        m.momentum_text.head.weight.add_(0.05 * torch.randn_like(m.momentum_text.head.weight))
    b1, b2 = task.batch(torch.arange(8)), task.batch(torch.arange(8, 16))
    out = m(b1, 0.5)
    with torch.no_grad():
        img, txt = m.represent(b1, 0.5)
        ki, kt, _ = m._momentum_keys(b1)
    t = 1 / m.logit_scale.exp()
    same = b1["ids"][:, None] == b1["ids"][None, :]
    empty = torch.ones(8, 16, dtype=torch.bool)                # the queue is empty before the first step
    want = (info_nce(img, torch.cat([kt, m.text_queue.keys]), t, torch.cat([same, empty], 1))
            + info_nce(txt, torch.cat([ki, m.image_queue.keys]), t, torch.cat([same, empty], 1))) / 2
    assert out.loss.item() == pytest.approx(want.item(), abs=1e-5)
    online = (info_nce(img, txt, t, same) + info_nce(txt, img, t, same)) / 2
    assert out.loss.item() != pytest.approx(online.item(), abs=1e-4)      # the keys are the momentum towers'
    m.after_step(0.5)
    # the image queries' queue holds momentum *text* keys, the text queries' momentum *image* keys
    assert torch.allclose(m.text_queue.keys[:8], kt) and torch.allclose(m.image_queue.keys[:8], ki)
    assert m.text_queue.ids[:8].tolist() == b1["ids"].tolist() and (m.text_queue.ids[8:] == -1).all()
    # the next step contrasts with them: a queued key of the query's own caption is masked
    out2 = m(b2, 0.5)
    with torch.no_grad():
        img2, txt2 = m.represent(b2, 0.5)
        ki2, kt2, _ = m._momentum_keys(b2)
    same2 = b2["ids"][:, None] == b2["ids"][None, :]
    qmask = (b2["ids"][:, None] == m.text_queue.ids[None, :]) | (m.text_queue.ids < 0)[None, :]
    want2 = (info_nce(img2, torch.cat([kt2, m.text_queue.keys]), t, torch.cat([same2, qmask], 1))
             + info_nce(txt2, torch.cat([ki2, m.image_queue.keys]), t, torch.cat([same2, qmask], 1))) / 2
    assert out2.loss.item() == pytest.approx(want2.item(), abs=1e-5)
    # the EMA covers the trained parts only (the image tower, the text head), at the constant rate
    pairs = m.momentum_pairs()
    assert (m.encoder, m.momentum_image) in pairs and (m.text_encoder.head, m.momentum_text.head) in pairs
    assert all(not isinstance(o, type(m.text_encoder.model)) for o, _ in pairs)
    before = m.momentum_text.head.weight.clone()
    update_momentum(m, 0.7)
    assert torch.allclose(m.momentum_text.head.weight, 0.99 * before + 0.01 * m.text_encoder.head.weight, atol=1e-6)


def test_clip_cwcl_targets_come_from_caption_similarity(samples, tmp_path, tiny_bert):
    from cl_toolkit.losses import cwcl_targets, cwcl_weights, soft_target_info_nce

    task = _clip_task(samples, tmp_path, tiny_bert, cwcl=True, cwcl_power=2.0)
    m = task.model.eval()
    b = task.batch(torch.arange(10))
    loss = m(b, 0.5).loss
    with torch.no_grad():
        img, txt = m.represent(b, 0.5)
    t = 1 / m.logit_scale.exp()
    w = cwcl_weights(b["dup_features"], b["dup_features"], 2.0)
    assert (w.diagonal() > 0.999).all() and ((w > 0) & (w < 0.999)).any()     # soft, not one-hot
    want = (soft_target_info_nce(img, txt, t, cwcl_targets(w)) + soft_target_info_nce(txt, img, t, cwcl_targets(w))) / 2
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    same = b["ids"][:, None] == b["ids"][None, :]
    assert loss.item() != pytest.approx(((info_nce(img, txt, t, same) + info_nce(txt, img, t, same)) / 2).item(),
                                        abs=1e-4)


def test_clip_hard_negative_captions_are_extra_keys_of_the_image_queries(samples, tmp_path, tiny_bert):
    import json as _json

    recs = [_json.loads(x) for x in (samples / "pairs.jsonl").read_text().splitlines()]
    caps = [r["text"] for r in recs]
    for i, r in enumerate(recs):
        r["image"] = str(samples / r["image"])
        r["negative"] = caps[(i + 1) % len(caps)]
    data = tmp_path / "neg.jsonl"
    data.write_text("".join(_json.dumps(r) + "\n" for r in recs))
    task = _clip_task(samples, tmp_path, tiny_bert, data=data)
    m = task.model.eval()
    b = task.batch(torch.arange(6))
    assert "negative" in b
    loss = m(b, 0.5).loss
    with torch.no_grad():
        img, txt, neg = m.represent(b, 0.5)
    t = 1 / m.logit_scale.exp()
    ids, nid = b["ids"], b["negative_ids"]
    same = ids[:, None] == ids[None, :]
    i2t = info_nce(img, torch.cat([txt, neg]), t, torch.cat([same, ids[:, None] == nid[None, :]], 1))
    want = (i2t + info_nce(txt, img, t, same)) / 2                       # texts meet no extra images
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)


def test_esimcse_repeats_tokens_and_queues_momentum_embeddings(tiny_bert, samples, tmp_path):
    from cl_toolkit.config import resolve_config
    from cl_toolkit.tasks.text import TextTask

    cfg = resolve_config({"method": "simcse", "data": str(samples / "posts.jsonl"), "out": str(tmp_path / "s"),
                          "encoder": str(tiny_bert), "method_config": {"mode": "esimcse", "queue": 12}})
    torch.manual_seed(0)
    task = TextTask(cfg, get_method("simcse").cls, torch.device("cpu"))
    m = task.model.train()
    torch.manual_seed(3)
    b1 = task.batch(torch.arange(8))
    # repetition: each repeated sentence is its sentence with some inner tokens written twice, in place
    grew = 0
    for ids, mask, rids, rmask in zip(b1["text"]["input_ids"], b1["text"]["attention_mask"],
                                      b1["repeated"]["input_ids"], b1["repeated"]["attention_mask"]):
        a, r = ids[: int(mask.sum())].tolist(), rids[: int(rmask.sum())].tolist()
        assert _doubled(a, r) and len(r) - len(a) <= max(2, int(0.32 * len(a)))
        grew += len(r) > len(a)
    assert grew >= 2                                   # positives no longer share their length
    with torch.no_grad():
        m.momentum_encoder.model.embeddings.word_embeddings.weight.add_(0.05)
    torch.manual_seed(4)
    out = m(b1, 0.5)
    torch.manual_seed(4)
    z1, z2 = m.represent(b1, 0.5)
    ids = b1["ids"]
    same = ids[:, None] == ids[None, :]
    want = info_nce(z1, torch.cat([z2, m.queue.keys]), 0.05, torch.cat([same, torch.ones(8, 12, dtype=torch.bool)], 1))
    assert out.loss.item() == pytest.approx(want.item(), abs=1e-5)
    m.after_step(0.5)
    with torch.no_grad():
        m.momentum_encoder.eval()
        k = F.normalize(m.momentum_encoder(b1["text"]).float(), dim=-1)
    assert torch.allclose(m.queue.keys[:8], k, atol=1e-6)      # the momentum encoder's, without dropout
    assert not torch.allclose(m.queue.keys[:8], z1.detach(), atol=1e-3)
    assert m.queue.ids[:8].tolist() == ids.tolist() and m.momentum(0.3) == 0.995
    assert m.momentum_pairs() == [(m.encoder, m.momentum_encoder)]


def _doubled(a: list, r: list) -> bool:
    """``r`` is ``a`` with some of its inner tokens (not the first or last) written twice in place."""
    import functools

    @functools.cache
    def ok(i: int, j: int) -> bool:
        if i == len(a):
            return j == len(r)
        if j >= len(r) or r[j] != a[i]:
            return False
        return ok(i + 1, j + 1) or (0 < i < len(a) - 1 and j + 1 < len(r) and r[j + 1] == a[i] and ok(i + 1, j + 2))

    return ok(0, 0)


def test_cdtom_queue_adds_the_momentum_keys_of_tags_missing_from_the_batch(tiny_bert, samples, tmp_path):
    from cl_toolkit.config import resolve_config
    from cl_toolkit.losses import multi_positive_info_nce
    from cl_toolkit.tasks.posts import PostsTask

    cfg = resolve_config({"method": "cdtom", "data": str(samples / "posts.jsonl"), "out": str(tmp_path / "t"),
                          "encoder": str(tiny_bert), "method_config": {"queue": 64, "finetune_layers": 1}})
    torch.manual_seed(0)
    task = PostsTask(cfg, get_method("cdtom").cls, torch.device("cpu"))
    m = task.model.eval()
    b1, b2 = task.batch(torch.arange(0, 6)), task.batch(torch.arange(60, 66))
    m(b1, 0.5)
    m.after_step(0.5)
    with torch.no_grad():
        k1 = F.normalize(m.momentum_tags.from_cache(b1["tags"], m.start).float(), dim=-1)
    n1 = len(b1["tag_ids"])
    assert torch.allclose(m.tag_queue.keys[:n1], k1, atol=1e-6)
    assert m.tag_queue.ids[:n1].tolist() == b1["tag_ids"].tolist()
    loss = m(b2, 0.5).loss
    with torch.no_grad():
        p = F.normalize(m.encoder.from_cache(b2["posts"], m.start).float(), dim=-1)
        t = F.normalize(m.tag_encoder.from_cache(b2["tags"], m.start).float(), dim=-1)
    extra = [j for j, i in enumerate(b1["tag_ids"].tolist()) if i not in set(b2["tag_ids"].tolist())]
    assert extra                                         # the first batch had tags the second lacks
    keys = torch.cat([t, k1[extra]])
    pos = torch.cat([b2["positives"], torch.zeros(6, len(extra), dtype=torch.bool)], 1)
    want = multi_positive_info_nce(p, keys, pos, 0.05)
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert loss.item() != pytest.approx(multi_positive_info_nce(p, t, b2["positives"], 0.05).item(), abs=1e-4)
    layer = m.tag_encoder.layers()[-1]
    assert any(o is layer for o, _ in m.momentum_pairs())
    assert not any(o is m.tag_encoder.model.embeddings for o, _ in m.momentum_pairs())


# ---------------------------------------------------------------- sequences and graphs

SEQ = {"max_length": 6, "dim": 16, "layers": 1, "heads": 2, "inner": 32, "dropout": 0.0, "attn_dropout": 0.0}


def _seq_model(name: str, **mc):
    from cl_toolkit.encoders.sequence import SASRec

    torch.manual_seed(0)
    entry = get_method(name)
    cfg = make_config(entry.config, {**SEQ, **mc})
    enc = SASRec(12, cfg.max_length, cfg.dim, cfg.layers, cfg.heads, cfg.inner, cfg.dropout, cfg.attn_dropout)
    return entry.cls(enc, cfg).eval()


SEQ_BATCH = {"seq": torch.tensor([[0, 0, 1, 2, 3, 4], [0, 5, 6, 7, 8, 9], [0, 0, 0, 0, 2, 3]]),
             "target": torch.tensor([[0, 0, 2, 3, 4, 5], [0, 6, 7, 8, 9, 10], [0, 0, 0, 0, 3, 11]])}


def test_sasrec_predicts_the_next_item_at_every_position():
    m = _seq_model("sasrec")
    loss = m(SEQ_BATCH, 0.5).loss
    with torch.no_grad():
        h = m.encoder(SEQ_BATCH["seq"])
        valid = SEQ_BATCH["target"] > 0
        table = m.encoder.item_table()
        want = next_item_ce(h[valid], table, SEQ_BATCH["target"][valid] - 1)
        same = next_item_ce(h[valid], table, SEQ_BATCH["seq"][valid] - 1)     # predicting the current item
        last = next_item_ce(h[:, -1], table, SEQ_BATCH["target"][:, -1] - 1)  # the last position only
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert loss.item() != pytest.approx(same.item(), abs=1e-3) and loss.item() != pytest.approx(last.item(), abs=1e-3)


def test_cl4srec_contrasts_two_augmented_views_of_each_sequence():
    m = _seq_model("cl4srec", ssl_weight=0.5, ssl_temperature=0.7, ssl_cosine=False)   # the paper's dot products
    aug1 = torch.tensor([[0, 0, 0, 1, 2, 3], [0, 0, 0, 6, 7, 8], [0, 0, 0, 0, 0, 3]])       # crops
    aug2 = torch.tensor([[0, 0, 1, 13, 3, 4], [0, 5, 13, 7, 13, 9], [0, 0, 0, 0, 3, 2]])  # mask / reorder
    batch = {**SEQ_BATCH, "aug1": aug1, "aug2": aug2}
    loss = m(batch, 0.5).loss
    with torch.no_grad():
        main = _seq_model("sasrec")(SEQ_BATCH, 0.5).loss                 # the same weights (seed 0)
        z1, z2 = m.encoder.last(aug1), m.encoder.last(aug2)
        want = main + 0.5 * nt_xent(z1, z2, 0.7)
        same = main + 0.5 * nt_xent(z1, z1, 0.7)
        plain = main + 0.5 * nt_xent(m.encoder.last(SEQ_BATCH["seq"]), z2, 0.7)
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert loss.item() != pytest.approx(same.item(), abs=1e-3) and loss.item() != pytest.approx(plain.item(), abs=1e-3)


@pytest.mark.parametrize("name", ["cl4srec", "duorec"])
def test_sequence_contrast_on_cosines_normalises_the_last_positions(name):
    views = {"aug1": torch.tensor([[0, 0, 0, 1, 2, 3], [0, 0, 0, 6, 7, 8], [0, 0, 0, 0, 0, 3]]),
             "aug2": torch.tensor([[0, 0, 1, 13, 3, 4], [0, 5, 13, 7, 13, 9], [0, 0, 0, 0, 3, 2]])}
    batch = {**SEQ_BATCH, **views, "sem": views["aug1"], "last": torch.tensor([5, 6, 11])}
    m = _seq_model(name, ssl_weight=0.5, ssl_temperature=0.2, ssl_cosine=True)
    m.eval()                                        # no dropout: the views are the encoder's alone
    loss = m(batch, 0.5).loss
    with torch.no_grad():
        main = _seq_model("sasrec").eval()(SEQ_BATCH, 0.5).loss       # the same weights (seed 0)
        a, b = ((views["aug1"], views["aug2"]) if name == "cl4srec" else (SEQ_BATCH["seq"], views["aug1"]))
        z1, z2 = F.normalize(m.encoder.last(a), dim=-1), F.normalize(m.encoder.last(b), dim=-1)
        mask = None if name == "cl4srec" else batch["last"][:, None] == batch["last"][None, :]
        want = main + 0.5 * nt_xent(z1, z2, 0.2, mask)
        dot = main + 0.5 * nt_xent(m.encoder.last(a), m.encoder.last(b), 0.2, mask)
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert loss.item() != pytest.approx(dot.item(), abs=1e-3)


def test_duorec_positive_is_a_sequence_with_the_same_next_item_and_masks_its_equals():
    m = _seq_model("duorec", ssl_weight=0.3, ssl_temperature=1.0, ssl_cosine=False)    # the paper's dot products
    sem = torch.tensor([[0, 0, 0, 7, 8, 9], [0, 0, 1, 2, 3, 4], [0, 0, 0, 0, 0, 2]])
    batch = {**SEQ_BATCH, "sem": sem, "last": torch.tensor([5, 5, 11])}       # rows 0 and 1 lead to item 5
    loss = m(batch, 0.5).loss
    with torch.no_grad():
        main = _seq_model("sasrec")(SEQ_BATCH, 0.5).loss
        z1, z2 = m.encoder.last(SEQ_BATCH["seq"]), m.encoder.last(sem)
        mask = batch["last"][:, None] == batch["last"][None, :]
        want = main + 0.3 * nt_xent(z1, z2, 1.0, mask)
        unmasked = main + 0.3 * nt_xent(z1, z2, 1.0)
        unsupervised = main + 0.3 * nt_xent(z1, z1, 1.0, mask)             # the dropout view alone
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert loss.item() != pytest.approx(unmasked.item(), abs=1e-3)
    assert loss.item() != pytest.approx(unsupervised.item(), abs=1e-3)


GRAPH_USERS, GRAPH_ITEMS = torch.tensor([0, 0, 1, 1, 2, 2, 3]), torch.tensor([0, 1, 1, 2, 2, 3, 4])
GRAPH_BATCH = {"user": torch.tensor([0, 1, 2, 1]), "pos": torch.tensor([1, 2, 3, 1]), "neg": torch.tensor([4, 0, 0, 3])}


def _graph_model(name: str, **mc):
    from cl_toolkit.encoders.graph import normalized_adjacency

    torch.manual_seed(0)
    entry = get_method(name)
    adj = normalized_adjacency(GRAPH_USERS, GRAPH_ITEMS, 4, 5)
    return entry.cls(4, 5, adj, (GRAPH_USERS, GRAPH_ITEMS), make_config(entry.config, {"dim": 8, **mc}))


def _bpr(m, users, items):
    b, e = GRAPH_BATCH, m.encoder
    u, i, j = users[b["user"]], items[b["pos"]], items[b["neg"]]
    reg = l2_reg(e.users(b["user"]), e.items(b["pos"]), e.items(b["neg"]))
    return bpr_loss((u * i).sum(1), (u * j).sum(1)) + m.cfg.reg_weight * reg


def test_lightgcn_scores_propagated_embeddings_with_bpr():
    m = _graph_model("lightgcn", reg_weight=0.01)
    loss = m(GRAPH_BATCH, 0.5).loss
    with torch.no_grad():
        users, items = m.encoder(m.adj)
        ego_u, ego_i = m.encoder.users.weight, m.encoder.items.weight
        assert loss.item() == pytest.approx(_bpr(m, users, items).item(), abs=1e-6)
        assert loss.item() != pytest.approx(_bpr(m, ego_u, ego_i).item(), abs=1e-4)   # no propagation: MF


def test_sgl_contrasts_two_dropped_edge_views_of_each_node():
    m = _graph_model("sgl", ssl_weight=0.2, ssl_temperature=0.5, drop_ratio=0.3)
    torch.manual_seed(5)
    loss = m(GRAPH_BATCH, 0.5).loss
    with torch.no_grad():
        users, items = m.encoder(m.adj)
        torch.manual_seed(5)
        v1, v2 = m.view(), m.view()
        assert not torch.equal(v1.to_dense(), v2.to_dense())           # two different dropped-edge graphs
        u1, i1 = m.encoder(v1)
        u2, i2 = m.encoder(v2)
        ssl = node_info_nce(u1, u2, GRAPH_BATCH["user"], 0.5) + node_info_nce(i1, i2, GRAPH_BATCH["pos"], 0.5)
        want = _bpr(m, users, items) + 0.2 * ssl
        full = node_info_nce(users, users, GRAPH_BATCH["user"], 0.5) + node_info_nce(items, items, GRAPH_BATCH["pos"],
                                                                                     0.5)
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert loss.item() != pytest.approx((_bpr(m, users, items) + 0.2 * full).item(), abs=1e-4)   # unperturbed views


def test_simgcl_contrasts_two_noisy_propagations_without_the_ego_layer():
    m = _graph_model("simgcl", ssl_weight=0.4, ssl_temperature=0.3, noise=0.2)
    torch.manual_seed(7)
    loss = m(GRAPH_BATCH, 0.5).loss
    with torch.no_grad():
        users, items = m.encoder(m.adj, with_ego=False)
        torch.manual_seed(7)
        u1, i1 = m.encoder(m.adj, noise=0.2, with_ego=False)
        u2, i2 = m.encoder(m.adj, noise=0.2, with_ego=False)
        t = 0.3
        ssl = node_info_nce(u1, u2, GRAPH_BATCH["user"], t) + node_info_nce(i1, i2, GRAPH_BATCH["pos"], t)
        want = _bpr(m, users, items) + 0.4 * ssl
        ego_u, ego_i = m.encoder(m.adj)                                  # LightGCN's mean with the ego layer
        with_ego = _bpr(m, ego_u, ego_i) + 0.4 * ssl
        clean = node_info_nce(users, users, GRAPH_BATCH["user"], t) + node_info_nce(items, items, GRAPH_BATCH["pos"], t)
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert loss.item() != pytest.approx(with_ego.item(), abs=1e-4)
    assert loss.item() != pytest.approx((_bpr(m, users, items) + 0.4 * clean).item(), abs=1e-4)   # no noise

"""CD-TOM training, the tag index, `cltk tag`, `cltk eval tag`, calibration and bad input."""

import json

import numpy as np
import pytest
import torch

from cl_toolkit.config import resolve_config
from cl_toolkit.encoders import load_encoder
from cl_toolkit.index import load, search
from cl_toolkit.pipeline import pretrain
from cl_toolkit.tag import fit_calibration, tag_metrics


def _train(samples, out, encoder, **mc):
    cfg = resolve_config({"method": "cdtom", "data": str(samples / "posts.jsonl"), "out": str(out),
                          "encoder": str(encoder), "epochs": 4, "batch_size": 32, "log_every": 1,
                          "method_config": mc})
    return pretrain(cfg, quiet=True)


@pytest.fixture(scope="module")
def tiny_run(tiny_bert, tmp_path_factory):
    from pathlib import Path

    out = tmp_path_factory.mktemp("cdtom") / "run"
    _train(Path(__file__).resolve().parents[1] / "data_samples", out, tiny_bert)
    return out


def test_cdtom_run_dir_and_tag_index_matches_brute_force(tiny_run, samples):
    for part in ("encoder/text/encoder.json", "encoder/tag/encoder.json", "tag_index/index.faiss", "tagger.json"):
        assert (tiny_run / part).is_file(), part
    from cl_toolkit.data import read_tag_list, tag_text

    vocab = sorted({t for line in (samples / "posts.jsonl").read_text().splitlines() for t in json.loads(line)["tags"]})
    index, meta, info = load(tiny_run / "tag_index")
    assert sorted(r["id"] for r in meta) == vocab == sorted(read_tag_list(str(samples / "tags.txt")))
    tag_enc, _ = load_encoder(tiny_run, tower="tag")
    post_enc, _ = load_encoder(tiny_run, tower="text")
    tags = [r["id"] for r in meta]
    t = tag_enc.encode([tag_text(x) for x in tags])
    q = post_enc.encode(["a music player for the desktop", "library for xml parsing"])
    brute = np.argsort(-(q @ t.T), axis=1)[:, :5]
    _, rows = search(index, q, 5, normalize=True)
    assert (rows == brute).all()


def test_cdtom_finetunes_only_the_top_layer(tiny_bert, tmp_path, samples):
    base, _ = load_encoder(tiny_bert)
    _train(samples, tmp_path / "run", tiny_bert, finetune_layers=1)
    post, _ = load_encoder(tmp_path / "run", tower="text")
    b, a = base.model.state_dict(), post.model.state_dict()
    changed = {k for k in b if not torch.equal(b[k], a[k])}
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed)
    assert not torch.equal(post.head.weight, torch.eye(32))


def test_cdtom_towers_share_the_frozen_weights_and_train_their_own(tiny_bert, samples):
    from cl_toolkit.encoders import create_text_encoder
    from cl_toolkit.methods.cdtom import CDTOM, Config

    m = CDTOM(create_text_encoder(tiny_bert, 32, head=True), Config(finetune_layers=1), start_layer=1)
    post, tag = dict(m.encoder.named_parameters()), dict(m.tag_encoder.named_parameters())
    assert post.keys() == tag.keys()
    for name, p in post.items():     # one copy of what is frozen, two of what trains
        assert (p is tag[name]) == (not p.requires_grad), name
    assert any(not p.requires_grad for p in post.values()) and any(p.requires_grad for p in post.values())


def test_cdtom_beats_zero_shot_and_cli_tags(cli, tmp_path, samples):
    """The real MiniLM: heads trained on the sample posts rank their gold tags better than the
    zero-shot tagger with the same tag list (a fit on the training posts, a real learning signal)."""
    run = tmp_path / "run"
    r = cli("pretrain", "--method", "cdtom", "--data", samples / "posts.jsonl", "--out", run, "--epochs", 30,
            "--batch-size", 32, "--quiet")
    assert r.returncode == 0, r.stderr
    trained = cli("tag", samples / "posts.jsonl", "--model", run, "--top-k", 3)
    zero = cli("tag", samples / "posts.jsonl", "--model", "minilm-l6", "--tags", samples / "tags.txt",
               "--out", tmp_path / "zero.jsonl")
    assert trained.returncode == 0 and zero.returncode == 0, trained.stderr + zero.stderr
    lines = [json.loads(x) for x in trained.stdout.splitlines()]
    posts = [json.loads(x) for x in (samples / "posts.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [p["id"] for p in posts]
    assert all(len(x["tags"]) == 3 and 0 <= x["tags"][0]["score"] <= 1 for x in lines)
    assert all(x["tags"][0]["score"] >= x["tags"][1]["score"] >= x["tags"][2]["score"] for x in lines)
    (tmp_path / "trained.jsonl").write_text(trained.stdout)
    ev = {name: json.loads(cli("eval", "tag", "--pred", tmp_path / f"{name}.jsonl", "--gold",
                               samples / "posts.jsonl").stdout) for name in ("trained", "zero")}
    assert ev["trained"]["hit@1"] > ev["zero"]["hit@1"] + 0.2
    # --min-score filters on the calibrated score; stdin works
    r = cli("tag", "-", "--model", run, "--min-score", 0.5, input=(samples / "posts.jsonl").read_text())
    kept = [t["score"] for x in r.stdout.splitlines() for t in json.loads(x)["tags"]]
    assert r.returncode == 0 and all(s >= 0.5 for s in kept)
    assert 0 < len(kept) < 3 * len(posts)     # the filter kept some tags and dropped others
    # the posts tower embeds text, the tag tower tags
    r = cli("embed", run, "--input", samples / "posts.jsonl", "--out", tmp_path / "emb", "--quiet")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "emb" / "embeddings.npy").shape == (len(posts), 384)


def test_eval_tag_metrics_by_hand():
    pred = [{"id": "a", "tags": [{"tag": "x", "score": 0.9}, {"tag": "y", "score": 0.5}, {"tag": "z", "score": 0.1}]},
            {"id": "b", "tags": ["q", "x", "w"]}]
    gold = [{"id": "a", "tags": ["x", "z", "v"]}, {"id": "b", "tags": ["w"]}, {"id": "c", "tags": ["x"]}]
    m = tag_metrics(pred, gold)
    assert m["posts"] == 3 and m["missing"] == 1
    assert m["hit@1"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["hit@3"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["recall@3"] == pytest.approx((2 / 3 + 1) / 3, abs=1e-4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3) / 3, abs=1e-4)


def test_calibration_recovers_a_logistic_curve():
    rng = np.random.default_rng(0)
    s = rng.uniform(-0.2, 0.9, 20000)
    y = rng.uniform(size=len(s)) < 1 / (1 + np.exp(-(8 * s - 3)))
    cal = fit_calibration(s, y)
    assert cal["a"] == pytest.approx(8, rel=0.1) and cal["b"] == pytest.approx(-3, rel=0.1)


@pytest.mark.parametrize("line,field", [
    ('{"id": "p1", "tags": ["a"]}', "text"),
    ('{"id": "p1", "text": "  ", "tags": ["a"]}', "text"),
    ('{"id": "p1", "text": "hello", "tags": "a, b"}', "tags"),
])
def test_bad_posts_give_one_line_and_exit_2(cli, tmp_path, line, field):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "p0", "text": "fine", "tags": ["a"]}\n' + line + "\n")
    r = cli("pretrain", "--method", "cdtom", "--data", bad, "--out", tmp_path / "run")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and f"bad.jsonl:2: field '{field}'" in r.stderr
    assert not (tmp_path / "run").exists()


def test_empty_vocabulary_is_refused(cli, tmp_path, samples):
    (tmp_path / "tags.txt").write_text("# nothing here\n\n")
    r = cli("tag", samples / "posts.jsonl", "--model", "minilm-l6", "--tags", tmp_path / "tags.txt")
    assert r.returncode == 2 and "no tags (empty vocabulary)" in r.stderr
    r = cli("tag", samples / "posts.jsonl", "--model", "minilm-l6")
    assert r.returncode == 2 and "--tags" in r.stderr


def test_cdtom_resume_ends_with_the_same_weights(tiny_bert, tmp_path, samples):
    # threads pinned: left free, the count follows the other processes' load, and a sum over another
    # number of threads differs in its last bits (a bit-exact resume needs a fixed --threads)
    def cfg(out):
        return resolve_config({"method": "cdtom", "data": str(samples / "posts.jsonl"), "out": str(out),
                               "encoder": str(tiny_bert), "epochs": 3, "batch_size": 32, "checkpoint_every": 2,
                               "threads": 1})     # a pinned count: threads that follow free cores change sums

    pretrain(cfg(tmp_path / "a"), quiet=True)
    pretrain(cfg(tmp_path / "b"), quiet=True, stop_at_step=5)
    pretrain(cfg(tmp_path / "b"), quiet=True, resume=True)
    a, _ = load_encoder(tmp_path / "a", tower="text")
    b, _ = load_encoder(tmp_path / "b", tower="text")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k

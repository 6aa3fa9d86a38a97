"""CLIP dual towers: the symmetric loss, learning on sample pairs, zero-shot, cross-modal match, bad input."""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from cl_toolkit.config import resolve_config
from cl_toolkit.embed import embed
from cl_toolkit.eval import retrieval_eval, zeroshot
from cl_toolkit.losses import clip_loss
from cl_toolkit.pipeline import pretrain


def test_clip_loss_hand_value_with_duplicate_mask():
    img = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=-1)
    txt = F.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0], [0.1, 1.0]]), dim=-1)
    scale = 5.0
    s = (scale * img @ txt.T).tolist()
    lse = lambda xs: math.log(sum(math.exp(x) for x in xs))  # noqa: E731
    # texts 1 and 2 are the same caption: pairs (1, 2) and (2, 1) are masked in both directions
    i2t = [-s[0][0] + lse(s[0]), -s[1][1] + lse([s[1][0], s[1][1]]), -s[2][2] + lse([s[2][0], s[2][2]])]
    cols = list(zip(*s))
    t2i = [-cols[0][0] + lse(cols[0]), -cols[1][1] + lse([cols[1][0], cols[1][1]]),
           -cols[2][2] + lse([cols[2][0], cols[2][2]])]
    mask = torch.tensor([[True, False, False], [False, True, True], [False, True, True]])
    want = (sum(i2t) / 3 + sum(t2i) / 3) / 2
    assert clip_loss(img, txt, scale, mask).item() == pytest.approx(want, rel=1e-6)


def _run(samples, out, epochs):
    cfg = resolve_config({"method": "clip", "data": str(samples / "pairs.jsonl"), "out": str(out),
                          "encoder": "convnet-tiny", "epochs": epochs, "batch_size": 25, "lr": 3e-3,
                          "log_every": 1})
    return pretrain(cfg, quiet=True)


def _text_to_image_recall(run, samples):
    t, tmeta, _ = embed(str(run), str(samples / "pairs.jsonl"), field="text")
    i, imeta, _ = embed(str(run), str(samples / "pairs.jsonl"), field="image")
    return retrieval_eval(t, tmeta, i, imeta, match_field="label")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from pathlib import Path

    samples = Path(__file__).resolve().parents[1] / "data_samples"
    out = tmp_path_factory.mktemp("clip") / "run"
    _run(samples, out, 40)
    return out


def test_training_improves_text_to_image_recall(trained, samples, tmp_path):
    _run(samples, tmp_path / "untrained", 0.04)        # one step at learning rate 0: the initial towers
    before = _text_to_image_recall(tmp_path / "untrained", samples)
    after = _text_to_image_recall(trained, samples)
    assert after["recall@1"] > before["recall@1"] + 0.2, (before, after)
    clip = json.loads((trained / "clip.json").read_text())
    assert clip["temperature"] < 0.068                         # learnt: sharper than the initial 0.07
    untrained = json.loads((tmp_path / "untrained" / "clip.json").read_text())["temperature"]
    assert untrained == pytest.approx(0.07, abs=1e-6)
    zs = {name: zeroshot(str(run), str(samples / "fashion"), str(samples / "classes.txt"))["accuracy"]
          for name, run in (("before", tmp_path / "untrained"), ("after", trained))}
    assert zs["after"] > zs["before"] + 0.25, zs              # chance is 0.1
    for tower in ("image", "text"):
        assert json.loads((trained / "encoder" / tower / "encoder.json").read_text())["embedding_dim"] == 384


def test_zeroshot_and_cross_modal_match_cli(cli, trained, samples, tmp_path):
    r = cli("eval", "zeroshot", "--model", trained, "--data", samples / "fashion", "--classes",
            samples / "classes.txt")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert len(res["per_class"]) == 10 and res["images"] == 50
    assert res["accuracy"] > 0.4                              # 10 classes: chance is 0.1
    assert res["accuracy"] == pytest.approx(sum(res["per_class"].values()) / 10, abs=1e-3)   # 5 images a class
    assert cli("embed", trained, "--field", "image", "--input", samples / "pairs.jsonl", "--out",
               tmp_path / "img", "--quiet").returncode == 0
    assert cli("build-index", tmp_path / "img", "--out", tmp_path / "idx", "--quiet").returncode == 0
    r = cli("match", samples / "pairs.jsonl", "--model", trained, "--field", "text", "--index", tmp_path / "idx",
            "--k", 3)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 50 and all(len(x["neighbors"]) == 3 for x in lines)
    same_class = sum(n["label"] == x["label"] for x in lines for n in x["neighbors"][:1]) / len(lines)
    assert same_class > 0.3        # a text query finds images of its class (chance: 0.1)


@pytest.mark.parametrize("edit,field", [
    (lambda r: {**r, "image": "fashion/nope.png"}, "image"),
    (lambda r: {**r, "text": ""}, "text"),
    (lambda r: {k: v for k, v in r.items() if k != "text"}, "text"),
    (lambda r: {**r, "image": "broken.png"}, "image"),
])
def test_bad_pairs_give_one_line_and_exit_2(cli, samples, tmp_path, edit, field):
    shutil.copytree(samples / "fashion", tmp_path / "fashion")
    (tmp_path / "broken.png").write_text("not an image")
    recs = [json.loads(x) for x in (samples / "pairs.jsonl").read_text().splitlines()][:5]
    recs[3] = edit(recs[3])
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    r = cli("pretrain", "--method", "clip", "--data", tmp_path / "pairs.jsonl", "--out", tmp_path / "run")
    assert r.returncode == 2 and f"pairs.jsonl:4: field '{field}'" in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and not (tmp_path / "run").exists()


def test_image_tower_starts_from_a_pretrain_run(samples, tmp_path):
    from cl_toolkit.encoders import load_encoder
    from cl_toolkit.methods import get_method
    from cl_toolkit.tasks.pairs import PairsTask

    img_run = tmp_path / "byol"
    pretrain(resolve_config({"method": "byol", "data": str(samples / "fashion"), "out": str(img_run),
                             "encoder": "convnet-tiny", "epochs": 1, "batch_size": 25}), quiet=True)
    cfg = resolve_config({"method": "clip", "data": str(samples / "pairs.jsonl"), "out": str(tmp_path / "clip"),
                          "encoder": "convnet-tiny", "method_config": {"init_image": str(img_run),
                                                                       "lock_image": True}})
    task = PairsTask(cfg, get_method("clip").cls, torch.device("cpu"))
    want = load_encoder(img_run)[0].backbone.state_dict()
    got = task.model.encoder.backbone.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert not any(p.requires_grad for p in task.model.encoder.backbone.parameters())
    assert task.model.encoder.head.weight.requires_grad


def test_similar_captions_can_count_as_duplicates(samples, tmp_path):
    from cl_toolkit.methods import duplicate_mask, get_method
    from cl_toolkit.tasks.pairs import PairsTask

    def mask(same):
        cfg = resolve_config({"method": "clip", "data": str(samples / "pairs.jsonl"), "out": str(tmp_path / "c"),
                              "encoder": "convnet-tiny", "method_config": {"same_caption": same}})
        task = PairsTask(cfg, get_method("clip").cls, torch.device("cpu"))
        batch = task.batch(torch.arange(50))
        return duplicate_mask(batch["ids"], batch.get("dup_features"), same)

    exact, loose = mask(1.0), mask(0.8)
    assert torch.equal(exact & loose, exact) and loose.sum() > exact.sum()   # a superset: near-duplicates too
    assert loose.diagonal().all()

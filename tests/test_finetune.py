"""Linear probe and fine-tuning: the library on separable features, the CLI end to end."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cl_toolkit.eval import fit_linear, linear_eval


def _clusters(seed, n, spread=1.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(3, 16)) * 4
    x = np.concatenate([c + spread * rng.normal(size=(n, 16)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(3), n)


def test_linear_probe_on_separable_features_is_perfect():
    tx, ty = _clusters(1, 30)
    qx, qy = _clusters(2, 10)
    res, head = linear_eval(tx * 100 + 7, ty, qx * 100 + 7, qy)  # standardisation removes scale and offset
    assert res["linear_top1"] == 1.0 and res["train_top1"] == 1.0 and res["n_test"] == 30 and res["classes"] == 3
    assert torch.allclose(head.mean, torch.from_numpy(tx * 100 + 7).mean(0), rtol=1e-4)
    wrong, _ = linear_eval(tx, ty, qx, (qy + 1) % 3)
    assert wrong["linear_top1"] == 0.0


def test_fit_linear_recovers_a_linear_rule():
    torch.manual_seed(0)
    x = torch.randn(400, 2)
    y = (x[:, 0] > 0).long()  # the decision depends on the first feature only
    head = fit_linear(x, y, 2, weight_decay=1e-3)
    w = head.weight[1] - head.weight[0]
    assert w[0].abs() > 10 * w[1].abs()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from pathlib import Path

    from cl_toolkit.config import resolve_config
    from cl_toolkit.data import load_images
    from cl_toolkit.pipeline import pretrain

    out = tmp_path_factory.mktemp("ft") / "run"
    data = load_images(str(Path(__file__).parents[1] / "data_samples" / "fashion"))
    pretrain(resolve_config({"method": "byol", "out": str(out), "encoder": "convnet-tiny", "epochs": 1,
                             "batch_size": 16, "threads": 2}), data=data, quiet=True)
    return out


def test_finetune_linear_and_full_cli(run, tmp_path, cli, samples):
    r = cli("finetune", run, "--data", samples / "fashion", "--test", samples / "images.jsonl", "--out",
            tmp_path / "lin", "--linear")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["mode"] == "linear" and res["n_train"] == 50 and 0 <= res["test_top1"] <= 1
    # the test set is the training set (another listing of the same 50 images): the probe fits it
    assert res["test_top1"] == res["train_top1"] > 0.5
    for f in ("config.json", "env.json", "metrics.jsonl", "head.safetensors", "results.json",
              "encoder/encoder.json", "encoder/model.safetensors"):
        assert (tmp_path / "lin" / f).is_file(), f
    head = load_file(str(tmp_path / "lin" / "head.safetensors"))
    assert head["weight"].shape == (10, 64) and head["bias"].shape == (10,)
    # a linear probe leaves the encoder as it was
    a = load_file(str(run / "encoder" / "model.safetensors"))
    b = load_file(str(tmp_path / "lin" / "encoder" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    # the same through the library (no second process): full fine-tuning changes the encoder
    from cl_toolkit.finetune import FinetuneConfig, finetune
    from cl_toolkit.io import InputError

    res = finetune(FinetuneConfig(run=str(run), data=str(samples / "fashion"), out=str(tmp_path / "full"),
                                  mode="full", epochs=2, batch_size=16))
    assert res["mode"] == "full"
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in rows] == [1, 2] and all(np.isfinite(x["loss"]) for x in rows)
    b = load_file(str(tmp_path / "full" / "encoder" / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("weight"))

    with pytest.raises(InputError, match="already exists"):
        finetune(FinetuneConfig(run=str(run), data=str(samples / "fashion"), out=str(tmp_path / "lin")))


def test_eval_linear_cli_from_model_and_from_embeddings(run, tmp_path, cli, samples):
    from cl_toolkit.io import write_embeddings

    r = cli("eval", "linear", "--model", run, "--train", samples / "fashion", "--test", samples / "images.jsonl")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["eval"] == "linear" and res["n_train"] == res["n_test"] == 50 and res["linear_top1"] > 0.5

    tx, ty = _clusters(1, 20)
    qx, qy = _clusters(2, 5)
    write_embeddings(tmp_path / "tr", tx, [{"id": str(i), "label": f"c{y}"} for i, y in enumerate(ty)], {})
    write_embeddings(tmp_path / "te", qx, [{"id": str(i), "label": f"c{y}"} for i, y in enumerate(qy)], {})
    r = cli("eval", "linear", "--train", tmp_path / "tr", "--test", tmp_path / "te")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["linear_top1"] == 1.0


def test_unlabelled_data_is_refused_with_exit_2(run, tmp_path, cli, samples):
    lines = [json.loads(x) for x in (samples / "images.jsonl").read_text().splitlines()][:5]
    unl = tmp_path / "unlabelled.jsonl"
    unl.write_text("".join(json.dumps({"id": r["id"], "image": str(samples / r["image"])}) + "\n" for r in lines))
    r = cli("finetune", run, "--data", unl, "--out", tmp_path / "x")
    assert r.returncode == 2 and "label" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()

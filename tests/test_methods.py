"""The method zoo: every registered method trains a few steps through the one trainer, plus the
pieces with state of their own (MoCo's queue, DirectPred's predictor, SwAV's multi-crop)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from cl_toolkit.config import resolve_config
from cl_toolkit.data import load_images
from cl_toolkit.io import InputError
from cl_toolkit.methods import METHODS, get_method, load_all, make_config
from cl_toolkit.pipeline import pretrain

ZOO = ["mocov2", "mocov3", "simsiam", "swav", "barlow", "vicreg", "directpred"]


@pytest.fixture(scope="module")
def data():
    from pathlib import Path

    return load_images(str(Path(__file__).parents[1] / "data_samples" / "fashion"))


def _cfg(tmp_path, method, name, **kw):
    return resolve_config({"method": method, "data": "unused", "out": str(tmp_path / name),
                           "encoder": "convnet-tiny", "epochs": 2, "batch_size": 16, "log_every": 1,
                           "threads": 2, "precision": "fp32", **kw})


def test_every_method_is_registered_with_a_paper():
    load_all()
    assert set(ZOO) <= set(METHODS)
    for m in METHODS.values():
        assert m.description and "20" in m.paper, m.name


@pytest.mark.parametrize("method", ZOO)
def test_a_few_steps_are_finite_and_change_the_weights(tmp_path, data, method):
    pretrain(_cfg(tmp_path, method, "init"), data=data, quiet=True, stop_at_step=0)
    init = torch.load(tmp_path / "init" / "checkpoints" / "last.pt", weights_only=False)["model"]
    s = pretrain(_cfg(tmp_path, method, "run"), data=data, quiet=True)
    assert s["complete"] and s["steps"] == 2 * (50 // 16)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == s["steps"] and all(math.isfinite(r["loss"]) for r in rows)
    trained = load_file(str(tmp_path / "run" / "encoder" / "model.safetensors"))
    changed = [k for k, v in trained.items() if v.is_floating_point() and not torch.equal(v, init[f"encoder.{k}"])]
    assert any(k.endswith("weight") for k in changed), changed


def test_small_crops_only_for_multicrop_methods():
    with pytest.raises(InputError, match="multi-crop methods \\(byol, simclr, swav\\)"):
        resolve_config({"method": "mocov2", "small_crops": 2})
    assert resolve_config({"method": "swav"}).small_crops == 4
    assert resolve_config({"method": "byol"}).small_crops == 0


def test_byol_and_simclr_multicrop_losses(data):
    """Small crops add terms against both global views; the loss is their mean with the base terms."""
    import torch.nn.functional as F

    from cl_toolkit.augment import ViewGenerator, preset
    from cl_toolkit.encoders import create_encoder
    from cl_toolkit.losses import byol_loss, info_nce, nt_xent

    torch.manual_seed(0)
    views = ViewGenerator(preset("simclr", 28, 1, small_crops=2), 28, 1)(data.images[:8])
    small = torch.cat(views[2:])
    for name in ("byol", "simclr"):
        entry = get_method(name)
        model = entry.cls(create_encoder("convnet-tiny", 1, 28), make_config(entry.config, {})).eval()
        with torch.no_grad():
            loss = model(views, 0.5).loss
            two = model(views[:2], 0.5).loss
            if name == "byol":
                z = model.target_projector(model.target_encoder(torch.cat(views[:2]))).split(8)
                q = model.predictor(model.projector(model.encoder(small))).split(8)
                terms = [byol_loss(c, z[0]) + byol_loss(c, z[1]) for c in q]
            else:
                z = F.normalize(model.projector(model.encoder(torch.cat(views[:2]))), dim=-1).split(8)
                q = F.normalize(model.projector(model.encoder(small)), dim=-1).split(8)
                terms = [(info_nce(c, z[0], 0.2) + info_nce(c, z[1], 0.2)) / 2 for c in q]
                assert two == pytest.approx(nt_xent(z[0], z[1], 0.2).item(), abs=1e-5)
        assert loss.item() == pytest.approx(((two + sum(terms)) / 3).item(), abs=1e-5), name


def test_swav_sees_global_and_small_crops(data):
    from cl_toolkit.augment import ViewGenerator, preset
    from cl_toolkit.encoders import create_encoder

    views = ViewGenerator(preset("simclr", 28, 1, small_crops=3), 28, 1)(data.images[:8])
    assert [v.shape[-1] for v in views] == [28, 28, 14, 14, 14]
    entry = get_method("swav")
    model = entry.cls(create_encoder("convnet-tiny", 1, 28), make_config(entry.config, {"prototypes": 10}))
    out = model(views, 0.5)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.z1.shape == (8, 64)
    assert model.prototypes.weight.grad is not None
    model.zero_grad()
    model(views, 0.0).loss.backward()  # prototypes are frozen at the start of the run
    assert model.prototypes.weight.grad is None
    assert torch.allclose(model.prototypes.weight.norm(dim=1), torch.ones(10), atol=1e-5)


def test_mocov2_enqueues_both_views_keys(data):
    from cl_toolkit.augment import ViewGenerator, preset
    from cl_toolkit.encoders import create_encoder

    entry = get_method("mocov2")
    model = entry.cls(create_encoder("convnet-tiny", 1, 28), make_config(entry.config, {"queue_size": 20}))
    views = ViewGenerator(preset("simclr", 28, 1), 28, 1)(data.images[:8])
    model(views, 0.0)
    keys = model._keys.clone()
    model.after_step(0.0)
    assert int(model.queue_ptr) == 16 and torch.allclose(model.queue[:16], keys)
    model(views, 0.0)
    model.after_step(0.0)  # wraps around the ring buffer
    assert int(model.queue_ptr) == 12


def test_directpred_predictor_from_correlation_hand_value():
    from cl_toolkit.methods.directpred import predictor_from_correlation

    c, s = math.cos(0.3), math.sin(0.3)
    u = torch.tensor([[c, -s], [s, c]])
    corr = u @ torch.diag(torch.tensor([4.0, 1.0])) @ u.T
    # eigenvalues / max = 1, 0.25; square roots 1, 0.5; + eps 0.01
    want = u @ torch.diag(torch.tensor([1.01, 0.51])) @ u.T
    assert torch.allclose(predictor_from_correlation(corr, eps=0.01), want, atol=1e-5)
    neg = torch.diag(torch.tensor([2.0, -1.0]))  # negative eigenvalues count as 0
    assert torch.allclose(predictor_from_correlation(neg, eps=0.01), torch.diag(torch.tensor([1.01, 0.01])))


def test_directpred_sets_its_predictor_every_freq_steps(data):
    from cl_toolkit.augment import ViewGenerator, preset
    from cl_toolkit.encoders import create_encoder

    entry = get_method("directpred")
    model = entry.cls(create_encoder("convnet-tiny", 1, 28), make_config(entry.config, {"freq": 2, "proj_dim": 16}))
    views = ViewGenerator(preset("byol", 28, 1), 28, 1)(data.images[:16])
    model(views, 0.0)
    model.after_step(0.0)
    assert torch.equal(model.predictor, torch.eye(16))  # step 1 of freq 2: unchanged
    assert not model.predictor.requires_grad
    model(views, 0.0)
    model.after_step(0.0)
    assert not torch.allclose(model.predictor, torch.eye(16))
    assert torch.allclose(model.predictor, model.predictor.T, atol=1e-5)


@pytest.mark.parametrize("method", ["mocov2", "directpred"])
def test_resume_restores_queue_and_correlation_state(tmp_path, data, method):
    """Methods with state beyond the weights (MoCo's queue, DirectPred's correlation matrix and
    step count) resume to the same weights as an uninterrupted run."""
    pretrain(_cfg(tmp_path, method, "full"), data=data, quiet=True)
    pretrain(_cfg(tmp_path, method, "part"), data=data, quiet=True, stop_at_step=2)
    pretrain(_cfg(tmp_path, method, "part"), data=data, quiet=True, resume=True)
    a = load_file(str(tmp_path / "full" / "encoder" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "encoder" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=False)["model"]
    cb = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=False)["model"]
    for k in ("queue", "queue_ptr") if method == "mocov2" else ("corr", "predictor", "steps"):
        assert torch.equal(ca[k], cb[k]), k

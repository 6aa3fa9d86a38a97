import json

import pytest
import torch
from safetensors.torch import load_file

from cl_toolkit.config import resolve_config
from cl_toolkit.data import load_images
from cl_toolkit.io import InputError, TrainingError
from cl_toolkit.optim import lr_at
from cl_toolkit.pipeline import pretrain


def _cfg(tmp_path, name, **kw):
    base = dict(method="byol", data=str(tmp_path / "unused"), out=str(tmp_path / name), encoder="convnet-tiny",
                epochs=4, batch_size=16, checkpoint_every=3, log_every=2, threads=2)
    base.update(kw)
    return resolve_config(base)


@pytest.fixture(scope="module")
def data(request):
    from pathlib import Path

    return load_images(str(Path(__file__).parents[1] / "data_samples" / "fashion"))


@pytest.mark.parametrize("method", ["byol", "simclr"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, data, method):
    full = pretrain(_cfg(tmp_path, "full", method=method), data=data, quiet=True)
    part = pretrain(_cfg(tmp_path, "part", method=method), data=data, quiet=True, stop_at_step=5)
    assert full["complete"] and not part["complete"] and part["steps"] == 5
    assert not (tmp_path / "part" / "encoder").exists()
    resumed = pretrain(_cfg(tmp_path, "part", method=method), data=data, quiet=True, resume=True)
    assert resumed["steps"] == full["steps"] == 12
    a = load_file(str(tmp_path / "full" / "encoder" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "encoder" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # metrics after resume continue without duplicated steps
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_run_dir_contents(tmp_path, data):
    pretrain(_cfg(tmp_path, "run"), data=data, quiet=True)
    run = tmp_path / "run"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "byol" and cfg["seed"] == 0 and cfg["lr"] > 0 and cfg["data_hash"]
    assert cfg["method_config"]["momentum"] == 0.99 and cfg["image_size"] == 28
    assert cfg["encoder_args"] == {"width": 16, "stages": 3, "depth": 1, "pool": 1, "pool_type": "avg"}
    env = json.loads((run / "env.json").read_text())
    assert {"torch", "python", "cltk", "git_commit", "device"} <= set(env)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "images_per_s", "std", "effective_rank"} <= set(rows[-1])
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "encoder" / "encoder.json").is_file()


def test_existing_run_dir_is_refused_without_force(tmp_path, data):
    pretrain(_cfg(tmp_path, "run", epochs=1), data=data, quiet=True)
    with pytest.raises(InputError, match="already exists"):
        pretrain(_cfg(tmp_path, "run", epochs=1), data=data, quiet=True)
    assert pretrain(_cfg(tmp_path, "run", epochs=1), data=data, quiet=True, force=True)["complete"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data, monkeypatch):
    import cl_toolkit.methods.byol as byol

    calls = {"n": 0}
    real = byol.byol_loss

    def flaky(p, z):  # the loss turns NaN from the 6th step on (two calls per step)
        calls["n"] += 1
        return real(p, z) * (float("nan") if calls["n"] > 10 else 1.0)

    monkeypatch.setattr(byol, "byol_loss", flaky)
    with pytest.raises(TrainingError, match="loss became nan at step 5"):
        pretrain(_cfg(tmp_path, "nan", checkpoint_every=2), data=data, quiet=True)
    ck = torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=False)
    assert ck["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_minutes_budget_stops_on_time(tmp_path, data):
    s = pretrain(_cfg(tmp_path, "t", epochs=None, minutes=0.05), data=data, quiet=True)
    assert s["complete"] and 3 <= s["train_seconds"] < 10


def test_lr_schedule_warmup_and_cosine():
    cfg = resolve_config({"method": "simclr", "lr": 1.0, "warmup": 0.1, "min_lr_ratio": 0.0})
    assert lr_at(cfg, 0.05) == pytest.approx(0.5)
    assert lr_at(cfg, 0.1) == pytest.approx(1.0)
    assert lr_at(cfg, 0.55) == pytest.approx(0.5)
    assert lr_at(cfg, 1.0) == pytest.approx(0.0, abs=1e-9)


def test_lars_step_hand_value():
    from cl_toolkit.optim import LARS

    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    w.grad, b.grad = torch.tensor([[0.6, 0.8]]), torch.tensor([0.5])
    LARS([w, b], lr=1.0, weight_decay=0.0, eta=0.02).step()
    # trust ratio 0.02 * |w| / |g| = 0.02 * 5 / 1 = 0.1 for the weight; plain SGD for the bias
    assert torch.allclose(w, torch.tensor([[2.94, 3.92]])) and torch.allclose(b, torch.tensor([0.5]))


def test_config_precedence_and_unknown_keys(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('method = "simclr"\nlr = 0.5\n[method_config]\ntemperature = 0.3\n')
    cfg = resolve_config({"lr": 0.25}, str(toml))
    assert cfg.method == "simclr" and cfg.lr == 0.25 and cfg.method_config.temperature == 0.3
    with pytest.raises(InputError, match="unknown method config key"):
        resolve_config({"method": "byol", "method_config": {"temprature": 1}})
    with pytest.raises(InputError, match="either --epochs or --minutes"):
        resolve_config({"epochs": 1, "minutes": 1})


@pytest.mark.parametrize("method", ["byol", "simclr"])
def test_method_learns_its_objective(tmp_path, data, method):
    """Training lowers the method's own loss on a fixed batch of fixed views."""
    from cl_toolkit.augment import ViewGenerator, preset
    from cl_toolkit.encoders import create_encoder
    from cl_toolkit.methods import get_method, make_config

    torch.manual_seed(0)
    entry = get_method(method)
    gen = ViewGenerator(preset(entry.cls.defaults["augment"], 28, 1), 28, 1)
    views = gen(data.images[:32])
    model = entry.cls(create_encoder("convnet-tiny", 1, 28), make_config(entry.config, {}))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    losses = []
    for _ in range(40):
        out = model(views, 0.5)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.after_step(0.5)
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_cpu_share_counts_the_cores_other_processes_use(monkeypatch):
    """Threads follow the cores others leave free: busy time of the machine minus this process's."""
    import cl_toolkit.io.files as files

    samples = iter([(1000, 4000), (1000 + 150, 4000 + 200)])     # 75% of the machine busy in the window
    monkeypatch.setattr(files, "_proc_stat", lambda: next(samples))
    monkeypatch.setattr(files.os, "cpu_count", lambda: 2)
    clock = iter([10.0, 12.0])
    monkeypatch.setattr(files.time, "monotonic", lambda: next(clock))
    cpu = iter([0.0, 1.0])                                          # this process: 1 CPU-second in 2 s
    monkeypatch.setattr(files.os, "times", lambda: type("T", (), {"user": next(cpu), "system": 0.0})())
    share = files.CpuShare(2)
    assert share.others() == pytest.approx(2 * 0.75 - 0.5)          # 1.5 cores busy, 0.5 of them ours
    samples2 = iter([(0, 100), (0, 200)])
    monkeypatch.setattr(files, "_proc_stat", lambda: next(samples2))
    clock2 = iter([0.0, 1.0])
    monkeypatch.setattr(files.time, "monotonic", lambda: next(clock2))
    cpu2 = iter([0.0, 0.0])
    monkeypatch.setattr(files.os, "times", lambda: type("T", (), {"user": next(cpu2), "system": 0.0})())
    idle = files.CpuShare(2)
    assert idle.threads() == 2                                       # nobody else: every core

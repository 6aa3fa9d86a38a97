"""The collapse monitor warns (stderr once, metrics.jsonl per line) when embeddings collapse."""

import json

import pytest
import torch
from torch import nn

from cl_toolkit import collapse
from cl_toolkit.config import resolve_config
from cl_toolkit.data import load_images
from cl_toolkit.pipeline import pretrain


def test_warnings_for_point_and_dimensional_collapse():
    torch.manual_seed(0)
    healthy = torch.randn(64, 128)
    assert collapse.warnings_for(collapse.stats(healthy), 64) == []
    point = torch.ones(64, 128) + 1e-6 * torch.randn(64, 128)
    assert any("collapsed to a point" in w for w in collapse.warnings_for(collapse.stats(point), 64))
    line = torch.randn(64, 1) * torch.randn(1, 128) + 5 * torch.randn(1, 128)  # one direction, offset
    w = collapse.warnings_for(collapse.stats(line), 64)
    assert len(w) == 1 and "dimensional collapse" in w[0] and "of 128 dimensions" in w[0]
    # with 1% of 512 dims = 5.1, an effective rank of about 3 is collapse; too few rows say nothing
    three = torch.randn(64, 3) @ torch.randn(3, 512)
    assert any("dimensional" in x for x in collapse.warnings_for(collapse.stats(three), 64))
    assert collapse.warnings_for(collapse.stats(three[:4]), 4) == []


class _Constant(nn.Module):
    """An artificially collapsed backbone: the same output for every input."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.out_dim = inner, inner.out_dim

    def forward(self, x):
        return self.inner(x) * 0 + 1


@pytest.mark.parametrize("collapsed", [True, False])
def test_collapsed_encoder_trips_the_warning_and_a_healthy_one_does_not(tmp_path, monkeypatch, capsys, collapsed):
    from pathlib import Path

    import cl_toolkit.tasks.images as images

    if collapsed:
        real = images.create_encoder

        def create(*a, **k):
            enc = real(*a, **k)
            enc.backbone = _Constant(enc.backbone)
            return enc

        monkeypatch.setattr(images, "create_encoder", create)
    data = load_images(str(Path(__file__).parents[1] / "data_samples" / "fashion"))
    cfg = resolve_config({"method": "byol", "out": str(tmp_path / "run"), "encoder": "convnet-tiny", "epochs": 2,
                          "batch_size": 16, "log_every": 1, "threads": 2})
    pretrain(cfg, data=data, quiet=True)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    err = capsys.readouterr().err
    if collapsed:
        assert all(r.get("collapse_warning") for r in rows)
        assert err.count("cltk: warning:") == 1 and "collapsed to a point" in err and "dimensional" not in err
    else:
        assert not any("collapse_warning" in r for r in rows) and "warning" not in err

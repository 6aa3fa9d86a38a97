"""Every file name of the folders cltk writes, spelled once: run dirs, encoder folders, embeddings
folders and index folders (DESIGN.md, "Files")."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

# run dir
CONFIG = "config.json"
ENV = "env.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.pt"
ENCODER = "encoder"
RESULTS = "results.json"
REPORT = "report.html"
TAGGER = "tagger.json"
TAG_INDEX = "tag_index"
CLIP = "clip.json"
REC = "rec.json"          # recommendation runs: data and user model for cltk recommend
# encoder folder
ENCODER_SPEC = "encoder.json"
WEIGHTS = "model.safetensors"
HEAD = "head.safetensors"
TEXT_MODEL = "model"
# embeddings folder
EMBEDDINGS = "embeddings.npy"
META = "meta.jsonl"
INFO = "info.json"
# index folder (also META and INFO)
INDEX = "index.faiss"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run dir."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def env(self) -> Path:
        return self.root / ENV

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.root / CHECKPOINTS / LAST_CHECKPOINT

    @property
    def encoder(self) -> Path:
        return self.root / ENCODER

    def tower(self, name: str) -> Path:
        """``encoder/NAME`` of a two-tower run (``text``, ``image``, ``tag``, ``user``, ``item``)."""
        return self.root / ENCODER / name

    def has_tower(self, name: str | None) -> bool:
        return name is not None and self.tower(name).is_dir()

    def read_config(self) -> dict:
        if not self.config.is_file():
            raise InputError(f"not a run dir (no {CONFIG})", self.root)
        try:
            return json.loads(self.config.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"corrupt {CONFIG} ({type(e).__name__})", self.root) from None


def resolve_encoder_dir(model: str | os.PathLike, tower: str | None = None) -> Path:
    """A run dir (uses ``RUN/encoder``, or ``RUN/encoder/TOWER`` for two-tower runs) or an
    ``encoder/`` folder -> the folder with encoder.json."""
    p = Path(model)
    cands = [p, p / ENCODER]
    if tower:
        cands = [p / tower, p / ENCODER / tower] + cands
    else:
        cands += [p / ENCODER / "text", p / ENCODER / "image"]  # a two-tower run's first tower
    for cand in cands:
        if (cand / ENCODER_SPEC).is_file():
            return cand
    raise InputError(f"not a run dir or encoder folder (no {ENCODER_SPEC})"
                     + (f" with a {tower!r} tower" if tower else ""), model)

"""SimCSE: Simple Contrastive Learning of Sentence Embeddings (Gao, Yao & Chen 2021, arXiv:2104.08821).

Unsupervised: each sentence passes the encoder twice; the two dropout masks are the two views,
InfoNCE with the other sentences of the batch as negatives (identical sentences in a batch are
masked, not negatives). Supervised: records carry a ``positive`` (e.g. an entailed sentence)
and optionally a ``negative`` (a hard negative, e.g. a contradiction); InfoNCE over the batch's
positives plus all hard negatives. Text JSONL: ``{"id", "text"[, "positive"[, "negative"]]}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..losses import info_nce
from ..tasks.text import TextTask
from . import register_method
from .base import Method, StepOutput, duplicate_mask


@dataclass
class Config:
    temperature: float = 0.05
    mode: str = "auto"          # auto (sup when records have "positive") | unsup | sup


@register_method("simcse", "text: dropout noise as the view (unsupervised) or given positive / hard-negative "
                 "pairs (supervised), InfoNCE", "Gao et al. 2021, SimCSE, arXiv:2104.08821")
class SimCSE(Method):
    defaults = {"optimizer": "adamw", "lr": 3e-5, "weight_decay": 0.0, "batch_size": 64, "warmup": 0.0,
                "epochs": 1, "encoder_args": {"max_length": 32}}
    task = TextTask

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder

    def represent(self, batch: dict, progress: float) -> list[Tensor]:
        """Per-sentence embeddings: the sentence, its positive (unsupervised: the sentence again
        under a second dropout mask) and, if given, its hard negative."""
        embed = lambda f: F.normalize(self.encoder(batch[f]).float(), dim=-1)  # noqa: E731
        if self.cfg.mode == "unsup":
            return [embed("text"), embed("text")]
        return [embed("text"), embed("positive")] + ([embed("negative")] if "negative" in batch else [])

    def objective(self, reps: list[Tensor], batch: dict, progress: float) -> StepOutput:
        """InfoNCE of this rank's sentences against the positives (and hard negatives) of the
        global batch, gathered under torchrun."""
        z1, z2 = reps[0], reps[1]
        keys, offset = dist.gather(z2)
        if self.cfg.mode == "unsup":
            return StepOutput(info_nce(z1, keys, self.cfg.temperature, duplicate_mask(batch["ids"]), offset), z1, z2)
        if len(reps) > 2:
            keys = torch.cat([keys, dist.gather(reps[2])[0]])
        return StepOutput(info_nce(z1, keys, self.cfg.temperature, offset=offset), z1, z2)

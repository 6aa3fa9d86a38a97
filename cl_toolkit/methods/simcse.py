"""SimCSE: Simple Contrastive Learning of Sentence Embeddings (Gao, Yao & Chen 2021, arXiv:2104.08821),
and ESimCSE (Wu et al. 2022, arXiv:2109.04380) as its ``esimcse`` mode.

Unsupervised: each sentence passes the encoder twice; the two dropout masks are the two views,
InfoNCE with the other sentences of the batch as negatives (identical sentences in a batch are
masked, not negatives). Supervised: records carry a ``positive`` (e.g. an entailed sentence)
and optionally a ``negative`` (a hard negative, e.g. a contradiction, or one mined with
``cltk mine``); InfoNCE over the batch's positives plus all hard negatives. Text JSONL:
``{"id", "text"[, "positive"[, "negative"]]}``.

ESimCSE (``mode=esimcse``): the positive view is the sentence with some tokens repeated
(``augment.word_repetition``, rate ``dup_rate``), so that positives do not share their length;
and a queue of the ``queue`` most recent sentence embeddings of a momentum encoder (an EMA of
the encoder at constant rate ``momentum``, run without dropout) adds negatives beyond the batch:

    L = mean_i -log exp(z_i . z+_i / t) / (sum_{j in batch} exp(z_i . z+_j / t) + sum_{n in Q} exp(z_i . n / t))

Paper: dup_rate 0.32, queue 2.5 x the batch (160 at batch 64), momentum 0.995. ``tau_plus`` /
``beta`` turn InfoNCE into DCL / HCL in every mode (``losses.debiased_cross_entropy``).
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
from .base import KeyQueue, Method, StepOutput, duplicate_mask, frozen_copy


@dataclass
class Config:
    temperature: float = 0.05
    mode: str = "auto"          # auto (sup when records have "positive") | unsup | sup | esimcse
    dup_rate: float = 0.32      # esimcse: share of a sentence's tokens that may be repeated
    queue: int = 160            # esimcse: momentum-encoder embeddings kept as extra negatives (0: none)
    momentum: float = 0.995     # esimcse: constant EMA rate of the momentum encoder
    tau_plus: float = 0.0       # DCL: prior share of false negatives (Chuang et al. 2020); 0 = InfoNCE
    beta: float = 0.0           # HCL: weight negatives by exp(beta * s / t) (Robinson et al. 2021); 0 = uniform


@register_method("simcse", "text: dropout noise as the view (unsupervised), word repetition + momentum queue "
                 "(esimcse) or given positive / hard-negative pairs (supervised), InfoNCE",
                 "Gao et al. 2021, SimCSE, arXiv:2104.08821; Wu et al. 2022, ESimCSE, arXiv:2109.04380")
class SimCSE(Method):
    defaults = {"optimizer": "adamw", "lr": 3e-5, "weight_decay": 0.0, "batch_size": 64, "warmup": 0.0,
                "epochs": 1, "encoder_args": {"max_length": 32}}
    task = TextTask

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.queued = cfg.mode == "esimcse" and cfg.queue > 0
        if self.queued:
            self.momentum_encoder = frozen_copy(encoder)
            self.queue = KeyQueue(cfg.queue, encoder.out_dim)
        self._pending: tuple[Tensor, Tensor] | None = None

    def train(self, mode: bool = True) -> SimCSE:
        super().train(mode)
        if self.queued:
            self.momentum_encoder.eval()         # keys without dropout noise
        return self

    def represent(self, batch: dict, progress: float) -> list[Tensor]:
        """Per-sentence embeddings: the sentence, its positive (unsupervised: the sentence again
        under a second dropout mask; esimcse: the sentence with repeated tokens) and, if given,
        its hard negative."""
        embed = lambda f: F.normalize(self.encoder(batch[f]).float(), dim=-1)  # noqa: E731
        if self.cfg.mode == "unsup":
            return [embed("text"), embed("text")]
        if self.cfg.mode == "esimcse":
            return [embed("text"), embed("repeated")]
        return [embed("text"), embed("positive")] + ([embed("negative")] if "negative" in batch else [])

    def objective(self, reps: list[Tensor], batch: dict, progress: float) -> StepOutput:
        """InfoNCE of this rank's sentences against the positives (and hard negatives, and the
        queue) of the global batch, gathered under torchrun."""
        z1, z2 = reps[0], reps[1]
        keys, offset = dist.gather(z2)
        t, tp, b = self.cfg.temperature, self.cfg.tau_plus, self.cfg.beta
        if self.cfg.mode in ("unsup", "esimcse"):
            mask = duplicate_mask(batch["ids"])
            if self.queued:
                with torch.no_grad():
                    k = F.normalize(self.momentum_encoder(batch["text"]).float(), dim=-1)
                self._pending = (dist.gather_nograd(k), dist.gather_nograd(batch["ids"]))
                q = self.queue
                keys = torch.cat([keys, q.keys])
                mask = torch.cat([mask, (batch["ids"][:, None] == q.ids[None, :]) | ~q.valid()[None, :]], 1)
            return StepOutput(info_nce(z1, keys, t, mask, offset, tp, b), z1, z2)
        if len(reps) > 2:
            keys = torch.cat([keys, dist.gather(reps[2])[0]])
        return StepOutput(info_nce(z1, keys, t, offset=offset, tau_plus=tp, beta=b), z1, z2)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.momentum_encoder)] if self.queued else []

    def momentum(self, progress: float) -> float:
        return self.cfg.momentum       # constant, as in ESimCSE (and MoCo)

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        if self._pending is not None:   # every rank enqueues the same global keys
            self.queue.push(*self._pending)
            self._pending = None

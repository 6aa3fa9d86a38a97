"""SimCSE: Simple Contrastive Learning of Sentence Embeddings (Gao, Yao & Chen 2021, arXiv:2104.08821).

Unsupervised: each sentence passes the encoder twice; the two dropout masks are the two views,
InfoNCE with the other sentences of the batch as negatives (identical sentences in a batch are
masked, not negatives). Supervised: records carry a ``positive`` (e.g. an entailed sentence)
and optionally a ``negative`` (a hard negative, e.g. a contradiction); InfoNCE over the batch's
positives plus all hard negatives. Text JSONL: ``{"id", "text"[, "positive"[, "negative"]]}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..data import load_texts, records_hash
from ..io import InputError
from ..losses import info_nce
from . import StepOutput, duplicate_mask, export_text_encoder, make_config, register_method, text_encoder


@dataclass
class Config:
    temperature: float = 0.05
    mode: str = "auto"          # auto (sup when records have "positive") | unsup | sup


class TextTask:
    """The trainer's view of a text data set: records, tokenised per batch."""

    def __init__(self, cfg, entry, device: torch.device, data: list[dict] | None = None):
        recs = data if data is not None else load_texts(cfg.data, ("text",), optional=("positive", "negative"))
        mc = make_config(entry.config, cfg.method_config)
        mc.mode = _mode(mc.mode, recs, cfg.data)
        cfg.method_config["mode"] = mc.mode
        fields = ("text", "positive", "negative") if mc.mode == "sup" else ("text",)
        self.fields = [f for f in fields if f in recs[0]]
        for f in self.fields[1:]:
            missing = next((r for r in recs if f not in r), None)
            if missing is not None:
                raise InputError(f"missing (give {f!r} on every record or on none)", cfg.data, missing["_line"], f)
        self.texts = {f: [r[f] for r in recs] for f in self.fields}
        first = {}    # identical sentences share an id: they are not each other's negatives
        self.ids = torch.tensor([first.setdefault(t, len(first)) for t in self.texts["text"]])
        self.cfg, self.device, self.n = cfg, device, len(recs)
        self.hash = records_hash(recs, tuple(self.fields))
        self.model = entry.cls(text_encoder(cfg), mc).to(device)

    def batch(self, idx: Tensor) -> dict:
        enc = self.model.encoder
        rows = idx.tolist()
        out = {f: {k: v.to(self.device) for k, v in enc.tokenize([self.texts[f][i] for i in rows]).items()}
               for f in self.fields}
        out["ids"] = self.ids[idx].to(self.device)
        return out

    def export(self, out: Path, extra: dict) -> None:
        export_text_encoder(self.model.encoder, self.cfg.encoder, out / "encoder", extra)


def _mode(mode: str, recs: list[dict], where: str) -> str:
    if mode not in ("auto", "unsup", "sup"):
        raise InputError(f"mode must be auto, unsup or sup, got {mode!r}")
    if mode == "auto":
        return "sup" if "positive" in recs[0] else "unsup"
    if mode == "sup" and "positive" not in recs[0]:
        raise InputError("missing (mode=sup needs a 'positive' on every record)", where, recs[0]["_line"], "positive")
    return mode


@register_method("simcse", "text: dropout noise as the view (unsupervised) or given positive / hard-negative "
                 "pairs (supervised), InfoNCE", "Gao et al. 2021, SimCSE, arXiv:2104.08821")
class SimCSE(nn.Module):
    defaults = {"optimizer": "adamw", "lr": 3e-5, "weight_decay": 0.0, "batch_size": 64, "warmup": 0.0,
                "epochs": 1, "encoder_args": {"max_length": 32}}
    task = TextTask

    def __init__(self, encoder: nn.Module, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder

    def forward(self, batch: dict, progress: float) -> StepOutput:
        return self.objective(self.represent(batch, progress), batch, progress)

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

    def after_step(self, progress: float) -> None:
        pass

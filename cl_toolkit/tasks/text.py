"""Texts: JSONL records ``{"id", "text"[, "positive"[, "negative"]]}`` tokenised per batch on a
Hugging Face text encoder (and, for ESimCSE, each sentence again with repeated tokens); exports
``encoder/``. Also the shared start of every text tower."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from ..augment import word_repetition
from ..data import load_texts, records_hash
from ..encoders import (
    DEFAULT_TEXT_ENCODER,
    TextEncoder,
    create_text_encoder,
    encoder_args,
    export_text_encoder,
    is_text_encoder,
)
from ..io import InputError, RunDir
from . import Task


def text_encoder(cfg: Any, head: bool = False) -> tuple[TextEncoder, dict]:
    """The run's text encoder (``cfg.encoder``, default ``minilm-l6``) and the config fields it
    resolves (``encoder``, ``encoder_args``), so config.json records every setting."""
    name = cfg.encoder or DEFAULT_TEXT_ENCODER
    if not is_text_encoder(name):
        raise InputError(f"method {cfg.method!r} needs a text encoder (minilm-l6, a Hugging Face model folder or "
                         f"name), not the image encoder {name!r}")
    args = encoder_args(name, {"head": head, **cfg.encoder_args})
    return create_text_encoder(name, **args), {"encoder": name, "encoder_args": args}


ESIMCSE_ONLY = ("dup_rate", "queue", "momentum")     # settings that only the esimcse mode reads


def text_mode(mode: str, recs: list[dict], where: str) -> str:
    """SimCSE's mode: ``auto`` is ``sup`` when records carry a ``positive``, else ``unsup``."""
    if mode not in ("auto", "unsup", "sup", "esimcse"):
        raise InputError(f"mode must be auto, unsup, sup or esimcse, got {mode!r}")
    if mode == "auto":
        return "sup" if "positive" in recs[0] else "unsup"
    if mode == "sup" and "positive" not in recs[0]:
        raise InputError("missing (mode=sup needs a 'positive' on every record)", where, recs[0]["_line"], "positive")
    return mode


class TextTask(Task):
    """The trainer's view of a text data set: records, tokenised per batch. Identical sentences
    share an id, so that they are not each other's negatives."""

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: list[dict] | None = None):
        super().__init__(cfg, method_cls, device, data)
        recs = data if data is not None else load_texts(cfg.data, ("text",), optional=("positive", "negative"))
        mc = dataclasses.replace(cfg.method_config, mode=text_mode(cfg.method_config.mode, recs, cfg.data))
        if mc.mode != "esimcse":
            default = type(mc)()
            given = [k for k in ESIMCSE_ONLY if getattr(mc, k) != getattr(default, k)]
            if given:
                raise InputError(f"{given[0]} is a setting of mode=esimcse (this run's mode is {mc.mode})")
        fields = ("text", "positive", "negative") if mc.mode == "sup" else ("text",)
        self.fields = [f for f in fields if f in recs[0]]
        for f in self.fields[1:]:
            missing = next((r for r in recs if f not in r), None)
            if missing is not None:
                raise InputError(f"missing (give {f!r} on every record or on none)", cfg.data, missing["_line"], f)
        self.texts = {f: [r[f] for r in recs] for f in self.fields}
        first: dict[str, int] = {}
        self.ids = torch.tensor([first.setdefault(t, len(first)) for t in self.texts["text"]])
        self.n, self.hash = len(recs), records_hash(recs, tuple(self.fields))
        self.dup_rate = mc.dup_rate if mc.mode == "esimcse" else None
        encoder, self.resolved = text_encoder(cfg)
        self.resolved["method_config"] = mc
        self.encoder_name = self.resolved["encoder"]
        self.model = method_cls(encoder, mc).to(device)

    def batch(self, idx: Tensor) -> dict:
        enc = self.model.encoder
        rows = idx.tolist()
        tokens = {f: enc.tokenize([self.texts[f][i] for i in rows]) for f in self.fields}
        if self.dup_rate is not None:
            ids, mask = word_repetition(tokens["text"]["input_ids"], tokens["text"]["attention_mask"], self.dup_rate)
            tokens["repeated"] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in tokens["text"]:
                tokens["repeated"]["token_type_ids"] = torch.zeros_like(ids)
        out = {f: {k: v.to(self.device) for k, v in t.items()} for f, t in tokens.items()}
        out["ids"] = self.ids[idx].to(self.device)
        return out

    def export(self, run: RunDir, extra: dict) -> None:
        export_text_encoder(self.model.encoder, self.encoder_name, run.encoder, extra)

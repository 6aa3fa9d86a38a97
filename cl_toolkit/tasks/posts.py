"""Posts with hashtags ``{"id", "text", "tags": [...]}`` for CD-TOM: the tag vocabulary, a stable
held-out share of posts for score calibration, cached lower-layer states of the text towers,
batches of posts with their in-batch tags; exports ``encoder/text`` and ``encoder/tag``."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data import load_posts, read_tag_list, records_hash, tag_text
from ..encoders import collate_cache, export_text_encoder
from ..io import InputError, RunDir
from . import Task
from .text import text_encoder


def holdout_mask(ids: list[str], fraction: float) -> list[bool]:
    """A stable split by id hash: True for the held-out posts (none below 200 posts)."""
    if fraction <= 0 or len(ids) < 200:
        return [False] * len(ids)
    return [int(hashlib.sha1(i.encode()).hexdigest()[:8], 16) % 10000 < fraction * 10000 for i in ids]


@dataclass
class PostsSplit:
    """The vocabulary, the training posts (those with a vocabulary tag, not held out) and the
    posts the score calibration is fitted on."""

    vocab: list[str]
    train: list[dict]
    calibration: list[dict]
    calibrated_on: str          # "holdout", or "train" when there are too few posts to hold some out
    skipped: int                # posts without a vocabulary tag


def split_posts(posts: list[dict], tags_file: str, holdout: float, where: str) -> PostsSplit:
    """``tags_file`` fixes the vocabulary (default: every tag of the posts)."""
    vocab = read_tag_list(tags_file) if tags_file else sorted({t for p in posts for t in p["tags"]})
    known = set(vocab)
    held = holdout_mask([p["id"] for p in posts], holdout)
    train = [p for p, h in zip(posts, held) if not h and any(t in known for t in p["tags"])]
    if not train:
        raise InputError("no post has a tag of the vocabulary; nothing to train on", tags_file or where)
    skipped = sum(1 for h in held if not h) - len(train)
    calibration = [p for p, h in zip(posts, held) if h] or train[:2000]
    return PostsSplit(vocab, train, calibration, "holdout" if any(held) else "train", skipped)


class PostsTask(Task):
    """Posts with tags -> cached tower inputs; batches of posts with their in-batch tags."""

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: list[dict] | None = None):
        super().__init__(cfg, method_cls, device, data)
        posts = data if data is not None else load_posts(cfg.data)
        mc = cfg.method_config
        split = split_posts(posts, mc.tags, mc.calibration_holdout, cfg.data)
        if split.skipped:
            sys.stderr.write(f"cltk: {split.skipped} post(s) without a vocabulary tag are not used for training\n")
        index = {t: i for i, t in enumerate(split.vocab)}
        self.n, self.vocab = len(split.train), split.vocab
        negatives = ("negative",) if any("negative" in p for p in posts) else ()
        self.hash = records_hash(posts, ("text", "tags") + negatives)
        self.post_tags = [[index[t] for t in p["tags"] if t in index] for p in split.train]
        # hard-negative tags (``negative``): vocabulary tags that are not the post's own
        self.post_negatives = [[index[t] for t in p.get("negative") or [] if t in index and index[t] not in gold]
                               for p, gold in zip(split.train, map(set, self.post_tags))]
        freq = torch.ones(len(split.vocab))            # add-one smoothed tag frequency (for logQ)
        for tags in self.post_tags:
            freq[tags] += 1
        self.log_prior = (freq / freq.sum()).log()

        enc, self.resolved = text_encoder(cfg, head=True)
        self.encoder_name = self.resolved["encoder"]
        n_layers = enc.model.config.num_hidden_layers
        if not 0 <= mc.finetune_layers <= n_layers:
            raise InputError(f"finetune_layers must be between 0 and {n_layers}, got {mc.finetune_layers}")
        start = n_layers - mc.finetune_layers
        if mc.finetune_layers:
            enc.layers()  # refuses models without BERT-style layers, before the long caching step
        self.posts = enc.cache([p["text"] for p in split.train], start)
        self.tags = enc.cache([tag_text(t) for t in split.vocab], start)
        self.model = method_cls(enc, mc, start).to(device)

    def batch(self, idx: Tensor) -> dict:
        rows = idx.tolist()
        tags = sorted({t for r in rows for t in self.post_tags[r] + self.post_negatives[r]})
        col = {t: j for j, t in enumerate(tags)}
        pos = torch.zeros(len(rows), len(tags), dtype=torch.bool)
        for i, r in enumerate(rows):
            pos[i, [col[t] for t in self.post_tags[r]]] = True
        return {"posts": collate_cache(self.posts, rows, self.device),
                "tags": collate_cache(self.tags, tags, self.device),
                "positives": pos.to(self.device), "log_prior": self.log_prior[tags].to(self.device),
                "tag_ids": torch.tensor(tags, dtype=torch.long, device=self.device)}

    def export(self, run: RunDir, extra: dict) -> None:
        export_text_encoder(self.model.encoder, self.encoder_name, run.tower("text"), extra)
        export_text_encoder(self.model.tag_encoder, self.encoder_name, run.tower("tag"), extra)

"""CD-TOM: contrastive hashtag generation (post tower + tag tower, multi-positive InfoNCE).

A post encoder and a tag encoder (Hugging Face text models, default all-MiniLM-L6-v2) embed a
post and its tags close together; the other tags of the batch are negatives, a post's other
gold tags are masked (multi-positive), and an optional logQ correction removes the advantage
popular tags get from being sampled often. Records: ``{"id", "text", "tags": [...]}``.

CPU recipe: the transformer's lower layers are frozen and their output is computed once
(``finetune_layers`` = how many top layers still train; 0 = cached pooled features, only the
towers' linear heads train), so a step costs the top layers and heads, not the whole model.
Both heads start as the identity, so training starts from the zero-shot solution.

At the end the tag vocabulary (every tag of the data, or ``tags`` = a file with one per line)
is embedded with the tag tower into ``RUN/tag_index/`` (a Faiss index folder), and a score
calibration is fitted on held-out posts (``RUN/tagger.json``; see ``cl_toolkit.tag``).
"""

from __future__ import annotations

import copy
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..data import load_posts, read_tag_list, records_hash, tag_text
from ..encoders import collate_cache
from ..io import InputError
from ..losses import multi_positive_info_nce
from . import StepOutput, export_text_encoder, make_config, register_method, text_encoder


@dataclass
class Config:
    temperature: float = 0.05
    shared_towers: bool = False      # one tower (encoder + head) for posts and tags, or two
    finetune_layers: int = 2         # top transformer layers that train (0: heads on cached features)
    logq_correction: bool = False    # subtract log tag frequency from the logits (Yi et al. 2019)
    tags: str = ""                   # tag vocabulary file (default: every tag of the data)
    calibration_holdout: float = 0.05  # fraction of posts (by id hash) kept out to calibrate scores


def holdout_mask(ids: list[str], fraction: float) -> list[bool]:
    """A stable split by id hash: True for the held-out posts (none below 200 posts)."""
    if fraction <= 0 or len(ids) < 200:
        return [False] * len(ids)
    return [int(hashlib.sha1(i.encode()).hexdigest()[:8], 16) % 10000 < fraction * 10000 for i in ids]


class PostsTask:
    """Posts with tags -> cached tower inputs; batches of posts with their in-batch tags."""

    def __init__(self, cfg, entry, device: torch.device, data: list[dict] | None = None):
        posts = data if data is not None else load_posts(cfg.data)
        mc = make_config(entry.config, cfg.method_config)
        vocab = read_tag_list(mc.tags) if mc.tags else sorted({t for p in posts for t in p["tags"]})
        index = {t: i for i, t in enumerate(vocab)}
        held = holdout_mask([p["id"] for p in posts], mc.calibration_holdout)
        train = [p for p, h in zip(posts, held) if not h and any(t in index for t in p["tags"])]
        if not train:
            raise InputError("no post has a tag of the vocabulary; nothing to train on", mc.tags or cfg.data)
        skipped = sum(1 for p, h in zip(posts, held) if not h) - len(train)
        if skipped:
            sys.stderr.write(f"cltk: {skipped} post(s) without a vocabulary tag are not used for training\n")
        self.cfg, self.device, self.n, self.vocab = cfg, device, len(train), vocab
        self.hash = records_hash(posts, ("text", "tags"))
        self.calibration_posts = [p for p, h in zip(posts, held) if h] or train[:2000]
        self.calibrated_on = "holdout" if any(held) else "train"
        self.post_tags = [[index[t] for t in p["tags"] if t in index] for p in train]
        freq = torch.ones(len(vocab))            # add-one smoothed tag frequency (for logQ)
        for tags in self.post_tags:
            freq[tags] += 1
        self.log_prior = (freq / freq.sum()).log()

        enc = text_encoder(cfg, head=True)
        n_layers = enc.model.config.num_hidden_layers
        if not 0 <= mc.finetune_layers <= n_layers:
            raise InputError(f"finetune_layers must be between 0 and {n_layers}, got {mc.finetune_layers}")
        self.start = n_layers - mc.finetune_layers
        if mc.finetune_layers:
            enc.layers()  # refuses models without BERT-style layers, before the long caching step
        self.posts = enc.cache([p["text"] for p in train], self.start)
        self.tags = enc.cache([tag_text(t) for t in vocab], self.start)
        self.model = entry.cls(enc, mc, self.start).to(device)

    def batch(self, idx: Tensor) -> dict:
        rows = idx.tolist()
        tags = sorted({t for r in rows for t in self.post_tags[r]})
        col = {t: j for j, t in enumerate(tags)}
        pos = torch.zeros(len(rows), len(tags), dtype=torch.bool)
        for i, r in enumerate(rows):
            pos[i, [col[t] for t in self.post_tags[r]]] = True
        return {"posts": collate_cache(self.posts, rows, self.device),
                "tags": collate_cache(self.tags, tags, self.device),
                "positives": pos.to(self.device), "log_prior": self.log_prior[tags].to(self.device),
                "tag_ids": torch.tensor(tags, dtype=torch.long, device=self.device)}

    def export(self, out: Path, extra: dict) -> None:
        from ..tag import finish_run  # the tag index and calibration (apps layer, imported lazily)

        m = self.model
        export_text_encoder(m.encoder, self.cfg.encoder, out / "encoder" / "text", extra)
        export_text_encoder(m.tag_encoder, self.cfg.encoder, out / "encoder" / "tag", extra)
        finish_run(out, m.encoder, m.tag_encoder, self.vocab, self.calibration_posts, self.calibrated_on)


@register_method("cdtom", "text: post tower + hashtag tower, multi-positive InfoNCE over in-batch tags "
                 "(optional logQ correction); writes a tag index for `cltk tag`",
                 "CD-TOM contrastive hashtag generation (post/hashtag BERT towers, in-batch InfoNCE); "
                 "logQ: Yi et al. 2019, RecSys")
class CDTOM(nn.Module):
    defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 256, "warmup": 0.05,
                "epochs": 10, "encoder_args": {"max_length": 64}}
    task = PostsTask

    def __init__(self, encoder: nn.Module, cfg: Config, start_layer: int):
        super().__init__()
        self.cfg, self.start = cfg, start_layer
        encoder.freeze_below(start_layer)   # the layers below are cached
        self.encoder = encoder
        self.tag_encoder = encoder if cfg.shared_towers else copy.deepcopy(encoder)

    def forward(self, batch: dict, progress: float) -> StepOutput:
        p = F.normalize(self.encoder.from_cache(batch["posts"], self.start).float(), dim=-1)
        t = F.normalize(self.tag_encoder.from_cache(batch["tags"], self.start).float(), dim=-1)
        pos, prior = batch["positives"], batch["log_prior"]
        first = pos.float().argmax(1)             # each post's first gold tag, for the collapse monitor
        local_t = t[first]
        weight = 1.0
        if dist.world() > 1:
            t, pos, prior, weight = _global_tags(t, pos, prior, batch["tag_ids"])
        loss = multi_positive_info_nce(p, t, pos, self.cfg.temperature, prior if self.cfg.logq_correction else None)
        return StepOutput(loss * weight, p, local_t)

    def after_step(self, progress: float) -> None:
        pass


def _global_tags(t: Tensor, pos: Tensor, prior: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
    """Under torchrun: the distinct tags of the global batch as keys. Each rank's tag
    embeddings are padded to a common count and gathered (with gradients); a tag on several
    ranks is kept once (its first copy), so the keys are those of one process on the whole
    batch. Returns the keys, this rank's posts' positives among them, their log priors, and
    the weight that turns this rank's mean into its share of the global mean over positive pairs."""
    size = dist.all_reduce_(torch.tensor([len(ids)]), "max")
    pad = int(size) - len(ids)
    all_t, _ = dist.gather(torch.cat([t, t.new_zeros(pad, t.shape[1])]))
    all_ids = dist.gather_nograd(torch.cat([ids, ids.new_full((pad,), -1)]))
    all_prior = dist.gather_nograd(torch.cat([prior, prior.new_zeros(pad)]))
    seen: set[int] = set()
    keep = [j for j, i in enumerate(all_ids.tolist()) if i >= 0 and not (i in seen or seen.add(i))]
    keep_t = torch.tensor(keep, device=t.device)
    all_ids = all_ids[keep_t]
    gold = (pos.float() @ (ids[:, None] == all_ids[None, :]).float()) > 0
    pairs = torch.tensor([float(gold.sum())])
    total = dist.all_reduce_(pairs.clone())
    return all_t[keep_t], gold, all_prior[keep_t], float(pairs * dist.world() / total)


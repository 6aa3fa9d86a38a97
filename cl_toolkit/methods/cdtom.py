"""CD-TOM: contrastive hashtag generation (post tower + tag tower, multi-positive InfoNCE).

A post encoder and a tag encoder (Hugging Face text models, default all-MiniLM-L6-v2) embed a
post and its tags close together; the other tags of the batch are negatives, a post's other
gold tags are masked (multi-positive), and an optional logQ correction removes the advantage
popular tags get from being sampled often. Records: ``{"id", "text", "tags": [...][, "negative": [...]]}``:
a post's ``negative`` tags (hard negatives, e.g. from ``cltk mine``) join the batch's tags, as
negatives of that post (and of every post they are not gold for).

``queue=N`` (as WenLan's momentum queues, on the tag side only: the loss has no tag -> post
direction) adds the momentum tag tower's keys of the N most recently seen tags that the batch does
not hold (newest copy of each) as extra negatives, so a post meets most of a large vocabulary at
the memory of a small batch; the momentum tag tower is an EMA (constant rate ``momentum``) of the
tag tower's trainable layers. ``tau_plus`` / ``beta``: DCL / HCL on each positive pair's negatives.

CPU recipe: the transformer's lower layers are frozen and their output is computed once
(``finetune_layers`` = how many top layers still train; 0 = cached pooled features, only the
towers' linear heads train), so a step costs the top layers and heads, not the whole model.
Both heads start as the identity, so training starts from the zero-shot solution.

The run's data comes from ``tasks.PostsTask``. After the towers are exported, the pretraining
pipeline embeds the tag vocabulary (every tag of the data, or ``tags`` = a file with one per line)
with the tag tower into ``RUN/tag_index/`` (a Faiss index folder) and fits a score calibration on
held-out posts (``RUN/tagger.json``): ``cl_toolkit.tag.finish_run``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..losses import multi_positive_info_nce
from ..tasks.posts import PostsTask
from . import register_method
from .base import KeyQueue, Method, StepOutput, copy_sharing_frozen, momentum_copy, trained_pairs


@dataclass
class Config:
    temperature: float = 0.05
    shared_towers: bool = False      # one tower (encoder + head) for posts and tags, or two
    finetune_layers: int = 2         # top transformer layers that train (0: heads on cached features)
    logq_correction: bool = False    # subtract log tag frequency from the logits (Yi et al. 2019)
    tags: str = ""                   # tag vocabulary file (default: every tag of the data)
    calibration_holdout: float = 0.05  # fraction of posts (by id hash) kept out to calibrate scores
    queue: int = 0                   # momentum-tower keys of this many recently seen tags as extra negatives (0: none)
    momentum: float = 0.99           # constant EMA rate of the momentum tag tower (with queue)
    tau_plus: float = 0.0            # DCL: prior share of false negatives (Chuang et al. 2020); 0 = InfoNCE
    beta: float = 0.0                # HCL: weight negatives by exp(beta * s / t) (Robinson et al. 2021); 0 = uniform


@register_method("cdtom", "text: post tower + hashtag tower, multi-positive InfoNCE over in-batch tags "
                 "(optional logQ correction); writes a tag index for `cltk tag`",
                 "CD-TOM contrastive hashtag generation (post/hashtag BERT towers, in-batch InfoNCE); "
                 "logQ: Yi et al. 2019, RecSys")
class CDTOM(Method):
    defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 256, "warmup": 0.05,
                "epochs": 10, "encoder_args": {"max_length": 64}}
    task = PostsTask

    def __init__(self, encoder: nn.Module, cfg: Config, start_layer: int):
        super().__init__()
        self.cfg, self.start = cfg, start_layer
        encoder.freeze_below(start_layer)   # the layers below are cached
        self.encoder = encoder
        # the towers differ only in what trains: the tag tower shares the frozen weights (the
        # embeddings and the cached layers) instead of holding a copy of them
        self.tag_encoder = encoder if cfg.shared_towers else copy_sharing_frozen(encoder)
        self.queued = cfg.queue > 0
        if self.queued:
            self.momentum_tags = momentum_copy(self.tag_encoder)    # the frozen lower layers are shared
            self.tag_queue = KeyQueue(cfg.queue, encoder.out_dim, features=1)   # features: log prior
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None

    def train(self, mode: bool = True) -> CDTOM:
        super().train(mode)
        if self.queued:
            self.momentum_tags.eval()                 # keys without dropout noise
        return self

    def forward(self, batch: dict, progress: float) -> StepOutput:
        p = F.normalize(self.encoder.from_cache(batch["posts"], self.start).float(), dim=-1)
        t = F.normalize(self.tag_encoder.from_cache(batch["tags"], self.start).float(), dim=-1)
        pos, prior, ids = batch["positives"], batch["log_prior"], batch["tag_ids"]
        first = pos.float().argmax(1)             # each post's first gold tag, for the collapse monitor
        local_t = t[first]
        weight = 1.0
        if dist.world() > 1:
            t, pos, prior, weight, ids = _global_tags(t, pos, prior, ids)
        if self.queued:
            t, pos, prior = self._with_queue(batch, t, pos, prior, ids)
        cfg = self.cfg
        loss = multi_positive_info_nce(p, t, pos, cfg.temperature, prior if cfg.logq_correction else None,
                                       cfg.tau_plus, cfg.beta)
        return StepOutput(loss * weight, p, local_t)

    def _with_queue(self, batch: dict, t: Tensor, pos: Tensor, prior: Tensor,
                    ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The keys plus the queued tags the (global) batch does not hold, newest copy of each; this
        batch's momentum keys wait in ``_pending`` for ``after_step``."""
        with torch.no_grad():
            k = F.normalize(self.momentum_tags.from_cache(batch["tags"], self.start).float(), dim=-1)
            kp, kid = batch["log_prior"], batch["tag_ids"]
            if dist.world() > 1:
                k, _, kp, _, kid = _global_tags(k, batch["positives"], kp, kid)
            self._pending = (k, kid, kp)
            q = self.tag_queue
            order = q.newest_first()
            seen, keep = set(ids.tolist()), []
            for slot, tag in zip(order.tolist(), q.ids[order].tolist()):
                if tag >= 0 and tag not in seen:
                    seen.add(tag)
                    keep.append(slot)
            rows = torch.tensor(keep, dtype=torch.long, device=t.device)
        extra = pos.new_zeros(len(pos), len(keep))
        return (torch.cat([t, q.keys[rows]]), torch.cat([pos, extra], 1),
                torch.cat([prior, q.features[rows, 0].to(prior.dtype)]))

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return trained_pairs(self.tag_encoder, self.momentum_tags) if self.queued else []

    def momentum(self, progress: float) -> float:
        return self.cfg.momentum       # constant, as MoCo's

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        if self._pending is not None:   # every rank enqueues the same global tags
            k, ids, prior = self._pending
            self.tag_queue.push(k, ids, prior[:, None])
            self._pending = None


def _global_tags(t: Tensor, pos: Tensor, prior: Tensor,
                 ids: Tensor) -> tuple[Tensor, Tensor, Tensor, float, Tensor]:
    """Under torchrun: the distinct tags of the global batch as keys. Each rank's tag
    embeddings are padded to a common count and gathered (with gradients); a tag on several
    ranks is kept once (its first copy), so the keys are those of one process on the whole
    batch. Returns the keys, this rank's posts' positives among them, their log priors, the
    weight that turns this rank's mean into its share of the global mean over positive pairs, and
    the keys' tag ids."""
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
    return all_t[keep_t], gold, all_prior[keep_t], float(pairs * dist.world() / total), all_ids


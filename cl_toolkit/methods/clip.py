"""CLIP-style dual towers: Learning Transferable Visual Models From Natural Language Supervision
(Radford et al. 2021, arXiv:2103.00020); locked towers as in LiT (Zhai et al. 2022, arXiv:2111.07991);
cross-modal momentum queues as in WenLan / BriVL (Huo et al. 2021, arXiv:2103.06561); soft targets
as in CWCL (Srinivasa et al. 2023, arXiv:2309.14580).

Records ``{"id", "text", "image"[, "negative"]}``. Image tower: any registered image encoder plus a
linear projection; text tower: a Hugging Face text encoder (default all-MiniLM-L6-v2) plus a linear
head; symmetric InfoNCE with a learnable temperature, duplicate captions in a batch masked as
positives. On a CPU the text tower is locked by default: its pooled features are computed once
and only its head trains (``text_layers`` unlocks that many top layers, fed from cached hidden
states); ``lock_image`` freezes the image backbone instead, and ``init_image`` starts it from a
``cltk pretrain`` run or ``encoder/`` folder. Exports ``encoder/image`` and ``encoder/text``.

Options on the negatives and the targets:
- ``queue=N`` (WenLan): momentum copies of both towers (EMA at constant rate ``momentum``, as
  MoCo) embed each pair; an image query is contrasted with the momentum text keys of the batch
  plus a queue of the N most recent ones, a text query with the image keys plus an image queue.
  A queued key of the query's own caption (or, with ``same_caption`` < 1, a near-duplicate) is
  masked, not a negative. Under torchrun every rank enqueues the keys of the global batch.
- ``negative`` captions in the records (e.g. from ``cltk mine``): extra text keys for the image
  queries only (NegCLIP's hard-negative captions), masked where they equal the query's caption.
- ``cwcl=true``: targets spread over the captions by the frozen caption features' similarity,
  w_ij = ((1 + c_i . c_j) / 2) ** cwcl_power, normalised per row, instead of one-hot: near-duplicate
  captions are partly positives rather than negatives (``losses.soft_target_info_nce``).
- ``tau_plus`` / ``beta``: DCL / HCL on the negatives' term (``losses.debiased_cross_entropy``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..encoders import DEFAULT_TEXT_ENCODER
from ..losses import cwcl_targets, cwcl_weights, info_nce, soft_target_info_nce
from ..tasks.pairs import PairsTask
from . import register_method
from .base import KeyQueue, Method, StepOutput, momentum_copy, trained_pairs


@dataclass
class Config:
    text_encoder: str = DEFAULT_TEXT_ENCODER
    text_max_length: int = 64
    text_layers: int = 0            # top text transformer layers that train (0: locked text tower, head only)
    lock_image: bool = False        # freeze the image backbone (its projection still trains)
    init_image: str = ""            # start the image backbone from this run dir / encoder folder
    temperature: float = 0.07       # initial; learnable unless learn_temperature is false
    learn_temperature: bool = True
    same_caption: float = 1.0       # captions this similar (cosine of the frozen text features) count as duplicates
    queue: int = 0                  # WenLan: momentum keys of this many recent pairs per modality (0: in-batch only)
    momentum: float = 0.99          # constant EMA rate of the momentum towers (with queue)
    cwcl: bool = False              # soft targets weighted by caption similarity (CWCL) instead of one-hot
    cwcl_power: float = 1.0         # sharpness of CWCL's weights ((1 + cos) / 2) ** power; 1 = the paper's
    tau_plus: float = 0.0           # DCL: prior share of false negatives (Chuang et al. 2020); 0 = InfoNCE
    beta: float = 0.0               # HCL: weight negatives by exp(beta * s / t) (Robinson et al. 2021); 0 = uniform


@register_method("clip", "image-text pairs: image tower + text tower, symmetric InfoNCE, learnable temperature "
                 "(locked text tower by default on a CPU); options: momentum queues, CWCL soft targets, "
                 "hard-negative captions, DCL / HCL",
                 "Radford et al. 2021, CLIP, arXiv:2103.00020; Zhai et al. 2022, LiT, arXiv:2111.07991; "
                 "Huo et al. 2021, WenLan, arXiv:2103.06561; Srinivasa et al. 2023, CWCL, arXiv:2309.14580")
class CLIP(Method):
    defaults = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "batch_size": 256, "warmup": 0.02,
                "augment": "simclr", "aug_strength": 0.0, "min_scale": 0.5, "epochs": 30}
    # 30 epochs: the best of 15 / 30 / 60 on validation zero-shot accuracy (docs/benchmarks.md)
    task = PairsTask

    def __init__(self, image: nn.Module, text: nn.Module, cfg: Config, start_layer: int):
        super().__init__()
        self.cfg, self.start = cfg, start_layer
        self.encoder = image                     # the trainer's kNN monitor and exports use .encoder
        self.text_encoder = text
        text.freeze_below(start_layer)
        if cfg.lock_image:
            for p in image.backbone.parameters():
                p.requires_grad_(False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.temperature)),
                                        requires_grad=cfg.learn_temperature)
        self.queued = cfg.queue > 0
        if self.queued:
            self.momentum_image = momentum_copy(image)     # the locked parts are shared, not copied
            self.momentum_text = momentum_copy(text)
            features = text.out_dim if cfg.same_caption < 1 or cfg.cwcl else 0
            self.image_queue = KeyQueue(cfg.queue, text.out_dim, features)
            self.text_queue = KeyQueue(cfg.queue, text.out_dim, features)
        self._pending: tuple | None = None

    def train(self, mode: bool = True) -> CLIP:
        super().train(mode)
        if self.queued:
            self.momentum_text.eval()                 # keys without dropout noise
        return self

    def represent(self, batch: dict, progress: float) -> list[Tensor]:
        """Per-pair: the normalised image and text embeddings (and the hard-negative caption's)."""
        if self.cfg.lock_image:
            self.encoder.backbone.eval()         # frozen BN statistics too
        img = F.normalize(self.encoder(batch["image"]).float(), dim=-1)
        txt = F.normalize(self.text_encoder.from_cache(batch["text"], self.start).float(), dim=-1)
        if "negative" in batch:
            return [img, txt, F.normalize(self.text_encoder.from_cache(batch["negative"], self.start).float(), dim=-1)]
        return [img, txt]

    @torch.no_grad()
    def _momentum_keys(self, batch: dict) -> list[Tensor | None]:
        if self.cfg.lock_image:
            self.momentum_image.backbone.eval()
        text = lambda f: F.normalize(self.momentum_text.from_cache(batch[f], self.start).float(), dim=-1)  # noqa: E731
        return [F.normalize(self.momentum_image(batch["image"]).float(), dim=-1), text("text"),
                text("negative") if "negative" in batch else None]

    def objective(self, reps: list[Tensor], batch: dict, progress: float) -> StepOutput:
        """Both directions of this rank's pairs against the keys: the global batch's (gathered
        under torchrun; the momentum towers' with a queue), the hard-negative captions, the queues.
        Duplicate captions are not negatives (or, with CWCL, soft positives)."""
        img, txt, *neg = reps
        ids, feats = batch["ids"], batch.get("dup_features")
        kimg, ktxt, kneg = self._momentum_keys(batch) if self.queued else (img, txt, neg[0] if neg else None)
        (all_img, offset), (all_txt, _) = dist.gather(kimg), dist.gather(ktxt)
        all_ids = dist.gather_nograd(ids)
        all_feats = None if feats is None else dist.gather_nograd(feats)
        texts, images = [(all_txt, all_ids, all_feats)], [(all_img, all_ids, all_feats)]
        if kneg is not None:
            nf = batch.get("negative_features")
            texts.append((dist.gather(kneg)[0], dist.gather_nograd(batch["negative_ids"]),
                          None if nf is None else dist.gather_nograd(nf)))
        if self.queued:
            self._pending = (all_img, all_txt, all_ids, all_feats)
            for side, q in ((texts, self.text_queue), (images, self.image_queue)):
                side.append((q.keys, q.ids, q.features if feats is not None else None))
        t = 1 / self.logit_scale.exp().clamp(max=100)
        loss = self._direction(img, texts, ids, feats, offset, t) + self._direction(txt, images, ids, feats, offset, t)
        return StepOutput(loss / 2, img, txt)

    def _direction(self, q: Tensor, keys: list[tuple], ids: Tensor, feats: Tensor | None, offset: int,
                   t: Tensor) -> Tensor:
        """One direction: queries ``q`` against the concatenated (keys, their caption ids, their
        caption features) parts; the positive of query i is key ``offset + i``."""
        cfg = self.cfg
        k = torch.cat([x for x, _, _ in keys])
        kid = torch.cat([i for _, i, _ in keys])
        kf = torch.cat([f for _, _, f in keys]) if feats is not None else None
        empty = (kid < 0)[None, :].expand(len(q), -1)        # queue slots not filled yet
        if cfg.cwcl:
            w = cwcl_weights(feats, kf, cfg.cwcl_power).masked_fill(empty, 0)
            return soft_target_info_nce(q, k, t, cwcl_targets(w), empty)
        same = ids[:, None] == kid[None, :]
        if feats is not None:
            same |= feats.float() @ kf.float().T >= cfg.same_caption
        return info_nce(q, k, t, same | empty, offset, cfg.tau_plus, cfg.beta)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        if not self.queued:
            return []
        return trained_pairs(self.encoder, self.momentum_image) + trained_pairs(self.text_encoder, self.momentum_text)

    def momentum(self, progress: float) -> float:
        return self.cfg.momentum       # constant, as MoCo's (and WenLan's)

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        if self._pending is not None:   # every rank enqueues the keys of the same global batch
            img, txt, ids, feats = self._pending
            self.image_queue.push(img, ids, feats)
            self.text_queue.push(txt, ids, feats)
            self._pending = None

"""CLIP-style dual towers: Learning Transferable Visual Models From Natural Language Supervision
(Radford et al. 2021, arXiv:2103.00020); locked towers as in LiT (Zhai et al. 2022, arXiv:2111.07991).

Records ``{"id", "text", "image"}``. Image tower: any registered image encoder plus a linear
projection; text tower: a Hugging Face text encoder (default all-MiniLM-L6-v2) plus a linear
head; symmetric InfoNCE with a learnable temperature, duplicate captions in a batch masked as
positives. On a CPU the text tower is locked by default: its pooled features are computed once
and only its head trains (``text_layers`` unlocks that many top layers, fed from cached hidden
states); ``lock_image`` freezes the image backbone instead, and ``init_image`` starts it from a
``cltk pretrain`` run or ``encoder/`` folder. Exports ``encoder/image`` and ``encoder/text``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..encoders import DEFAULT_TEXT_ENCODER
from ..losses import clip_loss
from ..tasks.pairs import PairsTask
from . import register_method
from .base import Method, StepOutput, duplicate_mask


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


@register_method("clip", "image-text pairs: image tower + text tower, symmetric InfoNCE, learnable temperature "
                 "(locked text tower by default on a CPU)",
                 "Radford et al. 2021, CLIP, arXiv:2103.00020; Zhai et al. 2022, LiT, arXiv:2111.07991")
class CLIP(Method):
    defaults = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "batch_size": 256, "warmup": 0.02,
                "augment": "simclr", "aug_strength": 0.0, "min_scale": 0.5, "epochs": 60}
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

    def represent(self, batch: dict, progress: float) -> list[Tensor]:
        """Per-pair: the normalised image and text embeddings."""
        if self.cfg.lock_image:
            self.encoder.backbone.eval()         # frozen BN statistics too
        img = F.normalize(self.encoder(batch["image"]).float(), dim=-1)
        txt = F.normalize(self.text_encoder.from_cache(batch["text"], self.start).float(), dim=-1)
        return [img, txt]

    def objective(self, reps: list[Tensor], batch: dict, progress: float) -> StepOutput:
        """CLIP loss of this rank's pairs against the global batch (gathered under torchrun);
        duplicate captions are not negatives."""
        img, txt = reps
        (all_img, offset), (all_txt, _) = dist.gather(img), dist.gather(txt)
        dup = duplicate_mask(batch["ids"], batch.get("dup_features"), self.cfg.same_caption)
        scale = self.logit_scale.exp().clamp(max=100)
        return StepOutput(clip_loss(img, txt, scale, dup, (all_img, all_txt), offset), img, txt)

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
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..augment import ViewGenerator, preset
from ..data import load_pairs, records_hash
from ..encoders import (
    DEFAULT_TEXT_ENCODER,
    collate_cache,
    create_encoder,
    create_text_encoder,
    default_encoder,
    encoder_args,
    load_encoder,
)
from ..io import InputError, write_json
from ..losses import clip_loss
from . import StepOutput, duplicate_mask, export_image_encoder, export_text_encoder, make_config, register_method


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


class PairsTask:
    """Image-text pairs: decoded images (one augmented view per step) and cached text inputs."""

    def __init__(self, cfg, entry, device: torch.device, data=None):
        mc = make_config(entry.config, cfg.method_config)
        images, texts = data if data is not None else load_pairs(cfg.data, cfg.channels, cfg.image_size)
        cfg.channels, cfg.image_size = images.images.shape[1], images.images.shape[2]
        cfg.encoder = cfg.encoder or default_encoder(cfg.image_size)
        cfg.encoder_args = encoder_args(cfg.encoder, cfg.encoder_args)
        self.cfg, self.device, self.n = cfg, device, len(images)
        self.hash = records_hash([{**r, "text": t} for r, t in zip(images.records, texts)], ("text", "image"))
        text = create_text_encoder(mc.text_encoder, mc.text_max_length, head=True)
        n_layers = text.model.config.num_hidden_layers
        if not 0 <= mc.text_layers <= n_layers:
            raise InputError(f"text_layers must be between 0 and {n_layers}, got {mc.text_layers}")
        self.start = n_layers - mc.text_layers
        image = create_encoder(cfg.encoder, cfg.channels, cfg.image_size, head_dim=text.out_dim, **cfg.encoder_args)
        if mc.init_image:
            init, spec = load_encoder(mc.init_image, tower="image")
            if spec.get("name") != cfg.encoder or spec.get("args") != cfg.encoder_args:
                raise InputError(f"init_image is a {spec.get('name')} {spec.get('args')}, the run's image encoder "
                                 f"is {cfg.encoder} {cfg.encoder_args}", mc.init_image)
            image.backbone.load_state_dict(init.backbone.state_dict())
        unique = list(dict.fromkeys(texts))
        pos = {t: i for i, t in enumerate(unique)}
        self.text_ids = torch.tensor([pos[t] for t in texts])
        self.cache = text.cache(unique, self.start)
        self.same = mc.same_caption
        if self.same < 1:   # frozen caption features, to find near-duplicate captions in a batch
            pooled = self.cache if isinstance(self.cache, Tensor) else text.cache(unique, n_layers)
            self.caption_features = F.normalize(pooled, dim=-1)
        self.model = entry.cls(image, text, mc, self.start).to(device)
        if cfg.channels_last:
            self.model.encoder.to(memory_format=torch.channels_last)
        self.views = ViewGenerator(preset(cfg.augment, cfg.image_size, cfg.channels, cfg.aug_strength,
                                          cfg.min_scale)[:1], cfg.image_size, cfg.channels).to(device)
        self.images = images.images

    def batch(self, idx: Tensor) -> dict:
        (view,) = self.views(self.images[idx].to(self.device))
        if self.cfg.channels_last:
            view = view.contiguous(memory_format=torch.channels_last)
        tid = self.text_ids[idx]
        out = {"image": view, "text": collate_cache(self.cache, tid.tolist(), self.device), "ids": tid.to(self.device)}
        if self.same < 1:
            out["dup_features"] = self.caption_features[tid].to(self.device)
        return out

    def export(self, out: Path, extra: dict) -> None:
        m = self.model
        export_image_encoder(m.encoder, self.cfg.encoder, self.cfg.encoder_args, out / "encoder" / "image", extra)
        export_text_encoder(m.text_encoder, m.cfg.text_encoder, out / "encoder" / "text", extra)
        scale = float(m.logit_scale.detach().exp().clamp(max=100))
        write_json(out / "clip.json", {"logit_scale": scale, "temperature": 1 / scale})


@register_method("clip", "image-text pairs: image tower + text tower, symmetric InfoNCE, learnable temperature "
                 "(locked text tower by default on a CPU)",
                 "Radford et al. 2021, CLIP, arXiv:2103.00020; Zhai et al. 2022, LiT, arXiv:2111.07991")
class CLIP(nn.Module):
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

    def forward(self, batch: dict, progress: float) -> StepOutput:
        return self.objective(self.represent(batch, progress), batch, progress)

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

    def after_step(self, progress: float) -> None:
        pass

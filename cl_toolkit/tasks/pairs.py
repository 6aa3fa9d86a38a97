"""Image-text pairs ``{"id", "text", "image"[, "negative"]}`` for CLIP-style towers: decoded images
(one augmented view per step) and cached text-tower inputs (captions and hard-negative captions);
exports ``encoder/image``, ``encoder/text`` and ``clip.json``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..augment import ViewGenerator, preset
from ..data import load_pairs, records_hash
from ..encoders import (
    collate_cache,
    create_encoder,
    create_text_encoder,
    default_encoder,
    encoder_args,
    export_image_encoder,
    export_text_encoder,
    load_encoder,
)
from ..io import InputError, RunDir, write_json
from ..io.run import CLIP
from . import Task


class PairsTask(Task):
    """Image-text pairs: decoded images (one augmented view per step) and cached text inputs."""

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: Any = None):
        super().__init__(cfg, method_cls, device, data)
        mc = cfg.method_config
        images, texts = data if data is not None else load_pairs(cfg.data, cfg.channels, cfg.image_size)
        channels, size = images.images.shape[1], images.images.shape[2]
        name = cfg.encoder or default_encoder(size)
        args = encoder_args(name, cfg.encoder_args)
        self.resolved = {"channels": channels, "image_size": size, "encoder": name, "encoder_args": args}
        self.encoder_name, self.encoder_args, self.channels_last = name, args, cfg.channels_last
        self.n = len(images)
        negatives = [r["negative"] for r in images.records] if "negative" in images.records[0] else None
        self.hash = records_hash([{**r, "text": t} for r, t in zip(images.records, texts)],
                                 ("text", "image") + (("negative",) if negatives else ()))
        text = create_text_encoder(mc.text_encoder, mc.text_max_length, head=True)
        n_layers = text.model.config.num_hidden_layers
        if not 0 <= mc.text_layers <= n_layers:
            raise InputError(f"text_layers must be between 0 and {n_layers}, got {mc.text_layers}")
        start = n_layers - mc.text_layers
        image = create_encoder(name, channels, size, head_dim=text.out_dim, **args)
        if mc.init_image:
            init, spec = load_encoder(mc.init_image, tower="image")
            if spec.get("name") != name or spec.get("args") != args:
                raise InputError(f"init_image is a {spec.get('name')} {spec.get('args')}, the run's image encoder "
                                 f"is {name} {args}", mc.init_image)
            image.backbone.load_state_dict(init.backbone.state_dict())
        unique = list(dict.fromkeys(texts + (negatives or [])))
        pos = {t: i for i, t in enumerate(unique)}
        self.text_ids = torch.tensor([pos[t] for t in texts])
        self.negative_ids = torch.tensor([pos[t] for t in negatives]) if negatives else None
        self.cache = text.cache(unique, start)
        self.features = mc.same_caption < 1 or mc.cwcl
        if self.features:   # frozen caption features: near-duplicate captions, CWCL's similarity weights
            pooled = self.cache if isinstance(self.cache, Tensor) else text.cache(unique, n_layers)
            self.caption_features = F.normalize(pooled, dim=-1)
        self.model = method_cls(image, text, mc, start).to(device)
        if cfg.channels_last:
            self.model.encoder.to(memory_format=torch.channels_last)
        self.views = ViewGenerator(preset(cfg.augment, size, channels, cfg.aug_strength, cfg.min_scale)[:1],
                                   size, channels).to(device)
        self.images = images.images

    def batch(self, idx: Tensor) -> dict:
        (view,) = self.views(self.images[idx].to(self.device))
        if self.channels_last:
            view = view.contiguous(memory_format=torch.channels_last)
        tid = self.text_ids[idx]
        out = {"image": view, "text": collate_cache(self.cache, tid.tolist(), self.device), "ids": tid.to(self.device)}
        if self.features:
            out["dup_features"] = self.caption_features[tid].to(self.device)
        if self.negative_ids is not None:
            nid = self.negative_ids[idx]
            out["negative"] = collate_cache(self.cache, nid.tolist(), self.device)
            out["negative_ids"] = nid.to(self.device)
            if self.features:
                out["negative_features"] = self.caption_features[nid].to(self.device)
        return out

    def export(self, run: RunDir, extra: dict) -> None:
        m = self.model
        export_image_encoder(m.encoder, self.encoder_name, self.encoder_args, run.tower("image"), extra)
        export_text_encoder(m.text_encoder, m.cfg.text_encoder, run.tower("text"), extra)
        scale = float(m.logit_scale.detach().exp().clamp(max=100))
        write_json(run.root / CLIP, {"logit_scale": scale, "temperature": 1 / scale})

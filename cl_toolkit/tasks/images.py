"""Images: decoded once into a uint8 tensor, two (or more) augmented views per batch, generated
batched on the training device; exports ``encoder/``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..augment import ViewGenerator, preset
from ..data import ImageData, data_hash, load_images
from ..encoders import create_encoder, default_encoder, encoder_args, export_image_encoder
from ..io import RunDir
from . import Task


class ImageTask(Task):
    """The image methods' data: every record decoded at one size and channel count (the data's
    own unless the config fixes them), the method's model on a registered image encoder, the
    views of the config's augmentation preset."""

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: ImageData | None = None):
        super().__init__(cfg, method_cls, device, data)
        if data is None:
            data = load_images(cfg.data, channels=cfg.channels, size=cfg.image_size)
        channels, size = data.images.shape[1], data.images.shape[2]
        name = cfg.encoder or default_encoder(size)
        args = encoder_args(name, cfg.encoder_args)
        self.resolved = {"channels": channels, "image_size": size, "encoder": name, "encoder_args": args}
        self.n, self.hash = len(data), data_hash(data)
        self.channels_last, self.encoder_name, self.encoder_args = cfg.channels_last, name, args
        model = method_cls(create_encoder(name, channels, size, **args), cfg.method_config).to(device)
        self.model = model.to(memory_format=torch.channels_last) if cfg.channels_last else model
        self.views = ViewGenerator(preset(cfg.augment, size, channels, cfg.aug_strength, cfg.min_scale,
                                          cfg.small_crops), size, channels).to(device)
        self.images = data.images.to(device) if device.type == "cuda" else data.images

    def batch(self, idx: Tensor) -> list[Tensor]:
        v = self.views(self.images[idx].to(self.device, non_blocking=True))
        if self.channels_last:
            v = [x.contiguous(memory_format=torch.channels_last) for x in v]
        return v

    def export(self, run: RunDir, extra: dict) -> None:
        export_image_encoder(self.model.encoder, self.encoder_name, self.encoder_args, run.encoder, extra)

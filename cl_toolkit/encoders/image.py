"""Image backbones (registered by name), the ``ImageEncoder`` wrapper that owns its input
normalisation, and the MLP projector / predictor heads."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..io import InputError
from .registry import ENCODERS, register_encoder


def default_encoder(image_size: int) -> str:
    """The CPU-friendly default: a small convnet for small images, ResNet-18 above 64 px."""
    return "convnet-small" if image_size <= 64 else "resnet18"


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """A VGG-style stack: stages of ``depth`` 3x3 conv-BN-ReLU, 2x max-pool between stages,
    widths doubling from ``width``; the last feature map is pooled (``pool_type`` avg or max)
    to a ``pool`` x ``pool`` grid and flattened: ``pool=1`` is global pooling, a coarser grid
    keeps layout (useful for centred objects). Max pooling (the MAC descriptor of Tolias et
    al. 2016) gives better nearest neighbours than averaging here (docs/benchmarks.md)."""

    def __init__(self, in_channels: int, width: int = 32, stages: int = 3, depth: int = 2, pool: int = 1,
                 pool_type: str = "avg"):
        super().__init__()
        if pool_type not in ("avg", "max"):
            raise ValueError(f"pool_type must be avg or max, got {pool_type!r}")
        layers: list[nn.Module] = []
        c = in_channels
        for s in range(stages):
            w = width * 2**s
            for _ in range(depth):
                layers.append(_conv_bn(c, w))
                c = w
            if s < stages - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool) if pool_type == "avg" else nn.AdaptiveMaxPool2d(pool)
        self.out_dim = c * pool * pool

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)


@register_encoder("convnet-small", "6-layer VGG-style convnet (32-64-128), 3x3 max-pooled (1152-d); fast on a "
                  "CPU at 28-64 px")
def convnet_small(in_channels: int, image_size: int, width: int = 32, stages: int = 3, depth: int = 2,
                  pool: int = 3, pool_type: str = "max") -> nn.Module:
    return ConvNet(in_channels, width, stages, depth, pool, pool_type)


@register_encoder("convnet-tiny", "4-layer convnet (16-32-64), for tests and smoke runs")
def convnet_tiny(in_channels: int, image_size: int, width: int = 16, stages: int = 3, depth: int = 1,
                 pool: int = 1, pool_type: str = "avg") -> nn.Module:
    return ConvNet(in_channels, width, stages, depth, pool, pool_type)


def _resnet(arch: str, in_channels: int, image_size: int, small_stem: bool | None) -> nn.Module:
    import torchvision  # only for ResNets: importing torchvision costs ~1 s that convnet runs do not pay

    net = getattr(torchvision.models, arch)(weights=None)
    small = image_size <= 64 if small_stem is None else small_stem
    if small or in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 3 if small else 7, 1 if small else 2, 1 if small else 3,
                              bias=False)
    if small:
        net.maxpool = nn.Identity()
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


@register_encoder("resnet18", "ResNet-18; 3x3 stride-1 stem without max-pool for images <= 64 px")
def resnet18(in_channels: int, image_size: int, small_stem: bool | None = None) -> nn.Module:
    return _resnet("resnet18", in_channels, image_size, small_stem)


@register_encoder("resnet50", "ResNet-50; 3x3 stride-1 stem without max-pool for images <= 64 px")
def resnet50(in_channels: int, image_size: int, small_stem: bool | None = None) -> nn.Module:
    return _resnet("resnet50", in_channels, image_size, small_stem)


class ImageEncoder(nn.Module):
    """Backbone plus its own input normalisation: float images in [0, 1] -> features; with
    ``head_dim`` a linear projection to that size follows (a two-tower model's image tower)."""

    def __init__(self, backbone: nn.Module, in_channels: int, image_size: int,
                 mean: float | list[float] = 0.5, std: float | list[float] = 0.25, head_dim: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.in_channels, self.image_size = in_channels, image_size
        self.head = nn.Linear(backbone.out_dim, head_dim) if head_dim else None
        self.out_dim: int = head_dim or backbone.out_dim
        m = torch.as_tensor(mean, dtype=torch.float32).expand(in_channels).clone()
        s = torch.as_tensor(std, dtype=torch.float32).expand(in_channels).clone()
        self.register_buffer("mean", m.view(1, -1, 1, 1))
        self.register_buffer("std", s.view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.backbone((x - self.mean) / self.std)
        return self.head(h) if self.head is not None else h


def create_encoder(name: str, in_channels: int, image_size: int, mean: Any = 0.5, std: Any = 0.25,
                   head_dim: int | None = None, **kwargs: Any) -> ImageEncoder:
    """Build a registered image encoder by name (``cltk encoders`` lists them)."""
    if name not in ENCODERS or ENCODERS[name].modality != "image":
        raise InputError(f"unknown image encoder {name!r}; known: "
                         f"{', '.join(sorted(n for n, e in ENCODERS.items() if e.modality == 'image'))}")
    try:
        backbone = ENCODERS[name].factory(in_channels, image_size, **kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(f"bad arguments for encoder {name!r}: {e}") from None
    return ImageEncoder(backbone, in_channels, image_size, mean, std, head_dim)


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2, last_bn: bool = False) -> nn.Sequential:
    """Projector / predictor head: (Linear-BN-ReLU) x (layers-1), then Linear (+BN)."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, out_dim, bias=not last_bn))
    if last_bn:
        mods.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*mods)

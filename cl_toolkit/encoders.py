"""The encoder registry, heads, and the ``encoder/`` export format.

``create_encoder("convnet-small", in_channels=1, image_size=28)`` builds a registered backbone
(a string in, a module out, as timm's ``create_model``). Every image encoder is wrapped in
``ImageEncoder``, which owns its input normalisation, so an exported ``encoder/`` folder
(``model.safetensors`` + ``encoder.json``) is all that inference needs: images scaled to [0, 1]
at ``image_size`` go in, ``embedding_dim`` features come out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .io import InputError, atomic_dir


@dataclass
class EncoderEntry:
    name: str
    factory: Callable[..., nn.Module]
    description: str


ENCODERS: dict[str, EncoderEntry] = {}


def register_encoder(name: str, description: str):
    """Decorator: ``factory(in_channels, image_size, **kwargs) -> nn.Module`` with ``out_dim``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ENCODERS[name] = EncoderEntry(name, fn, description)
        return fn

    return deco


def default_encoder(image_size: int) -> str:
    """The CPU-friendly default: a small convnet for small images, ResNet-18 above 64 px."""
    return "convnet-small" if image_size <= 64 else "resnet18"


# ---------------------------------------------------------------- backbones

def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """A VGG-style stack: stages of ``depth`` 3x3 conv-BN-ReLU, 2x max-pool between stages,
    widths doubling from ``width``; global average pooling (``pool=1``) or a ``pool`` x
    ``pool`` grid flattened, which keeps coarse layout (useful for centred objects)."""

    def __init__(self, in_channels: int, width: int = 32, stages: int = 3, depth: int = 2, pool: int = 1):
        super().__init__()
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
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.out_dim = c * pool * pool

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)


@register_encoder("convnet-small", "6-layer VGG-style convnet (32-64-128), 2x2 pooled (512-d); fast on a CPU "
                  "at 28-64 px")
def convnet_small(in_channels: int, image_size: int, width: int = 32, stages: int = 3, depth: int = 2,
                  pool: int = 2) -> nn.Module:
    return ConvNet(in_channels, width, stages, depth, pool)


@register_encoder("convnet-tiny", "4-layer convnet (16-32-64), for tests and smoke runs")
def convnet_tiny(in_channels: int, image_size: int, width: int = 16, stages: int = 3, depth: int = 1,
                 pool: int = 1) -> nn.Module:
    return ConvNet(in_channels, width, stages, depth, pool)


def _resnet(arch: str, in_channels: int, image_size: int, small_stem: bool | None) -> nn.Module:
    import torchvision

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


# ---------------------------------------------------------------- wrapper, heads

class ImageEncoder(nn.Module):
    """Backbone plus its own input normalisation: float images in [0, 1] -> features."""

    def __init__(self, backbone: nn.Module, in_channels: int, image_size: int,
                 mean: float | list[float] = 0.5, std: float | list[float] = 0.25):
        super().__init__()
        self.backbone = backbone
        self.in_channels, self.image_size = in_channels, image_size
        self.out_dim: int = backbone.out_dim
        m = torch.as_tensor(mean, dtype=torch.float32).expand(in_channels).clone()
        s = torch.as_tensor(std, dtype=torch.float32).expand(in_channels).clone()
        self.register_buffer("mean", m.view(1, -1, 1, 1))
        self.register_buffer("std", s.view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone((x - self.mean) / self.std)


def encoder_args(name: str, args: dict) -> dict:
    """``args`` completed with the factory's defaults, so run configs record every setting."""
    import inspect

    if name not in ENCODERS:
        raise InputError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    params = list(inspect.signature(ENCODERS[name].factory).parameters.values())[2:]
    unknown = set(args) - {p.name for p in params}
    if unknown:
        raise InputError(f"unknown argument(s) {sorted(unknown)} for encoder {name!r}; "
                         f"known: {[p.name for p in params]}")
    return {p.name: args.get(p.name, p.default) for p in params}


def create_encoder(name: str, in_channels: int, image_size: int, mean: Any = 0.5, std: Any = 0.25,
                   **kwargs: Any) -> ImageEncoder:
    """Build a registered image encoder by name (``cltk encoders`` lists them)."""
    if name not in ENCODERS:
        raise InputError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    try:
        backbone = ENCODERS[name].factory(in_channels, image_size, **kwargs)
    except TypeError as e:
        raise InputError(f"bad arguments for encoder {name!r}: {e}") from None
    return ImageEncoder(backbone, in_channels, image_size, mean, std)


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


# ---------------------------------------------------------------- export / load

ENCODER_FORMAT = 1


def encoder_spec(enc: ImageEncoder, name: str, args: dict) -> dict:
    return {
        "format": ENCODER_FORMAT,
        "modality": "image",
        "name": name,
        "args": args,
        "input": {"channels": enc.in_channels, "image_size": enc.image_size, "range": [0, 1],
                  "mean": enc.mean.flatten().tolist(), "std": enc.std.flatten().tolist()},
        "embedding_dim": enc.out_dim,
        "normalize": True,
    }


def save_encoder(enc: ImageEncoder, name: str, args: dict, folder: Path, extra: dict | None = None) -> None:
    """Write ``folder/model.safetensors`` + ``folder/encoder.json``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in enc.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    spec = encoder_spec(enc, name, args) | (extra or {})
    (folder / "encoder.json").write_text(json.dumps(spec, indent=2) + "\n")


def export_encoder(enc: ImageEncoder, name: str, args: dict, out: Path, force: bool = False,
                   extra: dict | None = None) -> None:
    """Atomically export an encoder folder."""
    with atomic_dir(out, force=force) as tmp:
        save_encoder(enc, name, args, tmp, extra)


def resolve_encoder_dir(model: str | Path) -> Path:
    """A run dir (uses ``RUN/encoder``) or an ``encoder/`` folder -> the folder with encoder.json."""
    p = Path(model)
    for cand in (p, p / "encoder"):
        if (cand / "encoder.json").is_file():
            return cand
    raise InputError("not a run dir or encoder folder (no encoder.json)", model)


def load_encoder(model: str | Path, device: str | torch.device = "cpu") -> tuple[ImageEncoder, dict]:
    """Load an exported encoder (no training code needed), in eval mode, with its spec."""
    from safetensors.torch import load_file

    folder = resolve_encoder_dir(model)
    try:
        spec = json.loads((folder / "encoder.json").read_text())
        inp = spec["input"]
        enc = create_encoder(spec["name"], inp["channels"], inp["image_size"], inp["mean"], inp["std"],
                             **spec.get("args", {}))
        enc.load_state_dict(load_file(str(folder / "model.safetensors")))
    except (KeyError, json.JSONDecodeError, RuntimeError, OSError) as e:
        raise InputError(f"cannot load encoder ({type(e).__name__}: {e})", folder) from None
    return enc.to(device).eval(), spec

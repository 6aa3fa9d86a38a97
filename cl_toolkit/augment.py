"""View generators: batched, per-sample random augmentations on the training device (kornia).

A batch of uint8 images [B, C, H, W] goes in, a list of float views in [0, 1] comes out, each
sample with its own random crop/flip/jitter/blur/solarize parameters. Running on the batch
(CPU or GPU) instead of per image in loader workers is what keeps a 2-core CPU busy with
training rather than with PIL.

Presets are sized to the image: the SimCLR paper drops blur for 32 px CIFAR, and hue/saturation
jitter and random grayscale do not apply to one-channel images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import kornia.augmentation as K
import torch
from torch import Tensor, nn


@dataclass
class ViewSpec:
    """One view's augmentation recipe (probabilities and strengths)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: float = 0.5
    jitter: float = 0.8                # probability of colour jitter
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale: float = 0.2
    blur: float = 0.0                  # probability of Gaussian blur
    solarize: float = 0.0              # probability of solarization
    size: int | None = None            # output size; None: the generator's size (multi-crop: smaller)


def preset(name: str, size: int, channels: int, strength: float = 1.0,
           min_scale: float | None = None, small_crops: int = 0) -> list[ViewSpec]:
    """The two view recipes of a method family, sized to the images, plus ``small_crops``
    multi-crop views.

    ``simclr``: two identically distributed views (Chen et al. 2020). ``byol``: asymmetric views,
    blur 1.0/0.1 and solarize 0.0/0.2 (Grill et al. 2020). ``none``: the images unchanged, twice.
    Small images (< 64 px) get no blur and a larger minimum crop; ``strength`` scales the colour
    jitter. Multi-crop (SwAV, Caron et al. 2020): each small crop covers (0.05, min_scale) of the
    image at half the resolution (at least 8 px; the paper's 96 px next to 224 px global crops),
    with the first view's colour jitter."""
    small = size < 64
    scale = (min_scale if min_scale is not None else (0.2 if small else 0.08), 1.0)
    color = channels == 3
    base = dict(crop_scale=scale, brightness=0.4 * strength, contrast=0.4 * strength,
                saturation=0.2 * strength if color else 0.0, hue=0.1 * strength if color else 0.0,
                grayscale=0.2 if color else 0.0)
    if name == "none":  # the images as they are, twice: pre-augmented data, exactness tests
        return [ViewSpec(crop_scale=(1.0, 1.0), flip=0.0, jitter=0.0, grayscale=0.0)] * 2
    if name == "simclr":
        blur = 0.0 if small else 0.5
        specs = [ViewSpec(**base, blur=blur), ViewSpec(**base, blur=blur)]
    elif name == "byol":
        specs = [ViewSpec(**base, blur=0.0 if small else 1.0, solarize=0.0),
                 ViewSpec(**base, blur=0.0 if small else 0.1, solarize=0.2)]
    else:
        raise ValueError(f"unknown augmentation preset {name!r}; choose simclr, byol or none")
    small_spec = ViewSpec(**{**base, "crop_scale": (min(0.05, scale[0]), scale[0])}, size=max(8, size // 2))
    return specs + [small_spec] * small_crops


def _pipeline(spec: ViewSpec, size: int, channels: int) -> nn.Module:
    ops: list[nn.Module] = []
    if spec.crop_scale != (1.0, 1.0):
        ops.append(K.RandomResizedCrop((size, size), scale=spec.crop_scale, cropping_mode="resample"))
    else:
        ops.append(K.Resize((size, size)))
    if spec.flip > 0:
        ops.append(K.RandomHorizontalFlip(p=spec.flip))
    if spec.jitter > 0 and (spec.brightness or spec.contrast or spec.saturation or spec.hue):
        ops.append(K.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue, p=spec.jitter))
    if channels == 3 and spec.grayscale > 0:
        ops.append(K.RandomGrayscale(p=spec.grayscale))
    if spec.blur > 0:
        k = max(3, int(0.1 * size) // 2 * 2 + 1)
        ops.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=spec.blur))
    if spec.solarize > 0:
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=spec.solarize))
    return nn.Sequential(*ops)


class ViewGenerator(nn.Module):
    """uint8 [B, C, H, W] -> list of float [B, C, S, S] views in [0, 1] (S = ``size``, or the
    spec's own size for multi-crop views)."""

    def __init__(self, specs: list[ViewSpec], size: int, channels: int):
        super().__init__()
        self.specs = specs
        self.size = size
        self.views = nn.ModuleList(_pipeline(s, s.size or size, channels) for s in specs)

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[Tensor]:
        x = images.float().div_(255)
        return [v(x).clamp_(0, 1).contiguous() for v in self.views]

    def describe(self) -> list[dict]:
        return [asdict(s) for s in self.specs]


# ---------------------------------------------------------------- text views

def word_repetition(input_ids: Tensor, attention_mask: Tensor, rate: float,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """ESimCSE's positive view (Wu et al. 2022, arXiv:2109.04380): each sentence with some of its
    tokens written twice, so that a positive pair no longer always has equal lengths (unsupervised
    SimCSE's two dropout views do, and the model learns length as a cue). As the authors' code,
    on sub-word tokens: a sentence of L real tokens (its first and last are [CLS] / [SEP], never
    repeated) repeats k tokens at distinct random positions, k uniform in
    [0, max(2, int(rate * L))] (at most L - 2).

    input_ids, attention_mask: [B, T] (right padding, 0 = pad); returns the new ids and mask,
    padded to the longest repeated sentence."""
    rows = []
    for ids, m in zip(input_ids, attention_mask):
        n = int(m.sum())
        inner = max(0, n - 2)
        k = min(inner, int(torch.randint(0, max(2, int(rate * n)) + 1, (1,), generator=generator)))
        counts = torch.ones(n, dtype=torch.long)
        if k:
            counts[1 + torch.randperm(inner, generator=generator)[:k]] = 2
        rows.append(ids[:n].repeat_interleave(counts))
    longest = max(len(r) for r in rows)
    out = input_ids.new_zeros(len(rows), longest)
    mask = attention_mask.new_zeros(len(rows), longest)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return out, mask

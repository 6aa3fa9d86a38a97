"""Collapse statistics of a batch of embeddings (logged by the trainer, reported by eval).

- ``std``: mean over dimensions of the per-dimension std of the L2-normalised embeddings.
  Complete collapse gives 0; spread-out embeddings give about 1/sqrt(D) (Chen & He 2021).
- ``effective_rank``: exp of the entropy of the normalised singular values of the centred
  embedding matrix (Roy & Vetterli 2007); 1 for a single direction, up to min(N, D).
- ``alignment`` (two views) and ``uniformity`` (Wang & Isola 2020), lower is better for both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def effective_rank(z: Tensor) -> float:
    z = z.float()
    s = torch.linalg.svdvals(z - z.mean(0))
    p = s / s.sum().clamp_min(1e-12)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def stats(z1: Tensor, z2: Tensor | None = None) -> dict[str, float]:
    """Collapse statistics of embeddings z1 [N, D] (and a second view z2 of the same rows)."""
    z1 = F.normalize(z1.float(), dim=-1)
    out = {
        "std": float(z1.std(0).mean()),
        "std_ideal": 1 / math.sqrt(z1.shape[1]),
        "effective_rank": effective_rank(z1),
        "uniformity": float(torch.pdist(z1).pow(2).mul(-2).exp().mean().log()) if len(z1) > 1 else 0.0,
    }
    if z2 is not None:
        z2 = F.normalize(z2.float(), dim=-1)
        out["alignment"] = float((z1 - z2).norm(dim=1).pow(2).mean())
    return out


def warnings_for(s: dict[str, float], n: int, rank_fraction: float = 0.01, std_fraction: float = 0.05) -> list[str]:
    """Collapse warnings for the statistics ``s`` of a batch of ``n`` embeddings (from ``stats``).

    - complete collapse: the per-dimension std is under ``std_fraction`` of the 1/sqrt(D) of
      spread-out embeddings (every input maps to nearly the same point);
    - dimensional collapse: the effective rank is under ``rank_fraction`` of the dimension D
      (and under 2 whatever D), i.e. the embeddings span about one direction. Judged only on
      batches of 8 or more rows, as n rows have an effective rank of at most n - 1.
    """
    out = []
    dim = round(1 / s["std_ideal"] ** 2)
    if s["std"] < std_fraction * s["std_ideal"]:
        out.append(f"embeddings collapsed to a point: per-dimension std {s['std']:.2g} "
                   f"(about {s['std_ideal']:.2g} when spread out)")
    elif n >= 8 and s["effective_rank"] < max(2.0, rank_fraction * dim):  # (a point has no rank to speak of)
        out.append(f"dimensional collapse: effective rank {s['effective_rank']:.3g} of {dim} dimensions")
    return out

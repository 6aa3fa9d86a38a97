"""Views of tabular / item features by masking (Yao et al. 2021, "Self-supervised Learning for
Large-scale Item Recommendations", arXiv:2007.12865, section 3.3).

An item is F feature fields (its id, its tokens, token sets, text, numbers). A view masks some
fields: a masked field contributes the zero vector (its "default embedding") to the tower's input.
The two views of an item mask complementary halves, so they share no field and the contrastive
task must relate different features of the same item:

- random feature masking (RFM): per item, a random half of the fields (floor(F/2)) is masked in
  view 1, the other fields in view 2;
- correlated feature masking (CFM): per item, a seed field is drawn uniformly and masked together
  with the floor(F/2) - 1 fields of highest mutual information with it (computed once over the
  catalogue, ``recdata.mutual_information``); view 2 masks the rest. Masking correlated fields
  together stops a view from trivially recovering a masked field from one it still sees.

Masks are bool [B, F], True = masked.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def correlated_groups(mi: np.ndarray) -> Tensor:
    """[F, F] bool: row f is the set CFM masks when f is the seed (f and its floor(F/2) - 1 most
    mutually informative fields; ties by field order)."""
    f = len(mi)
    half = max(1, f // 2)
    groups = torch.zeros(f, f, dtype=torch.bool)
    for s in range(f):
        others = sorted((j for j in range(f) if j != s), key=lambda j: (-mi[s, j], j))
        groups[s, [s, *others[: half - 1]]] = True
    return groups


def random_masks(batch: int, fields: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """RFM: a random floor(F/2) of the fields per row in view 1, the complement in view 2."""
    order = torch.rand(batch, fields, generator=generator).argsort(1)
    m1 = order < max(1, fields // 2)
    return m1, ~m1


def correlated_masks(groups: Tensor, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """CFM: a uniformly drawn seed field per row, masked with its group (``correlated_groups``)
    in view 1; the complement in view 2."""
    seeds = torch.randint(len(groups), (batch,), generator=generator)
    m1 = groups[seeds]
    return m1, ~m1


def feature_masks(kind: str, batch: int, fields: int, groups: Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``kind`` random | correlated | mixed (each row CFM or RFM with probability 1/2)."""
    if kind == "random" or groups is None:
        return random_masks(batch, fields, generator)
    if kind == "correlated":
        return correlated_masks(groups, batch, generator)
    r1, r2 = random_masks(batch, fields, generator)
    c1, c2 = correlated_masks(groups, batch, generator)
    pick = torch.rand(batch, 1, generator=generator) < 0.5
    return torch.where(pick, c1, r1), torch.where(pick, c2, r2)

"""Losses: small pure functions, each with its paper, formula and shapes.

All take embeddings as rows ([N, D]) and return a scalar tensor. The method files decide which
tensors to pass (e.g. both view orders for a symmetric loss); nothing here keeps state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(q: Tensor, k: Tensor, temperature: float = 0.1, mask: Tensor | None = None) -> Tensor:
    """InfoNCE (Oord et al. 2018), one direction: q -> k.

    q, k: [N, D], L2-normalised; row i of k is the positive of row i of q, the other rows of k
    are negatives. ``mask`` [N, N] bool is True where an off-diagonal pair (i, j) is a known
    positive (a duplicate, a shared label) that must not count as a negative; it is removed
    from the denominator. With logits s_ij = q_i . k_j / t:

        L = mean_i [ -s_ii + log sum_{j : j == i or not mask_ij} exp(s_ij) ]
    """
    logits = q.float() @ k.float().T / temperature
    if mask is not None:
        mask = mask & ~torch.eye(len(q), dtype=torch.bool, device=q.device)
        logits = logits.masked_fill(mask, float("-inf"))
    target = torch.arange(len(q), device=q.device)
    return F.cross_entropy(logits, target)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1, mask: Tensor | None = None) -> Tensor:
    """NT-Xent, the SimCLR loss (Chen et al. 2020): InfoNCE over the 2N views.

    z1, z2: [N, D] L2-normalised views of the same N samples. Each of the 2N rows has its
    other view as the positive and the remaining 2N-2 rows (both views of other samples) as
    negatives; a row is never compared with itself. ``mask`` [N, N] as in ``info_nce``
    marks sample pairs (i, j) that are known positives; all four of their view pairs are
    dropped from the denominators.

        L = mean over the 2N rows a of  -s_{a,p(a)} + log sum_{b != a} exp(s_ab),  s = z z^T / t
    """
    n = len(z1)
    z = torch.cat([z1, z2]).float()
    logits = z @ z.T / temperature
    drop = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    if mask is not None:
        m = mask & ~torch.eye(n, dtype=torch.bool, device=z.device)
        drop = drop | m.repeat(2, 2)
    logits = logits.masked_fill(drop, float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's normalised MSE (Grill et al. 2020): p the online prediction, z the target
    projection (no gradient flows into z), both [N, D], normalised here:

        L = mean_i || p_i/|p_i| - z_i/|z_i| ||^2 = mean_i (2 - 2 cos(p_i, z_i))
    """
    p = F.normalize(p.float(), dim=-1)
    z = F.normalize(z.detach().float(), dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()

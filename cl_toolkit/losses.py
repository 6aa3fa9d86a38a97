"""Losses: small pure functions, each with its paper, formula and shapes.

All take embeddings as rows ([N, D]) and return a scalar tensor. The method files decide which
tensors to pass (e.g. both view orders for a symmetric loss); nothing here keeps state.
Losses built on matrix products run in float32 even inside bf16/fp16 autocast (``fp32``):
logits divided by a small temperature and sums over D x D correlation matrices need the
precision a bf16 product does not have.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

_F = TypeVar("_F", bound=Callable[..., Tensor])


def fp32(fn: _F) -> _F:
    """Run ``fn`` with autocast disabled on the device of its first tensor argument."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = args[0][0] if isinstance(args[0], (list, tuple)) else args[0]
        with torch.autocast(first.device.type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@fp32
def info_nce(q: Tensor, k: Tensor, temperature: float = 0.1, mask: Tensor | None = None,
             offset: int = 0, tau_plus: float = 0.0, beta: float = 0.0) -> Tensor:
    """InfoNCE (Oord et al. 2018), one direction: q -> k.

    q: [N, D], k: [M, D] with M >= N, L2-normalised; row ``offset + i`` of k is the positive of
    row i of q, every other row of k is a negative (extra rows are extra negatives: SimCSE's
    hard negatives, or the other ranks' keys of a gathered global batch, where ``offset`` is
    this rank's first row). ``mask`` [N, M] bool is True where a pair (i, j) other than the
    positive is a known positive (a duplicate, a shared label) that must not count as a
    negative; it is removed from the denominator. With logits s_ij = q_i . k_j / t:

        L = mean_i [ -s_i,p(i) + log sum_{j : j == p(i) or not mask_ij} exp(s_ij) ],  p(i) = offset + i

    ``tau_plus`` > 0 (DCL) or ``beta`` > 0 (HCL) replace the sum over negatives by its debiased /
    hardness-weighted estimate (``debiased_cross_entropy``); both 0 is the formula above.
    """
    logits = q.float() @ k.float().T / temperature
    target = torch.arange(len(q), device=q.device) + offset
    if mask is not None:
        mask = mask.clone()
        mask[torch.arange(len(q), device=q.device), target] = False
        logits = logits.masked_fill(mask, float("-inf"))
    return _cross_entropy(logits, target, -1 / temperature, tau_plus, beta)


def _cross_entropy(logits: Tensor, target: Tensor, min_logit: float | Tensor, tau_plus: float,
                   beta: float) -> Tensor:
    """Plain cross-entropy at the neutral settings (the exact code path of before), else DCL / HCL."""
    if tau_plus == 0 and beta == 0:
        return F.cross_entropy(logits, target)
    return debiased_cross_entropy(logits, target, min_logit, tau_plus, beta)


def _log_negatives(neg: Tensor, pos: Tensor, min_logit: float | Tensor, tau_plus: float, beta: float) -> Tensor:
    """log Ng of ``debiased_cross_entropy`` per row: ``neg`` [R, M] logits of the row's negatives
    (-inf elsewhere), ``pos`` [R] the positive's logit."""
    count = torch.isfinite(neg).sum(1).float()
    none = count == 0
    log_count = count.clamp_min(1).log()
    if beta:
        log_r = log_count + torch.logsumexp((1 + beta) * neg, 1) - torch.logsumexp(beta * neg, 1)
    else:
        log_r = torch.logsumexp(neg, 1)
    log_r = log_r.masked_fill(none, float("-inf"))
    if tau_plus:
        c = torch.maximum(log_r.masked_fill(none, 0.0), pos)
        a = torch.exp(log_r - c) - tau_plus * count * torch.exp(pos - c)
        log_ng = torch.where(a > 0, c + a.clamp_min(1e-38).log() - math.log(1 - tau_plus),
                             torch.full_like(a, float("-inf")))
    else:
        log_ng = log_r
    floor = (log_count + min_logit).masked_fill(none, float("-inf"))
    return torch.maximum(log_ng, floor)


@fp32
def debiased_cross_entropy(logits: Tensor, target: Tensor, min_logit: float | Tensor, tau_plus: float = 0.0,
                           beta: float = 0.0) -> Tensor:
    """The contrastive cross-entropy with the negatives' term debiased (DCL: Chuang et al. 2020,
    arXiv:2007.00224) and reweighted toward hard negatives (HCL: Robinson et al. 2021,
    arXiv:2010.04592), as in HCL's reference code.

    logits: [R, M] (s_ij / t, -inf where a pair is not a candidate), target: [R] the column of
    each row's positive; every other finite entry of a row is one of its N negatives.
    ``tau_plus`` in [0, 1): the prior probability that a "negative" shares the anchor's class (a
    false negative); ``beta`` >= 0: the concentration of the hardness weights; ``min_logit``: the
    smallest logit a negative can have (-1/t for cosines), which floors the estimate. With
    l+ = logits[i, target_i], l_j the negatives and w = softmax_j(beta * l_j):

        R  = N * sum_j w_j exp(l_j)                            (= sum_j exp(l_j) when beta = 0)
        Ng = max( (R - N * tau_plus * exp(l+)) / (1 - tau_plus),  N * exp(min_logit) )
        L  = mean_i [ -l+ + log(exp(l+) + Ng) ]

    At tau_plus = 0 and beta = 0 this is the plain cross-entropy (every cosine is >= -1, so the
    floor never binds); beta = 0 alone is DCL, tau_plus = 0 alone HCL's reweighting without the
    debiasing.
    """
    logits = logits.float()
    rows = torch.arange(len(logits), device=logits.device)
    pos = logits[rows, target]
    neg = logits.clone()
    neg[rows, target] = float("-inf")
    log_ng = _log_negatives(neg, pos, min_logit, tau_plus, beta)
    return (torch.logaddexp(pos, log_ng) - pos).mean()


@fp32
def clip_loss(image: Tensor, text: Tensor, logit_scale: Tensor | float, mask: Tensor | None = None,
              keys: tuple[Tensor, Tensor] | None = None, offset: int = 0, tau_plus: float = 0.0,
              beta: float = 0.0) -> Tensor:
    """CLIP's symmetric InfoNCE (Radford et al. 2021): image i and text i are a pair, every
    other text / image of the batch a negative, both directions averaged; the temperature is
    1 / ``logit_scale`` (learnable in the method). ``mask`` [N, M] True where (i, j) are also a
    pair (e.g. duplicate captions; a symmetric relation): masked out of both denominators, not
    negatives. ``keys`` = (all images, all texts) [M, D] of a gathered global batch whose rows
    ``offset..offset+N`` are this rank's (``info_nce``).

        L = ( CE(s, I) + CE(s^T, I) ) / 2,   s_ij = logit_scale * image_i . text_j

    ``tau_plus`` / ``beta``: DCL / HCL in both directions (``info_nce``).
    """
    t = 1 / logit_scale
    if keys is None:
        return (info_nce(image, text, t, mask, 0, tau_plus, beta)
                + info_nce(text, image, t, None if mask is None else mask.T, 0, tau_plus, beta)) / 2
    all_images, all_texts = keys
    return (info_nce(image, all_texts, t, mask, offset, tau_plus, beta)
            + info_nce(text, all_images, t, mask, offset, tau_plus, beta)) / 2


@fp32
def soft_target_info_nce(q: Tensor, k: Tensor, temperature: Tensor | float, targets: Tensor,
                         mask: Tensor | None = None) -> Tensor:
    """InfoNCE against soft targets, one direction (CWCL, Srinivasa et al. 2023, arXiv:2309.14580).

    q: [N, D], k: [M, D] L2-normalised; ``targets`` [N, M] non-negative, each row summing to 1
    (``cwcl_targets``): how much key j also counts as a positive of query i. ``mask`` [N, M] True
    where key j is no candidate for query i at all (e.g. an empty queue slot): out of the
    denominator, and its target must be 0. With s_ij = q_i . k_j / t:

        L = mean_i  - sum_j targets_ij * log softmax_j(s_ij)

    With one-hot targets on the diagonal this is ``info_nce``.
    """
    logits = q.float() @ k.float().T / temperature
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    logp = F.log_softmax(logits, dim=1)
    return -torch.where(targets > 0, targets.float() * logp, torch.zeros_like(logp)).sum(1).mean()


def cwcl_weights(a: Tensor, b: Tensor, power: float = 1.0) -> Tensor:
    """CWCL's intra-modal similarity weights (Srinivasa et al. 2023): a [N, F], b [M, F] features
    of the modality whose encoder is pretrained (here the frozen caption features), L2-normalised.

        w_ij = ((1 + a_i . b_j) / 2) ** power

    The paper's weight is power 1; a larger power sharpens toward "only near-identical
    captions are positives" (w -> 1 for identical captions, -> 0 for the rest)."""
    return ((1 + a.float() @ b.float().T) / 2).clamp(0, 1) ** power


def cwcl_targets(weights: Tensor) -> Tensor:
    """Soft targets from similarity weights [N, M] (non-negative, each row with a positive sum):
    each row divided by its sum. An identity similarity gives one-hot targets (plain InfoNCE)."""
    w = weights.float()
    return w / w.sum(1, keepdim=True)


@fp32
def multi_positive_info_nce(q: Tensor, k: Tensor, positives: Tensor, temperature: float = 0.05,
                            log_prior: Tensor | None = None, tau_plus: float = 0.0, beta: float = 0.0) -> Tensor:
    """InfoNCE with several positives per query (CD-TOM's post -> hashtag loss).

    q: [N, D] queries (posts), k: [M, D] keys (the batch's distinct tags), L2-normalised;
    ``positives`` [N, M] bool, True where key j is a gold tag of query i (every row has at
    least one). Each positive pair is one InfoNCE term whose denominator holds that positive
    and the query's negatives only: the query's other positives are neither in the numerator
    nor counted as negatives. ``log_prior`` [M] (log sampling frequency of each key) applies
    the logQ correction of sampled softmax (Yi et al. 2019): s_ij <- s_ij - log p_j, so tags
    that appear in many batches are not pushed down just for being sampled often.

        L = mean over positive pairs (i, j) of  -s_ij + log( exp(s_ij) + sum_{l : not pos_il} exp(s_il) )

    ``tau_plus`` / ``beta``: each pair's negatives' term debiased / hardness-weighted as in
    ``debiased_cross_entropy`` (its N = the query's negatives).
    """
    logits = q.float() @ k.float().T / temperature
    if log_prior is not None:
        logits = logits - log_prior.float()
    neg = logits.masked_fill(positives, float("-inf"))
    i, j = positives.nonzero(as_tuple=True)
    s = logits[i, j]
    if tau_plus or beta:
        low = -1 / temperature - (0.0 if log_prior is None else log_prior.float().max())
        return (torch.logaddexp(s, _log_negatives(neg[i], s, low, tau_plus, beta)) - s).mean()
    neg_lse = torch.logsumexp(neg, dim=1, keepdim=True).expand_as(logits)   # [N, M]
    return (torch.logaddexp(s, neg_lse[i, j]) - s).mean()


@fp32
def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1, mask: Tensor | None = None,
            keys: tuple[Tensor, Tensor] | None = None, offset: int = 0, tau_plus: float = 0.0,
            beta: float = 0.0) -> Tensor:
    """NT-Xent, the SimCLR loss (Chen et al. 2020): InfoNCE over the 2N views.

    z1, z2: [N, D] L2-normalised views of the same N samples. Each of the 2N rows has its
    other view as the positive and the remaining 2N-2 rows (both views of other samples) as
    negatives; a row is never compared with itself. ``mask`` [N, M] as in ``info_nce``
    marks sample pairs (i, j) that are known positives; all four of their view pairs are
    dropped from the denominators. ``keys`` = (K1, K2) [M, D]: the views of a gathered global
    batch whose rows ``offset..offset+N`` are z1, z2 (distributed training; the queries stay
    this rank's 2N rows, the negatives are the 2M-2 other rows of the global batch).

        L = mean over the 2N rows a of  -s_{a,p(a)} + log sum_{b != a} exp(s_ab),  s = z z^T / t

    ``tau_plus`` / ``beta``: DCL / HCL (``debiased_cross_entropy``; the DCL paper's setting).
    """
    n = len(z1)
    k1, k2 = keys if keys is not None else (z1, z2)
    m = len(k1)
    logits = torch.cat([z1, z2]).float() @ torch.cat([k1, k2]).float().T / temperature   # [2N, 2M]
    rows = torch.arange(n, device=z1.device) + offset
    own = torch.cat([rows, rows + m])
    drop = torch.zeros(2 * n, 2 * m, dtype=torch.bool, device=z1.device)
    if mask is not None:
        same = mask.clone()
        same[torch.arange(n, device=z1.device), rows] = False
        drop = same.repeat(2, 2)
    drop[torch.arange(2 * n, device=z1.device), own] = True
    logits = logits.masked_fill(drop, float("-inf"))
    return _cross_entropy(logits, torch.cat([rows + m, rows]), -1 / temperature, tau_plus, beta)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's normalised MSE (Grill et al. 2020): p the online prediction, z the target
    projection (no gradient flows into z), both [N, D], normalised here:

        L = mean_i || p_i/|p_i| - z_i/|z_i| ||^2 = mean_i (2 - 2 cos(p_i, z_i))
    """
    p = F.normalize(p.float(), dim=-1)
    z = F.normalize(z.detach().float(), dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's D (Chen & He 2021): negative cosine similarity with a stop-gradient on z.
    p, z: [N, D].

        D(p, z) = - mean_i  p_i . z_i / (|p_i| |z_i|)
    """
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()


def symmetric_negative_cosine(p1: Tensor, z1: Tensor, p2: Tensor, z2: Tensor) -> Tensor:
    """The symmetrised SimSiam loss: each view's prediction against the other view's
    projection (stop-gradient on the z's).

        L = D(p1, z2) / 2 + D(p2, z1) / 2
    """
    return negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2


def _off_diagonal(m: Tensor) -> Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


@fp32
def barlow_loss(z1: Tensor, z2: Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> Tensor:
    """Barlow Twins (Zbontar et al. 2021, arXiv:2103.03230). z1, z2: [N, D] projections of two
    views. Each dimension is standardised over the batch (batch-norm without affine, biased
    std), then the cross-correlation C = z1n^T z2n / N [D, D] is pushed to the identity:

        L = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2
    """
    n = len(z1)
    z1, z2 = z1.float(), z2.float()
    z1 = (z1 - z1.mean(0)) / (z1.var(0, unbiased=False) + eps).sqrt()
    z2 = (z2 - z2.mean(0)) / (z2.var(0, unbiased=False) + eps).sqrt()
    c = z1.T @ z2 / n
    return (1 - c.diagonal()).pow(2).sum() + lambd * _off_diagonal(c).pow(2).sum()


@fp32
def vicreg_loss(z1: Tensor, z2: Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """VICReg (Bardes et al. 2022, arXiv:2105.04906). z1, z2: [N, D] expander outputs.

        inv = mean_{i,d} (z1_id - z2_id)^2
        var = sum over z in (z1, z2) of  mean_d relu(gamma - sqrt(Var_d(z) + eps)) / 2
        cov = sum over z in (z1, z2) of  sum_{d != e} Cov(z)_de^2 / D
        L = sim_weight * inv + var_weight * var + cov_weight * cov

    (variances and covariances unbiased, over the batch; as the official implementation).
    """
    z1, z2 = z1.float(), z2.float()
    n, d = z1.shape
    inv = F.mse_loss(z1, z2)
    var = cov = z1.new_zeros(())
    for z in (z1, z2):
        z = z - z.mean(0)
        var = var + F.relu(gamma - (z.var(0) + eps).sqrt()).mean() / 2
        cov = cov + _off_diagonal(z.T @ z / (n - 1)).pow(2).sum() / d
    return sim_weight * inv + var_weight * var + cov_weight * cov


@torch.no_grad()
@fp32
def sinkhorn(scores: Tensor, eps: float = 0.05, iters: int = 3) -> Tensor:
    """Sinkhorn-Knopp codes (Cuturi 2013; SwAV, Caron et al. 2020). scores [B, K] prototype
    similarities -> soft assignments Q [B, K] whose rows sum to 1 and whose columns each sum to
    about B / K (equipartition of the batch over the prototypes):

        Q = exp(scores / eps); repeat ``iters`` times: scale the columns to sum 1 / K, then the
        rows to sum 1 / B; return B * Q
    """
    q = torch.exp((scores.float() - scores.float().max()) / eps)  # the shift cancels out
    q = q / q.sum()
    b, k = q.shape
    for _ in range(iters):
        q = q / q.sum(0, keepdim=True) / k
        q = q / q.sum(1, keepdim=True) / b
    return q * b


@fp32
def swav_loss(scores: list[Tensor], codes: list[Tensor], temperature: float = 0.1) -> Tensor:
    """SwAV's swapped prediction (Caron et al. 2020, arXiv:2006.09882). ``scores[v]`` [B, K]:
    prototype scores of view v; ``codes[i]`` [B, K]: the Sinkhorn codes of view i, given for
    the first len(codes) views (the global crops). Every other view predicts each code:

        L = mean_{i < len(codes)} mean_{v != i} [ - mean_b sum_k codes[i]_bk log softmax(scores[v]_b / t)_k ]
    """
    total = scores[0].new_zeros((), dtype=torch.float32)
    for i, q in enumerate(codes):
        terms = [-(q * F.log_softmax(s.float() / temperature, dim=-1)).sum(-1).mean()
                 for v, s in enumerate(scores) if v != i]
        total = total + torch.stack(terms).mean()
    return total / len(codes)


@fp32
def sampled_softmax(q: Tensor, k: Tensor, temperature: float = 0.05, log_q: Tensor | None = None,
                    ids: Tensor | None = None, offset: int = 0, tau_plus: float = 0.0, beta: float = 0.0) -> Tensor:
    """In-batch sampled softmax of two-tower retrieval with the logQ correction (Yi et al. 2019,
    "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations", RecSys) and
    accidental hits removed.

    q: [N, D] queries (users), k: [M, D] keys (the batch's items, gathered over ranks: row
    ``offset + i`` is the positive of query i), L2-normalised. ``log_q`` [M]: log of each key's
    sampling probability (its share of the training interactions); subtracting it keeps popular
    items, which appear as in-batch negatives more often, from being pushed down for that alone.
    ``ids`` [M]: item ids; a key j != p(i) holding the same item as the positive is an accidental
    hit, dropped from the denominator (not a negative). With s_ij = q_i . k_j / t - log_q_j:

        L = mean_i [ -s_i,p(i) + log sum_{j : j == p(i) or ids_j != ids_p(i)} exp(s_ij) ],  p(i) = offset + i

    ``tau_plus`` / ``beta``: DCL / HCL on the negatives' term (``debiased_cross_entropy``).
    """
    logits = q.float() @ k.float().T / temperature
    if log_q is not None:
        logits = logits - log_q.float()[None, :]
    target = torch.arange(len(q), device=q.device) + offset
    if ids is not None:
        hit = ids[target][:, None] == ids[None, :]
        hit[torch.arange(len(q), device=q.device), target] = False
        logits = logits.masked_fill(hit, float("-inf"))
    low = -1 / temperature - (0.0 if log_q is None else log_q.float().max())
    return _cross_entropy(logits, target, low, tau_plus, beta)


@fp32
def twin_bce(z1: Tensor, z2: Tensor, scale: Tensor | float, bias: Tensor | float,
             negatives: Tensor | None = None, offset: int = 0) -> Tensor:
    """The twin tower's binary cross-entropy on "is this pair similar" (Zhuanzhuan's item
    retrieval; logits as in SigLIP, Zhai et al. 2023, arXiv:2303.15343: a learnable scale and bias
    on the cosine). z1: [N, D], z2: [M, D] (M >= N: the gathered global batch, this rank's rows
    from ``offset``), L2-normalised; (z1_i, z2_p(i)), p(i) = offset + i, is a positive pair (an item
    and its augmented view), every other (z1_i, z2_j) a candidate negative, kept where
    ``negatives`` [N, M] is True (e.g. items whose click-behaviour similarity is low; default:
    all). Positives and negatives are weighted equally whatever their counts. With
    s_ij = scale * z1_i . z2_j + bias:

        L = mean_i softplus(-s_i,p(i)) + mean_{(i, j) kept, j != p(i)} softplus(s_ij)
    """
    logits = scale * (z1.float() @ z2.float().T) + bias
    rows = torch.arange(len(z1), device=z1.device)
    own = torch.zeros_like(logits, dtype=torch.bool)
    own[rows, rows + offset] = True
    pos = F.softplus(-logits[rows, rows + offset]).mean()
    keep = ~own if negatives is None else negatives & ~own
    if not keep.any():
        return pos
    return pos + F.softplus(logits[keep]).mean()


@fp32
def next_item_ce(h: Tensor, items: Tensor, targets: Tensor) -> Tensor:
    """Next-item cross-entropy over the whole catalogue: SASRec (Kang & McAuley 2018) trained with a
    full softmax instead of one sampled negative (RecBole's ``loss_type='CE'``; Klenitskiy & Vasilev
    2023, "Turning Dross Into Gold Loss", show it is what makes SASRec strong).

    h: [N, D] sequence representations at N positions, each predicting the item after it;
    items: [V, D] item embeddings (the output layer, shared with the input embedding);
    targets: [N] item rows in 0..V-1. With s_nv = h_n . e_v:

        L = mean_n [ -s_n,y(n) + log sum_v exp(s_nv) ]
    """
    return F.cross_entropy(h.float() @ items.float().T, targets)


def bpr_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """Bayesian personalised ranking (Rendle et al. 2009), the loss of LightGCN (He et al. 2020):
    an observed item should score above an unobserved one. pos, neg: [N] scores s(u, i), s(u, j)
    of a user's observed item i and a sampled unobserved item j:

        L = mean_n -log sigmoid(pos_n - neg_n) = mean_n softplus(neg_n - pos_n)
    """
    return F.softplus(neg.float() - pos.float()).mean()


def l2_reg(*embeddings: Tensor) -> Tensor:
    """LightGCN's regulariser on the layer-0 (ego) embeddings of a batch (the official code's
    ``reg_loss``): each tensor [N, D], N = the batch size:

        R = sum over the tensors of ||E||_F^2 / (2 N)
    """
    n = len(embeddings[0])
    return sum(e.float().pow(2).sum() for e in embeddings) / (2 * n)


@fp32
def node_info_nce(z1: Tensor, z2: Tensor, nodes: Tensor, temperature: float = 0.2) -> Tensor:
    """InfoNCE between two views of graph nodes (SGL, Wu et al. 2021, arXiv:2010.10783; SimGCL, Yu
    et al. 2022, arXiv:2112.08679): a node's embedding in view 1 should pick its own embedding in
    view 2 among those of the batch's other nodes.

    z1, z2: [M, D] the embeddings of every node of one type (users, or items) in each view;
    ``nodes`` [B]: the batch's node indices (repeats allowed). Over the distinct nodes U of the
    batch, L2-normalised, q_u = z1_u / |z1_u|, k_u = z2_u / |z2_u|:

        L = mean_{u in U} [ -q_u . k_u / t + log sum_{v in U} exp(q_u . k_v / t) ]
    """
    u = torch.unique(nodes)
    return info_nce(F.normalize(z1[u].float(), dim=-1), F.normalize(z2[u].float(), dim=-1), temperature)

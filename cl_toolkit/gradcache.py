"""Gradient caching: the exact gradient of a contrastive loss on a large batch in the memory of a
small chunk (Gao et al. 2021, arXiv:2101.06983), for methods that split their loss into
``represent`` and ``objective`` (methods/base.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _split(batch: Any, start: int, stop: int, n: int) -> Any:
    """Rows start:stop of every per-sample tensor (first dimension ``n``) in a batch of nested
    lists / dicts; other values (pairwise masks, scalars) are left whole."""
    if isinstance(batch, torch.Tensor):
        return batch[start:stop] if batch.dim() and len(batch) == n else batch
    if isinstance(batch, dict):
        return {k: _split(v, start, stop, n) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_split(v, start, stop, n) for v in batch)
    return batch


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    return _batch_len(batch[0])


def grad_cache_step(model: nn.Module, batch: Any, progress: float, chunk: int, autocast, scaler) -> Any:
    """One step of gradient caching (Gao et al. 2021, arXiv:2101.06983): the exact gradient of
    the loss on the whole batch while only ``chunk`` samples' activations are alive at a time.

    1. ``model.represent`` on each chunk without a graph (saving the RNG state first, so that
       dropout draws the same masks again in 3.);
    2. ``model.objective`` on the concatenated representations: its gradient w.r.t. every
       representation is cached;
    3. each chunk again with a graph, back-propagating its slice of the cached gradient.
    The parameter gradients accumulate to the full-batch gradient. (Batch norm normalises each
    chunk by its own statistics; encoders without batch norm, as transformers, are exact.)"""
    n = _batch_len(batch)
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    rngs, reps = [], []
    with torch.no_grad():
        for s, e in bounds:
            rngs.append(torch.get_rng_state())
            with autocast:
                reps.append(model.represent(_split(batch, s, e, n), progress))
    after = torch.get_rng_state()
    full = [torch.cat([r[i] for r in reps]).detach().requires_grad_(reps[0][i].dtype.is_floating_point)
            for i in range(len(reps[0]))]
    with autocast:
        outp = model.objective(full, batch, progress)
    scaler.scale(outp.loss.float()).backward()
    for (s, e), rng in zip(bounds, rngs):
        torch.set_rng_state(rng)
        with autocast:
            part = model.represent(_split(batch, s, e, n), progress)
        pairs = [(r, f.grad[s:e]) for r, f in zip(part, full) if f.grad is not None and r.requires_grad]
        if pairs:
            torch.autograd.backward([r for r, _ in pairs], [g for _, g in pairs])
    torch.set_rng_state(after)
    return outp

"""Time-ordered histories for the sequential methods (``sasrec``, ``cl4srec``, ``duorec``).

Each user's training interactions, oldest first (``recdata.time_order``: timestamps, ties in file
order), become item rows 1..V (the vocabulary: every item with a training interaction, sorted).
A record is a window of a user's sequence s_0..s_(n-1): the input is up to ``max_length`` items
s_(e-L)..s_(e-1) and the targets are the same positions shifted by one, s_(e-L+1)..s_e, so one
forward pass trains every position on the item that follows it (SASRec's training). The windows
of a user end at e = n-1, n-1-L, n-1-2L, ... >= 1: every interaction but a user's first is a
target exactly once per epoch. Inputs are left-padded with 0 (``encoders.sequence``).

Views (drawn from torch's generator, so ``--resume`` replays them):
- ``CL4SRecTask`` (Xie et al. 2022, arXiv:2010.14395): two augmentations of each window's input,
  each of a different kind drawn from crop (a random contiguous eta-share of the items), mask (a
  gamma-share of the positions replaced by the mask token) and reorder (a random contiguous
  beta-share shuffled). A view is made of the input alone: it never contains the targets.
- ``DuoRecTask`` (Qiu et al. 2022, arXiv:2110.05730): for each window, a supervised positive,
  another training prefix (any user's) whose next item is the window's last target; the items
  before that prefix's target, never the target itself.

``export`` writes ``encoder/sequence`` and ``rec.json`` (``cltk recommend`` scores a user's next
item from their time-ordered history).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..encoders.sequence import SASRec, left_pad, save_sequence
from ..io import InputError, RunDir, atomic_dir, check_range, write_json
from ..io.interactions import Interactions, read_interactions
from ..io.run import REC as REC_SPEC
from ..recdata import time_order
from . import Task
from .interactions import interactions_hash, rec_spec

AUGMENTATIONS = ("crop", "mask", "reorder")


# ---------------------------------------------------------------- augmentations (batched, left-padded)

def lengths(seq: Tensor) -> Tensor:
    """[B]: the number of items (non-padding positions) of each left-padded row."""
    return (seq > 0).sum(1)


def item_crop(seq: Tensor, eta: float) -> Tensor:
    """A random contiguous run of max(1, floor(eta n)) of each row's n items, left-padded."""
    b, width = seq.shape
    n = lengths(seq)
    k = torch.clamp((eta * n).floor().long(), min=1).minimum(n)
    start = (torch.rand(b, device=seq.device) * (n - k + 1)).floor().long()      # in 0..n-k
    col = torch.arange(width, device=seq.device)[None]
    src = (width - n)[:, None] + start[:, None] + col - (width - k)[:, None]    # source column of each output
    out = seq.gather(1, src.clamp(0, width - 1))
    return out.masked_fill(col < (width - k)[:, None], 0)


def item_mask(seq: Tensor, gamma: float, token: int) -> Tensor:
    """floor(gamma n) of each row's n items, at random positions, replaced by ``token``."""
    n = lengths(seq)
    m = (gamma * n).floor().long()
    keys = torch.rand(seq.shape, device=seq.device).masked_fill(seq == 0, 2.0)   # padding last
    rank = keys.argsort(1).argsort(1)
    return seq.masked_fill(rank < m[:, None], token)


def item_reorder(seq: Tensor, beta: float) -> Tensor:
    """The items of a random contiguous run of floor(beta n) of each row's n items, shuffled."""
    b, width = seq.shape
    n = lengths(seq)
    k = (beta * n).floor().long()
    start = (width - n) + (torch.rand(b, device=seq.device) * (n - k + 1)).floor().long()
    col = torch.arange(width, device=seq.device)[None].expand(b, width).float()
    inside = (col >= start[:, None]) & (col < (start + k)[:, None])
    keys = torch.where(inside, start[:, None] + torch.rand(b, width, device=seq.device) * k[:, None], col)
    return seq.gather(1, keys.argsort(1))


def augment(seq: Tensor, kinds: Tensor, eta: float, gamma: float, beta: float, token: int) -> Tensor:
    """Each row augmented by its kind (0 crop, 1 mask, 2 reorder); rows of one item unchanged."""
    out = seq.clone()
    for k, fn in enumerate((lambda s: item_crop(s, eta), lambda s: item_mask(s, gamma, token),
                            lambda s: item_reorder(s, beta))):
        rows = (kinds == k) & (lengths(seq) > 1)
        if rows.any():
            out[rows] = fn(seq[rows])
    return out


def two_kinds(b: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Per row, two different augmentation kinds drawn uniformly from the three."""
    first = torch.randint(3, (b,), device=device)
    second = (first + torch.randint(1, 3, (b,), device=device)) % 3
    return first, second


# ---------------------------------------------------------------- the tasks

def windows(seqs: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs [R, L], targets [R, L], (user, end) [R, 2]) of every user's windows (module docstring)."""
    ins, outs, keys = [], [], []
    for u, s in enumerate(seqs):
        e = len(s) - 1
        while e >= 1:
            lo = max(0, e - length)
            ins.append(s[lo:e])
            outs.append(s[lo + 1:e + 1])
            keys.append((u, e))
            e -= length
    return left_pad(ins, length), left_pad(outs, length), np.asarray(keys, dtype=np.int64).reshape(-1, 2)


class SequenceTask(Task):
    """Every user's time-ordered training items as windows of ``max_length`` (module docstring)."""

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: Interactions | None = None):
        super().__init__(cfg, method_cls, device, data)
        mc = cfg.method_config
        for name in ("dim", "layers", "heads", "inner"):
            check_range(f"method config {name}", getattr(mc, name), int, 1)
        if mc.dim % mc.heads:
            raise InputError(f"method config dim ({mc.dim}) must be a multiple of heads ({mc.heads})")
        inter = data if data is not None else read_interactions(cfg.data)
        self.resolved = {"encoder": "sasrec"}
        self.cfg, self.mc, self.inter = cfg, mc, inter
        self.vocab = sorted(set(inter.items))
        index = {i: k + 1 for k, i in enumerate(self.vocab)}
        order = time_order(inter)
        self.users = sorted(order)
        self.seqs = [np.asarray([index[inter.items[r]] for r in order[u]], dtype=np.int64) for u in self.users]
        self.inputs, self.targets, self.keys = windows(self.seqs, mc.max_length)
        if not len(self.inputs):
            raise InputError("no user has two interactions: a sequence model needs a next item to predict", cfg.data)
        self.n, self.hash = len(self.inputs), interactions_hash(inter)
        encoder = SASRec(len(self.vocab), mc.max_length, mc.dim, mc.layers, mc.heads, mc.inner, mc.dropout,
                         mc.attn_dropout)
        self.model = method_cls(encoder, mc).to(device)

    def batch(self, idx: Tensor) -> dict:
        rows = idx.numpy()
        return {"seq": torch.from_numpy(self.inputs[rows]).to(self.device),
                "target": torch.from_numpy(self.targets[rows]).to(self.device)}

    def export(self, run: RunDir, extra: dict) -> None:
        with atomic_dir(run.tower("sequence"), force=True) as tmp:
            save_sequence(self.model.encoder.float().cpu(), tmp, self.vocab, extra)
        write_json(run.root / REC_SPEC, rec_spec(self.cfg, self.inter, "sequence", self.mc.max_length))


class CL4SRecTask(SequenceTask):
    """SequenceTask plus two augmented views of each window's input (``aug1``, ``aug2``)."""

    def batch(self, idx: Tensor) -> dict:
        out = super().batch(idx)
        mc, seq = self.mc, out["seq"]
        first, second = two_kinds(len(seq), seq.device)
        token = self.model.encoder.mask_token
        out["aug1"] = augment(seq, first, mc.crop_ratio, mc.mask_ratio, mc.reorder_ratio, token)
        out["aug2"] = augment(seq, second, mc.crop_ratio, mc.mask_ratio, mc.reorder_ratio, token)
        return out


class DuoRecTask(SequenceTask):
    """SequenceTask plus, per window, a training prefix of any user with the same next item (``sem``)."""

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: Interactions | None = None):
        super().__init__(cfg, method_cls, device, data)
        # every prefix (user, p), p >= 1, grouped by its next item s_p
        occ = [(int(s[p]), u, p) for u, s in enumerate(self.seqs) for p in range(1, len(s))]
        occ.sort()
        self.occ_user = np.asarray([u for _, u, _ in occ], dtype=np.int64)
        self.occ_pos = np.asarray([p for _, _, p in occ], dtype=np.int64)
        items = np.asarray([i for i, _, _ in occ], dtype=np.int64)
        self.first = np.searchsorted(items, np.arange(len(self.vocab) + 2))      # group of item v: first[v]..first[v+1]
        where = {(u, p): k for k, (_, u, p) in enumerate(occ)}
        self.own = np.asarray([where[(int(u), int(e))] for u, e in self.keys], dtype=np.int64)

    def batch(self, idx: Tensor) -> dict:
        out = super().batch(idx)
        rows = idx.numpy()
        last = self.targets[rows, -1]
        lo, hi = self.first[last], self.first[last + 1]
        draw = np.floor(torch.rand(len(rows)).numpy() * np.maximum(hi - lo - 1, 1)).astype(np.int64)
        pick = lo + draw
        pick = np.where((pick >= self.own[rows]) & (hi - lo > 1), pick + 1, pick)   # skip the window itself
        pick = np.where(hi - lo > 1, pick, self.own[rows])                          # no other: itself
        length = self.mc.max_length
        prefixes = [self.seqs[u][max(0, p - length):p] for u, p in zip(self.occ_user[pick], self.occ_pos[pick])]
        out["sem"] = torch.from_numpy(left_pad(prefixes, length)).to(self.device)
        out["last"] = torch.from_numpy(last).to(self.device)
        return out

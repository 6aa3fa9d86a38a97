"""SASRec (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation", ICDM): the base of the
sequential methods.

A user's time-ordered items pass a causal transformer (``encoders.sequence.SASRec``: item and
position embeddings, ``layers`` blocks of self-attention in which a position sees only itself and
the items before it). Every position of a window is trained to predict the item after it with a
cross-entropy over the whole catalogue (``losses.next_item_ce``; the item embeddings are the
output layer), so one forward pass trains a whole window:

    L = mean over the window positions t with a next item of  CE(h_t E^T, s_(t+1))

Data: interactions (a folder of atomic files, a ``.inter`` file, a JSONL, ``ml-100k``) read by
``tasks.sequences.SequenceTask`` in time order. ``cltk recommend`` scores a user's next item from
the representation of their last ``max_length`` items, h_last . e_i. Exports ``encoder/sequence``
and ``rec.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import dist
from ..encoders.sequence import SASRec as SASRecEncoder
from ..losses import next_item_ce, nt_xent
from ..tasks.sequences import SequenceTask
from . import register_method
from .base import Method, StepOutput


@dataclass
class Config:
    # RecBole's SASRec sizes (2 layers, 2 heads, 64 / 256) with lighter dropout (RecBole: 0.5) for
    # short CPU budgets; not tuned on a validation split (docs/benchmarks.md)
    max_length: int = 50            # items of history a position can see (window length)
    dim: int = 64                   # item / position embedding and hidden size
    layers: int = 2
    heads: int = 2
    inner: int = 256                # feed-forward hidden size
    dropout: float = 0.2            # on embeddings, attention outputs and feed-forward
    attn_dropout: float = 0.2       # on attention weights


def next_item_loss(encoder: SASRecEncoder, h: Tensor, target: Tensor) -> Tensor:
    """``next_item_ce`` at the positions of ``h`` [B, L, D] that have a next item (``target`` > 0)."""
    valid = target > 0
    return next_item_ce(h[valid], encoder.item_table(), target[valid] - 1)


def next_item_and_views(encoder: SASRecEncoder, batch: dict, views: list[str], temperature: float, weight: float,
                        mask: Tensor | None = None, cosine: bool = False) -> StepOutput:
    """The objective CL4SRec and DuoRec share: SASRec's next-item loss on ``batch["seq"]`` plus
    ``weight`` x NT-Xent (gathered over ranks, ``mask`` of known positives) between the last
    positions of the last two of ``seq`` + ``views``, all encoded in one pass (larger products).
    Similarities are dot products (the papers' code) or, with ``cosine``, cosines."""
    n = len(batch["seq"])
    h = encoder(torch.cat([batch["seq"], *(batch[v] for v in views)]))
    main = next_item_loss(encoder, h[:n], batch["target"])
    z1, z2 = h[-2 * n:-n, -1].float(), h[-n:, -1].float()
    if cosine:
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    (k1, offset), (k2, _) = dist.gather(z1), dist.gather(z2)
    ssl = nt_xent(z1, z2, temperature, mask, keys=(k1, k2), offset=offset)
    return StepOutput(main + weight * ssl, z1.detach(), z2.detach())


def monitor_views(encoder: SASRecEncoder, h: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """What the collapse monitor sees: each window's last representation and its next item's embedding."""
    return h[:, -1].detach(), encoder.item_table()[target[:, -1] - 1].detach()


@register_method("sasrec", "sequential recommendation: causal self-attention over a user's time-ordered items, "
                 "next-item cross-entropy over all items at every position",
                 "Kang & McAuley 2018, Self-Attentive Sequential Recommendation, ICDM")
class SASRec(Method):
    defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 128, "warmup": 0.02,
                "epochs": 100, "augment": "none"}
    task = SequenceTask

    def __init__(self, encoder: SASRecEncoder, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder

    def forward(self, batch: dict, progress: float) -> StepOutput:
        h = self.encoder(batch["seq"])
        return StepOutput(next_item_loss(self.encoder, h, batch["target"]),
                          *monitor_views(self.encoder, h, batch["target"]))

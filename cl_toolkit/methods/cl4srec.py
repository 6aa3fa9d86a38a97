"""CL4SRec (Xie et al. 2022, "Contrastive Learning for Sequential Recommendation", ICDE,
arXiv:2010.14395): SASRec plus a contrastive task between two augmentations of each sequence.

Each window's input gets two views, each by a different one of three augmentations drawn per
sequence (``tasks.sequences``): item crop (a random contiguous eta = ``crop_ratio`` share), item
mask (a gamma = ``mask_ratio`` share of the positions replaced by a mask token) and item reorder
(a random contiguous beta = ``reorder_ratio`` share shuffled). The encoder's last-position
representations of the two views meet in NT-Xent (``losses.nt_xent``: each view's positive is
the other view of the same sequence, the other 2N - 2 views of the batch, gathered over ranks
under torchrun, are negatives; dot-product similarity as the paper's code):

    L = L_SASRec + ssl_weight * NT-Xent(h_last(view1), h_last(view2); t = ssl_temperature)

The next-item loss sees the unaugmented window; the views are made from its input items only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import dist
from ..encoders.sequence import SASRec as SASRecEncoder
from ..losses import nt_xent
from ..tasks.sequences import CL4SRecTask
from . import register_method
from .base import Method, StepOutput
from .sasrec import Config as SASRecConfig
from .sasrec import SASRec, next_item_loss


@dataclass
class Config(SASRecConfig):
    ssl_weight: float = 0.1         # lambda
    ssl_temperature: float = 1.0    # on dot products, as the paper's code
    crop_ratio: float = 0.6         # eta: share of the items a crop keeps
    mask_ratio: float = 0.3         # gamma: share of the items masked
    reorder_ratio: float = 0.6      # beta: share of the items a reorder shuffles


@register_method("cl4srec", "sequential recommendation: SASRec + NT-Xent between two augmentations (item crop, "
                 "mask, reorder) of each user sequence",
                 "Xie et al. 2022, Contrastive Learning for Sequential Recommendation, arXiv:2010.14395")
class CL4SRec(Method):
    defaults = dict(SASRec.defaults)
    task = CL4SRecTask

    def __init__(self, encoder: SASRecEncoder, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder

    def forward(self, batch: dict, progress: float) -> StepOutput:
        n = len(batch["seq"])
        h = self.encoder(torch.cat([batch["seq"], batch["aug1"], batch["aug2"]]))   # one pass, larger products
        main = next_item_loss(self.encoder, h[:n], batch["target"])
        z1, z2 = h[n:2 * n, -1].float(), h[2 * n:, -1].float()
        (k1, offset), (k2, _) = dist.gather(z1), dist.gather(z2)
        ssl = nt_xent(z1, z2, self.cfg.ssl_temperature, keys=(k1, k2), offset=offset)
        return StepOutput(main + self.cfg.ssl_weight * ssl, z1.detach(), z2.detach())

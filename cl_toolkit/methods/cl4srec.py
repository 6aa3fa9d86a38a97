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

from ..encoders.sequence import SASRec as SASRecEncoder
from ..tasks.sequences import CL4SRecTask
from . import register_method
from .base import Method, StepOutput
from .sasrec import Config as SASRecConfig
from .sasrec import SASRec, next_item_and_views


@dataclass
class Config(SASRecConfig):
    # chosen on ml-100k's validation split (docs/benchmarks.md); the paper's code: 0.1, dot products, t = 1
    ssl_weight: float = 0.02        # lambda
    ssl_temperature: float = 0.2
    ssl_cosine: bool = True         # cosine similarities (False: dot products, as the paper's code)
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
        return next_item_and_views(self.encoder, batch, ["aug1", "aug2"], self.cfg.ssl_temperature,
                                   self.cfg.ssl_weight, cosine=self.cfg.ssl_cosine)

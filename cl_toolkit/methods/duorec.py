"""DuoRec (Qiu et al. 2022, "Contrastive Learning for Representation Degeneration Problem in
Sequential Recommendation", WSDM, arXiv:2110.05730): SASRec plus contrastive regularisation
with a model-level and a supervised view, against the representation degeneration (item
embeddings crowding into a narrow cone) that the next-item loss alone leads to.

- Model-level augmentation: dropout. The window's last-position representation is taken from the
  pass that also gives the next-item loss (the paper's code makes one more pass for it; a pass
  with fresh dropout masks is the same kind of view, and sharing it saves a third of the step);
  the positive passes the encoder under its own dropout masks.
- Supervised positive: another training prefix, of any user, whose next item is the window's
  last target (``tasks.sequences.DuoRecTask``); sequences that lead to the same item should be
  represented alike.
- The two meet in NT-Xent (``losses.nt_xent``, dot products, t = ``ssl_temperature``): the
  dropout view of the sequence against its semantic positive (the paper's final "us_x" form),
  the batch's other views as negatives, except views whose sequences have the same next item
  (they are positives too, so they are masked out of the denominators):

    L = L_SASRec + ssl_weight * NT-Xent(h'_last(s), h'_last(s+); mask: same next item)
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import dist
from ..encoders.sequence import SASRec as SASRecEncoder
from ..tasks.sequences import DuoRecTask
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
    mask_same_target: bool = True   # views with the same next item are not negatives


@register_method("duorec", "sequential recommendation: SASRec + NT-Xent between a dropout view of each sequence "
                 "and another sequence with the same next item (supervised positive)",
                 "Qiu et al. 2022, Contrastive Learning for Representation Degeneration Problem in Sequential "
                 "Recommendation, arXiv:2110.05730")
class DuoRec(Method):
    defaults = dict(SASRec.defaults)
    task = DuoRecTask

    def __init__(self, encoder: SASRecEncoder, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder

    def forward(self, batch: dict, progress: float) -> StepOutput:
        mask = None
        if self.cfg.mask_same_target:
            mask = batch["last"][:, None] == dist.gather_nograd(batch["last"])[None, :]
        return next_item_and_views(self.encoder, batch, ["sem"], self.cfg.ssl_temperature, self.cfg.ssl_weight,
                                   mask, cosine=self.cfg.ssl_cosine)

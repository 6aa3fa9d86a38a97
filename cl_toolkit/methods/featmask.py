"""Two-tower retrieval with a self-supervised auxiliary task on the item tower by feature
masking (Yao et al. 2021, "Self-supervised Learning for Large-scale Item Recommendations",
arXiv:2007.12865).

The main task is ``twotower``'s (in-batch sampled softmax, logQ, accidental hits masked). Beside
it, every step draws ``ssl_batch`` items uniformly from the whole catalogue (not from the
interactions, whose items follow the popularity power law; items without any interaction are
drawn too, since their features are known), makes two views of each by complementary feature
masking (``augment_features``: correlated, random or mixed) and asks the item tower to pick each
item's other view among the batch's (InfoNCE, ``losses.info_nce``, temperature
``ssl_temperature``):

    L = L_retrieval + ssl_weight * L_ssl        (ssl_weight 1.0, ssl_batch 256, mixed masking by default)

The masked fields include the item id, so the tower learns to embed an item from its features
alone consistently with its full embedding; a cold item (no id embedding) is embedded that way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from .. import dist
from ..encoders.towers import FeatureTower
from ..losses import info_nce
from ..tasks.interactions import FeatMaskTask
from . import register_method
from .base import Method, StepOutput, duplicate_mask
from .twotower import Config as TwoTowerConfig
from .twotower import TwoTower, retrieval_loss


@dataclass
class Config(TwoTowerConfig):
    # preset chosen on the cold-item validation split (docs/benchmarks.md, results/tuning/recsys_cold_valid_*)
    ssl_weight: float = 1.0         # alpha of the auxiliary loss
    ssl_temperature: float = 0.1
    ssl_batch: int = 256            # items per step in the auxiliary task (0: the batch size)
    masking: str = "mixed"          # correlated | random | mixed (each item CFM or RFM, half and half)


@register_method("featmask", "recommendation: twotower + self-supervised item-tower task on two complementary "
                 "feature-masked views (correlated / random masking) of uniformly sampled items; cold items from "
                 "features", "Yao et al. 2021, SSL for large-scale item recommendations, arXiv:2007.12865")
class FeatMask(Method):
    # 8 epochs: cold items peak earlier than warm users (validation over three seeds, 4-20 epochs:
    # results/tuning/recsys_cold_valid_<E>epochs_3seeds.json); twotower keeps 20, chosen on leave-one-out
    defaults = {**TwoTower.defaults, "epochs": 8}
    task = FeatMaskTask

    def __init__(self, item_tower: FeatureTower, user_tower: FeatureTower, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = item_tower
        self.user_tower = user_tower

    def forward(self, batch: dict, progress: float) -> StepOutput:
        u = F.normalize(self.user_tower(batch["user"]).float(), dim=-1)
        v = F.normalize(self.encoder(batch["item"]).float(), dim=-1)
        main = retrieval_loss(u, v, batch, self.cfg)
        s = batch["ssl"]
        z1 = F.normalize(self.encoder(s["item"], s["mask1"]).float(), dim=-1)
        z2 = F.normalize(self.encoder(s["item"], s["mask2"]).float(), dim=-1)
        keys, offset = dist.gather(z2)
        ssl = info_nce(z1, keys, self.cfg.ssl_temperature, duplicate_mask(s["ids"]), offset)
        return StepOutput(main + self.cfg.ssl_weight * ssl, u, v)

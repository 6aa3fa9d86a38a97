"""The twin tower of Zhuanzhuan's item retrieval (a second-hand marketplace's recall stage):
item texts as mean-pooled word2vec vectors, an auto-encoder's reconstruction as the positive view,
in-batch negatives kept only when the two items' click behaviour is dissimilar, binary
cross-entropy on "is this pair similar".

- Words: an item's text fields (e.g. a title), plus ``field=value`` for its token features (genres,
  a year), so that items with little text still have words (``recdata.item_words``).
- Word vectors: gensim's word2vec (skip-gram) trained on the catalogue's items, one sentence per
  item; an item's input is the mean of its words' vectors (fixed during training).
- Augmented view: an auto-encoder (input dropout ``ae_noise``, a bottleneck of ``ae_hidden``)
  trained to reconstruct the input vector (MSE, weight ``ae_weight``); its reconstruction,
  without gradient, is the positive of the original.
- Twin tower: three fully-connected layers shared by both inputs (``FeatureTower`` head).
- Negatives: the other items of the (global) batch, except those whose click-behaviour
  similarity with the item (cosine of their binary user vectors in the training interactions)
  is ``click_threshold`` or more: items co-clicked by the same users are not pushed apart.
- Loss: ``losses.twin_bce`` with a learnable scale and bias on the cosine.

The run embeds items only; ``cltk recommend`` scores a user's items by cosine to the mean of the
user's history (see ``cl_toolkit.recommend``). Exports ``encoder/item`` and ``rec.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..encoders.towers import FeatureTower
from ..losses import twin_bce
from ..tasks.interactions import TwinTask
from . import register_method
from .base import Method, StepOutput


@dataclass
class Config:
    items: str = ""                 # item file (atomic .item or JSONL); default: the sibling NAME.item
    users: str = ""
    w2v_dim: int = 64
    w2v_window: int = 10
    w2v_epochs: int = 30
    dim: int = 64                   # the tower's output
    hidden: int = 256               # the tower's two hidden layers
    ae_hidden: int = 16             # the auto-encoder's bottleneck
    ae_noise: float = 0.2           # input dropout of the auto-encoder
    ae_weight: float = 1.0
    click_threshold: float = 0.1    # in-batch pairs at least this co-clicked are not negatives
    init_scale: float = 10.0


@register_method("twin", "recommendation: twin tower on word2vec item texts, auto-encoder positives, in-batch "
                 "negatives filtered by click similarity, BCE (items only; users = history mean)",
                 "Zhuanzhuan tech team 2022, contrastive learning in recommendation: item retrieval in a second-hand "
                 "marketplace (word2vec + auto-encoder views, twin tower, BCE)")
class Twin(Method):
    defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-5, "batch_size": 256, "warmup": 0.02,
                "epochs": 50, "augment": "none"}
    task = TwinTask

    def __init__(self, tower: FeatureTower, cfg: Config, click: sp.csr_matrix):
        super().__init__()
        self.cfg = cfg
        self.encoder = tower
        d = tower.in_dim
        self.ae = nn.Sequential(nn.Dropout(cfg.ae_noise), nn.Linear(d, cfg.ae_hidden), nn.ReLU(),
                                nn.Linear(cfg.ae_hidden, d))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.init_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(0.0))
        self.click = click                       # not a parameter: the training data's click vectors

    def forward(self, batch: dict, progress: float) -> StepOutput:
        x = self.encoder.embed_fields(batch["item"]).float()
        x_aug = self.ae(x)
        recon = F.mse_loss(x_aug, x)
        z1 = F.normalize(self.encoder.head(x).float(), dim=-1)
        z2 = F.normalize(self.encoder.head(x_aug.detach()).float(), dim=-1)
        keys, offset = dist.gather(z2)
        rows = batch["rows"].cpu().numpy()
        everyone = dist.gather_nograd(batch["rows"]).cpu().numpy()
        co = (self.click[rows] @ self.click[everyone].T).toarray()
        negatives = torch.from_numpy(co < self.cfg.click_threshold).to(z1.device)
        loss = twin_bce(z1, keys, self.logit_scale.exp(), self.logit_bias, negatives, offset)
        return StepOutput(loss + self.cfg.ae_weight * recon, z1, z2)

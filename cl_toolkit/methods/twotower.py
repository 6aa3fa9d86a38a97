"""Two-tower retrieval with in-batch sampled softmax (Yi et al. 2019, "Sampling-Bias-Corrected
Neural Modeling for Large Corpus Item Recommendations", RecSys; the retrieval model of Yao et
al. 2021, arXiv:2007.12865).

User tower: the user id, the user's features (``NAME.user``) and the mean of the user's last
``history`` items (in training: the items before the one predicted, never the item itself).
Item tower: the item id and its features (tokens, token sets, text words, numbers of the item
file). Each training interaction (user, item) is a positive; the other items of the batch (the
global batch under torchrun) are the negatives, with the logQ correction of their sampling
probability (an item's share of the training interactions) and accidental hits (the same item
twice in a batch) removed: ``losses.sampled_softmax``. Item ids get embeddings only for items
with training interactions; an item without any (a cold item) is embedded from its features.

Data: ``--data`` a folder of atomic files (``NAME.inter`` + ``NAME.item`` [+ ``NAME.user``]), a
``.inter`` file (its sibling ``NAME.item`` is read), or interactions JSONL with ``--items``.
Exports ``encoder/item`` and ``encoder/user`` (``encoders.towers``) and ``rec.json`` for
``cltk recommend`` / ``cltk embed --field user|item``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from .. import dist
from ..encoders.towers import FeatureTower
from ..losses import sampled_softmax
from ..tasks.interactions import RecTask
from . import register_method
from .base import Method, StepOutput


@dataclass
class Config:
    items: str = ""                 # item file (atomic .item or JSONL); default: the .inter file's sibling NAME.item
    users: str = ""                 # user file; default: the sibling NAME.user
    dim: int = 64                   # embedding size of both towers' outputs
    field_dim: int = 32             # size of each feature field's vector
    hidden: int = 256               # the towers' hidden layer
    dropout: float = 0.0
    temperature: float = 0.05
    logq_correction: bool = True
    mask_accidental_hits: bool = True
    tau_plus: float = 0.0         # DCL: prior share of false negatives (Chuang et al. 2020); 0 = InfoNCE
    beta: float = 0.0             # HCL: weight negatives by exp(beta * logit) (Robinson et al. 2021); 0 = uniform
    history: int = 50               # the user tower pools the user's last N items (0: none)
    user_id: bool = True            # user id embedding in the user tower
    item_id: bool = True            # item id embedding in the item tower
    exclude_fields: list[str] = field(default_factory=list)   # item / user feature fields not to use


def retrieval_loss(u: Tensor, v: Tensor, batch: dict, cfg: Config) -> Tensor:
    """Sampled softmax of this rank's users against the items of the global batch."""
    keys, offset = dist.gather(v)
    ids = dist.gather_nograd(batch["item_ids"]) if cfg.mask_accidental_hits else None
    log_q = dist.gather_nograd(batch["log_q"]) if cfg.logq_correction else None
    return sampled_softmax(u, keys, cfg.temperature, log_q, ids, offset, cfg.tau_plus, cfg.beta)


@register_method("twotower", "recommendation: user tower + item tower (ids and features), in-batch sampled "
                 "softmax with logQ correction and accidental hits masked",
                 "Yi et al. 2019, sampling-bias-corrected two-tower retrieval, RecSys")
class TwoTower(Method):
    defaults = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-5, "batch_size": 1024, "warmup": 0.02,
                "epochs": 20, "augment": "none"}
    task = RecTask

    def __init__(self, item_tower: FeatureTower, user_tower: FeatureTower, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = item_tower                # the item tower (what `cltk embed --field item` uses)
        self.user_tower = user_tower

    def represent(self, batch: dict, progress: float) -> list[Tensor]:
        """Per interaction: the normalised user and item embeddings."""
        return [F.normalize(self.user_tower(batch["user"]).float(), dim=-1),
                F.normalize(self.encoder(batch["item"]).float(), dim=-1)]

    def objective(self, reps: list[Tensor], batch: dict, progress: float) -> StepOutput:
        u, v = reps
        return StepOutput(retrieval_loss(u, v, batch, self.cfg), u, v)

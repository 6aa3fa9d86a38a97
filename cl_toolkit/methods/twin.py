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
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dist
from ..io import InputError, atomic_dir, write_json
from ..io.interactions import Interactions
from ..io.run import REC as REC_SPEC
from ..losses import twin_bce
from ..recdata import FeatureSpec, encode, item_words
from ..rectowers import FeatureTower, save_tower, to_tensors
from . import StepOutput, make_config, register_method
from .twotower import data_hash, load_data, rec_spec


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


def word2vec(sentences: list[list[str]], dim: int, window: int, epochs: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Skip-gram word2vec (gensim) on the items' words, one thread (deterministic for a seed)."""
    from gensim.models import Word2Vec

    model = Word2Vec(sentences=[s for s in sentences if s], vector_size=dim, window=window, min_count=1, sg=1,
                     epochs=epochs, workers=1, seed=seed)
    return list(model.wv.index_to_key), np.asarray(model.wv.vectors, dtype=np.float32)


def click_matrix(inter: Interactions, items: list[str]) -> sp.csr_matrix:
    """[items, users] binary interactions, rows L2-normalised (row products = click cosine)."""
    ipos = {i: k for k, i in enumerate(items)}
    users = {u: k for k, u in enumerate(sorted(set(inter.users)))}
    pairs = {(ipos[i], users[u]) for u, i in zip(inter.users, inter.items) if i in ipos}
    r, c = zip(*pairs) if pairs else ((), ())
    m = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(items), max(1, len(users))))
    norm = np.sqrt(np.asarray(m.sum(1)).ravel())
    return (sp.diags(1 / np.maximum(norm, 1e-12)) @ m).tocsr()


class TwinTask:
    """The catalogue's items (those with words), their word ids and their click vectors."""

    def __init__(self, cfg, entry, device: torch.device, data: Interactions | None = None):
        mc = make_config(entry.config, cfg.method_config)
        inter = data if data is not None else load_data(cfg, mc)
        cfg.encoder = "feature-towers"
        self.cfg, self.mc, self.device, self.inter = cfg, mc, device, inter
        self.catalogue = inter.catalogue()
        table = inter.item_table
        rows = table.rows if table is not None else {}
        sentences = [item_words(rows.get(i, {}), table.schema) if table is not None else [] for i in self.catalogue]
        if not any(sentences):
            raise InputError("the twin tower needs item words: an item file with a text field (title, text, ...) "
                             "or token features", cfg.data)
        vocab, vectors = word2vec(sentences, mc.w2v_dim, mc.w2v_window, mc.w2v_epochs, cfg.seed)
        spec = FeatureSpec([{"name": "words", "kind": "words", "vocab": vocab, "dim": mc.w2v_dim, "frozen": True}])
        tower = FeatureTower(spec.to_json(), mc.w2v_dim, [mc.hidden, mc.hidden], mc.dim)
        with torch.no_grad():
            tower.embeddings["words"].weight[1:] = torch.from_numpy(vectors)
        self.arrays = encode(spec, self.catalogue, table)
        self.rows = np.flatnonzero((self.arrays["words"] > 0).any(1))
        self.n, self.hash = len(self.rows), data_hash(inter)
        self.model = entry.cls(tower, mc, click_matrix(inter, self.catalogue)).to(device)

    def batch(self, idx: Tensor) -> dict:
        rows = self.rows[idx.numpy()]
        return {"item": to_tensors(self.arrays, rows, self.device), "rows": torch.from_numpy(rows).to(self.device)}

    def export(self, out: Path, extra: dict) -> None:
        with atomic_dir(out / "encoder" / "item", force=True) as tmp:
            save_tower(self.model.encoder.float().cpu(), tmp, {"tower": "item", **extra})
        write_json(out / REC_SPEC, rec_spec(self.cfg, self.inter, "history-mean", 0))


@register_method("twin", "recommendation: twin tower on word2vec item texts, auto-encoder positives, in-batch "
                 "negatives filtered by click similarity, BCE (items only; users = history mean)",
                 "Zhuanzhuan contrastive item retrieval (word2vec + auto-encoder views, twin tower, BCE)")
class Twin(nn.Module):
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

    def after_step(self, progress: float) -> None:
        pass

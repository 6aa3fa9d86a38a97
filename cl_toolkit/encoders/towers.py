"""Feature towers for recommendation (the encoders of ``twotower``, ``featmask`` and ``twin``).

A tower embeds each feature field of a record (``recdata.FeatureSpec``: an id, tokens, token
sets, text words, a user's recent items, numbers) into a vector, concatenates them and passes
them through an MLP. Bag fields (id, tokens, words, history) embed each value and average the
non-padding ones; numbers go through a linear layer. A field can be masked per row (its vector
replaced by zeros: Yao et al. 2021's default embedding for a masked feature), which is also how an
id outside the vocabulary (a cold item) is embedded. A field can carry fixed pre-trained vectors
(``frozen``: the twin tower's word2vec).

An exported tower is a folder: ``tower.json`` (spec, sizes) + ``model.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..io import InputError

BAG_KINDS = ("id", "token", "token_seq", "text", "words", "history")
TOWER_SPEC = "tower.json"
WEIGHTS = "model.safetensors"


def field_size(f: dict) -> int:
    return int(f["size"]) if "size" in f else len(f["vocab"])


class FeatureTower(nn.Module):
    """fields -> per-field vectors (``embed_fields``) -> MLP (``head``) -> [B, out_dim]."""

    def __init__(self, spec: dict, dim: int = 64, hidden: list[int] | None = None, out_dim: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        self.spec, self.dim, self.out_dim = spec, dim, out_dim
        self.hidden = list(hidden if hidden is not None else [2 * out_dim])
        self.fields = [f["name"] for f in spec["fields"]]
        self.embeddings = nn.ModuleDict()
        width = 0
        for f in spec["fields"]:
            d = int(f.get("dim", dim))
            if f["kind"] in BAG_KINDS:
                emb = nn.Embedding(field_size(f) + 1, d, padding_idx=0)
                nn.init.normal_(emb.weight, std=0.1)
                with torch.no_grad():
                    emb.weight[0].zero_()
                if f.get("frozen"):
                    emb.weight.requires_grad_(False)
                self.embeddings[f["name"]] = emb
            else:
                self.embeddings[f["name"]] = nn.Linear(int(f["width"]), d)
            width += d
        self.in_dim = width
        layers: list[nn.Module] = []
        prev = width
        for h in self.hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
            prev = h
        layers.append(nn.Linear(prev, out_dim))
        self.mlp = nn.Sequential(*layers)

    def embed_fields(self, x: dict[str, Tensor], mask: Tensor | None = None) -> Tensor:
        """[B, in_dim]: the concatenated field vectors; ``mask`` [B, F] True zeroes field f of a row."""
        parts = []
        for j, f in enumerate(self.spec["fields"]):
            v = x[f["name"]]
            layer = self.embeddings[f["name"]]
            if f["kind"] in BAG_KINDS:
                e = layer(v)                                        # [B, L, d]; padding rows are zero
                count = (v > 0).sum(1, keepdim=True).clamp(min=1).to(e.dtype)
                e = e.sum(1) / count
            else:
                e = layer(v.float())
            if mask is not None:
                e = e * (~mask[:, j:j + 1]).to(e.dtype)
            parts.append(e)
        return torch.cat(parts, 1)

    def head(self, h: Tensor) -> Tensor:
        return self.mlp(h)

    def forward(self, x: dict[str, Tensor], mask: Tensor | None = None) -> Tensor:
        return self.mlp(self.embed_fields(x, mask))

    def config(self) -> dict[str, Any]:
        return {"spec": self.spec, "dim": self.dim, "hidden": self.hidden, "out_dim": self.out_dim}


def to_tensors(arrays: dict[str, np.ndarray], rows: Any = None,
               device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Rows of encoded feature arrays as tensors."""
    return {k: torch.from_numpy(np.ascontiguousarray(a if rows is None else a[rows])).to(device)
            for k, a in arrays.items()}


def save_tower(tower: FeatureTower, folder: Path, extra: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tower.state_dict().items()}, folder / WEIGHTS)
    (folder / TOWER_SPEC).write_text(json.dumps({**tower.config(), **(extra or {})}) + "\n")


def load_tower(folder: Path, device: torch.device | str = "cpu") -> tuple[FeatureTower, dict]:
    spec_path = Path(folder) / TOWER_SPEC
    if not spec_path.is_file():
        raise InputError(f"not a recommendation tower folder (no {TOWER_SPEC})", folder)
    cfg = json.loads(spec_path.read_text())
    tower = FeatureTower(cfg["spec"], cfg["dim"], cfg["hidden"], cfg["out_dim"])
    tower.load_state_dict(load_file(str(Path(folder) / WEIGHTS)))
    return tower.to(device).eval(), cfg


@torch.no_grad()
def embed_records(tower: FeatureTower, arrays: dict[str, np.ndarray], batch_size: int = 4096,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """L2-normalised tower outputs [N, out_dim] for encoded records."""
    n = len(next(iter(arrays.values())))
    out = []
    was = tower.training
    tower.eval()
    for s in range(0, n, batch_size):
        z = tower(to_tensors(arrays, slice(s, s + batch_size), device)).float()
        out.append(torch.nn.functional.normalize(z, dim=-1).cpu())
    tower.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, tower.out_dim), np.float32)

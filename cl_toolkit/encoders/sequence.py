"""The SASRec sequence encoder (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation",
ICDM): a user's time-ordered items in, one representation per position out, each position
seeing only itself and the items before it (causal self-attention).

Input: item rows [B, L], left-padded (0 = padding; 1..V the vocabulary's items; V + 1 the mask
token of CL4SRec's item-mask view), so the most recent item is always at position L - 1 and
the position embeddings count back from it. Each position attends to the non-padding positions
at or before it (and a padding position only to itself, so no row of the attention is empty):

    x = dropout(LayerNorm(E[s] + P)),  then n_layers pre-norm blocks
    x <- x + Attn(LN(x), mask: j <= i and s_j != 0),   x <- x + FFN(LN(x)),   h = LN(x)

The score of item v after position t is h_t . E[v]: the item embeddings are also the output
layer (``scores``), as in the paper. An exported model is a folder: ``sequence.json`` (sizes and
the item vocabulary) + ``model.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..io import InputError

SEQUENCE_SPEC = "sequence.json"
WEIGHTS = "model.safetensors"


def causal_mask(seq: Tensor) -> Tensor:
    """[B, L, L] bool, True where position i may attend to position j: j <= i and j is an item
    (not padding), and always i to itself (a padding position then attends to itself alone)."""
    n = seq.shape[1]
    lower = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
    allowed = lower[None] & (seq > 0)[:, None, :]
    return allowed | torch.eye(n, dtype=torch.bool, device=seq.device)[None]


class Block(nn.Module):
    """A pre-norm transformer block: causal multi-head self-attention, then a GELU feed-forward."""

    def __init__(self, dim: int, heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.heads, self.attn_dropout = heads, attn_dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Dropout(dropout), nn.Linear(inner, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None],
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ffn(self.norm2(x)))


class SASRec(nn.Module):
    """Item + position embeddings, ``layers`` causal blocks; ``forward(seq) -> [B, L, dim]``."""

    def __init__(self, n_items: int, max_length: int = 50, dim: int = 64, layers: int = 2, heads: int = 2,
                 inner: int = 256, dropout: float = 0.2, attn_dropout: float = 0.2):
        super().__init__()
        self.n_items, self.max_length, self.dim = n_items, max_length, dim
        self.args = {"n_items": n_items, "max_length": max_length, "dim": dim, "layers": layers, "heads": heads,
                     "inner": inner, "dropout": dropout, "attn_dropout": attn_dropout}
        self.items = nn.Embedding(n_items + 2, dim, padding_idx=0)      # 0 padding, V + 1 the mask token
        self.positions = nn.Embedding(max_length, dim)
        self.norm_in, self.drop = nn.LayerNorm(dim), nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, inner, dropout, attn_dropout) for _ in range(layers))
        self.norm_out = nn.LayerNorm(dim)
        self.apply(_init)

    @property
    def mask_token(self) -> int:
        return self.n_items + 1

    def forward(self, seq: Tensor) -> Tensor:
        """seq [B, L] (L <= max_length, left-padded) -> hidden states [B, L, dim]."""
        n = seq.shape[1]
        pos = torch.arange(self.max_length - n, self.max_length, device=seq.device)
        x = self.drop(self.norm_in(self.items(seq) + self.positions(pos)[None]))
        mask = causal_mask(seq)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm_out(x)

    def last(self, seq: Tensor) -> Tensor:
        """[B, dim]: the representation at the last position (the most recent item)."""
        return self(seq)[:, -1]

    def item_table(self) -> Tensor:
        """[V, dim]: the embeddings of the vocabulary's items (row v - 1 = item v), the output layer."""
        return self.items.weight[1:self.n_items + 1]

    def scores(self, h: Tensor) -> Tensor:
        """[N, V]: h [N, dim] against every item."""
        return h @ self.item_table().T


def _init(m: nn.Module) -> None:
    """Normal(0, 0.02) weights and zero biases (BERT's, as RecBole's SASRec); the padding row zero."""
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)
    if isinstance(m, nn.Embedding) and m.padding_idx is not None:
        with torch.no_grad():
            m.weight[m.padding_idx].zero_()


def left_pad(seqs: list[list[int]], length: int) -> np.ndarray:
    """[N, length] int64: the last ``length`` entries of each sequence, right-aligned, 0 before."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-length:] if length else []
        if len(s):
            out[r, length - len(s):] = s
    return out


def save_sequence(model: SASRec, folder: Path, vocab: list[str], extra: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}, folder / WEIGHTS)
    spec = {"model": "sasrec", "args": model.args, "items": vocab, **(extra or {})}
    (folder / SEQUENCE_SPEC).write_text(json.dumps(spec) + "\n")


def load_sequence(folder: Path, device: torch.device | str = "cpu") -> tuple[SASRec, dict]:
    spec_path = Path(folder) / SEQUENCE_SPEC
    if not spec_path.is_file():
        raise InputError(f"not a sequence model folder (no {SEQUENCE_SPEC})", folder)
    spec = json.loads(spec_path.read_text())
    model = SASRec(**spec["args"])
    model.load_state_dict(load_file(str(Path(folder) / WEIGHTS)))
    return model.to(device).eval(), spec


@torch.no_grad()
def encode_sequences(model: SASRec, seqs: np.ndarray, batch_size: int = 1024,
                     device: torch.device | str = "cpu") -> np.ndarray:
    """[N, dim] float32: the last-position representation of each left-padded sequence [N, L]."""
    was = model.training
    model.eval()
    out = [model.last(torch.from_numpy(seqs[s:s + batch_size]).to(device)).float().cpu()
           for s in range(0, len(seqs), batch_size)]
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, model.dim), np.float32)


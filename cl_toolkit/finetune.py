"""Supervised use of a pretrained encoder: the linear probe and full fine-tuning.

- ``fit_linear`` / ``linear_eval``: the linear-evaluation protocol of the SSL literature, a
  multinomial logistic regression on frozen features, standardised with the training set's
  mean and std, fitted to convergence with L-BFGS (full batch; features are cached in memory):

      min_{W, b}  mean_i CE(W x_i' + b, y_i) + weight_decay / 2 * |W|^2,   x' = (x - mu) / sigma

- ``finetune``: a run dir RUN2 from a run dir RUN and labelled images, either ``linear`` (the
  probe above; the encoder is copied unchanged) or ``full`` (encoder + linear head trained
  end to end with cross-entropy, AdamW, cosine LR, light augmentation: random crops of 60-100%
  and flips). RUN2 holds config.json, env.json, metrics.jsonl, encoder/, head.safetensors
  (weight, bias, mean, std) and results.json.

Pretraining goes through ``train.pretrain``; this supervised loop is separate because it has
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
from torch import Tensor, nn

from .data import ImageData, load_labelled
from .embed import embed_images
from .encoders import load_encoder, save_encoder
from .io import InputError, atomic_dir, check_output, write_jsonl


@dataclass
class LinearHead:
    weight: Tensor       # [C, D]
    bias: Tensor         # [C]
    mean: Tensor         # [D] feature standardisation (zeros / ones when not standardised)
    std: Tensor          # [D]

    def logits(self, x: Tensor) -> Tensor:
        return ((x.float() - self.mean) / self.std) @ self.weight.T + self.bias


def fit_linear(x: Tensor, y: Tensor, num_classes: int, weight_decay: float = 1e-4, max_iter: int = 300,
               standardize: bool = True) -> LinearHead:
    """Multinomial logistic regression on frozen features x [N, D] with labels y [N] (L-BFGS)."""
    x = x.float()
    mean = x.mean(0) if standardize else torch.zeros(x.shape[1])
    std = x.std(0).clamp_min(1e-6) if standardize and len(x) > 1 else torch.ones(x.shape[1])
    xs = (x - mean) / std
    w = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w.T + b, y) + weight_decay / 2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearHead(w.detach(), b.detach(), mean, std)


def accuracy(logits: Tensor, y: Tensor) -> float:
    return round(float((logits.argmax(1) == y).float().mean()), 4) if len(y) else float("nan")


def linear_eval(train_x, train_y, test_x, test_y, weight_decay: float = 1e-4) -> tuple[dict, LinearHead]:
    """Linear-probe top-1 accuracy of test features with a head fitted on the training features."""
    tx, ty = torch.as_tensor(np.asarray(train_x)).float(), torch.as_tensor(np.asarray(train_y)).long()
    qx, qy = torch.as_tensor(np.asarray(test_x)).float(), torch.as_tensor(np.asarray(test_y)).long()
    if len(ty) and (ty < 0).any():
        raise InputError("the linear probe needs a known label on every training record")
    num_classes = int(ty.max()) + 1
    head = fit_linear(tx, ty, num_classes, weight_decay)
    res = {"linear_top1": accuracy(head.logits(qx), qy), "train_top1": accuracy(head.logits(tx), ty),
           "weight_decay": weight_decay, "n_train": len(ty), "n_test": len(qy), "classes": num_classes}
    return res, head


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
    from .augment import ViewGenerator, ViewSpec

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
                from .train import TrainingError

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
    from safetensors.torch import save_file

    from .train import data_hash, environment, resolve_device, seed_everything

    if cfg.mode not in ("linear", "full"):
        raise InputError(f"unknown fine-tuning mode {cfg.mode!r}; choose linear or full")
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
        (tmp / "config.json").write_text(json.dumps({**asdict(cfg), "data_hash": data_hash(data),
                                                     "encoder": spec["name"]}, indent=2) + "\n")
        (tmp / "env.json").write_text(json.dumps(environment(device, "fp32"), indent=2, default=str) + "\n")
        with (tmp / "metrics.jsonl").open("w") as f:
            write_jsonl(f, log)
        save_encoder(enc.float().cpu(), spec["name"], spec.get("args", {}), tmp / "encoder",
                     extra={"source": {"run": str(cfg.run), "finetune": cfg.mode}})
        save_file({k: v.contiguous() for k, v in asdict(head).items()}, str(tmp / "head.safetensors"))
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return {"out": str(Path(cfg.out)), **results}

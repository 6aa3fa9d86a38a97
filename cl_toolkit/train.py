"""The one trainer: every method trains through ``pretrain``.

Budget by ``epochs`` (deterministic: the LR/EMA schedules run on step / total steps) or by
``minutes`` (the schedules run on elapsed training time / budget; evaluation time is not
counted). Warmup + cosine LR, AdamW / LARS / SGD, bf16 autocast where the hardware has it,
atomic ``checkpoints/last.pt`` every ``checkpoint_every`` steps and at the end, exact
``resume`` (model, optimizer, RNG states, data position), NaN guard, ``metrics.jsonl`` with
loss, lr, images/s and collapse statistics, and the exported ``encoder/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__, collapse, dist
from .augment import ViewGenerator, preset
from .data import ImageData, load_images
from .encoders import create_encoder, default_encoder, encoder_args
from .io import InputError, atomic_file, available_cpus, write_json
from .methods import export_image_encoder, get_method, make_config


@dataclass
class TrainConfig:
    """Everything a pretraining run needs; written to ``RUN/config.json`` fully resolved."""

    method: str = "byol"
    data: str = ""
    out: str = ""
    encoder: str | None = None            # default: convnet-small for <= 64 px, else resnet18
    encoder_args: dict = field(default_factory=dict)
    image_size: int | None = None         # default: the data's own size
    channels: int | None = None           # default: the data's own channel count
    epochs: float | None = None           # one of epochs / minutes; default 100 epochs
    minutes: float | None = None
    batch_size: int = 256                 # the global batch: split over the ranks under torchrun
    chunk_size: int = 0                   # > 0: gradient caching in chunks of this many samples per rank
    sync_bn: bool | None = None           # batch norm over the global batch under torchrun (default: the method's)
    optimizer: str = "adamw"              # adamw | lars | sgd
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: float = 0.02                  # fraction of the run spent warming up the LR
    min_lr_ratio: float = 0.01            # final LR = lr * min_lr_ratio (cosine)
    augment: str = "byol"                 # view preset: simclr | byol | none
    aug_strength: float = 1.0
    min_scale: float | None = None        # smallest random-crop area fraction
    small_crops: int = 0                  # extra low-resolution multi-crop views (methods that take them: swav)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"               # auto | fp32 | bf16 | fp16
    channels_last: bool = True
    threads: int | None = None
    log_every: int = 20
    checkpoint_every: int = 200
    method_config: dict = field(default_factory=dict)
    data_hash: str = ""

    def total_steps(self, n: int) -> int | None:
        return None if self.epochs is None else max(1, int(self.epochs * (n // self.batch_size)))


class TrainingError(Exception):
    """Failure inside the work (exit 1), e.g. a NaN loss."""


# ---------------------------------------------------------------- config

def resolve_config(overrides: dict[str, Any], toml_path: str | None = None) -> TrainConfig:
    """Trainer defaults < the method's defaults < a TOML file < explicit overrides (CLI)."""
    file_cfg: dict[str, Any] = {}
    if toml_path:
        import tomllib

        try:
            file_cfg = tomllib.loads(Path(toml_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise InputError(f"cannot read config ({e})", toml_path) from None
    method = overrides.get("method") or file_cfg.get("method") or TrainConfig.method
    entry = get_method(method)
    merged: dict[str, Any] = dict(entry.cls.defaults)
    mcfg = dict(file_cfg.pop("method_config", {}))
    merged.update(file_cfg)
    for k, v in overrides.items():
        if v is not None:
            merged[k] = v
    mcfg.update(merged.pop("method_config", {}) or {})
    if merged.get("minutes") is not None and "epochs" not in file_cfg and overrides.get("epochs") is None:
        merged.pop("epochs", None)     # a --minutes budget replaces the method's default epochs
    merged["method"] = method
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(merged) - known
    if unknown:
        raise InputError(f"unknown config key(s) {sorted(unknown)}", toml_path)
    cfg = TrainConfig(**merged)
    cfg.method_config = asdict(make_config(entry.config, mcfg))
    if cfg.epochs is None and cfg.minutes is None:
        cfg.epochs = 100
    if cfg.epochs is not None and cfg.minutes is not None:
        raise InputError("give either --epochs or --minutes, not both")
    if cfg.optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {cfg.optimizer!r}; choose {', '.join(OPTIMIZERS)}")
    if cfg.small_crops and not getattr(entry.cls, "multicrop", False):
        from .methods import METHODS

        multi = ", ".join(sorted(k for k, e in METHODS.items() if getattr(e.cls, "multicrop", False)))
        raise InputError(f"method {method!r} trains on two views; small_crops is for multi-crop methods ({multi})")
    return cfg


def settings_from(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--set``) -> overrides for ``resolve_config``: values are JSON
    where they parse, else strings; keys the trainer does not know go to ``method_config``."""
    trainer: dict[str, Any] = {}
    method: dict[str, Any] = {}
    for kv in pairs:
        k, eq, v = kv.partition("=")
        if not eq or not k:
            raise InputError(f"--set expects KEY=VALUE, got {kv!r}")
        try:
            val = json.loads(v)
        except json.JSONDecodeError:
            val = v
        (trainer if k in TrainConfig.__dataclass_fields__ else method)[k] = val
    if method:
        trainer["method_config"] = {**trainer.get("method_config", {}), **method}
    return trainer


# ---------------------------------------------------------------- optimizers, schedule

class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as used by SimCLR/BYOL: SGD with momentum whose per-layer step
    is scaled by eta * |w| / |g + wd w|; biases and norm parameters (ndim <= 1) are neither
    decayed nor adapted."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.02):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    d = d.add(p, alpha=g["weight_decay"])
                    pn, dn = p.norm(), d.norm()
                    trust = torch.where((pn > 0) & (dn > 0), g["eta"] * pn / dn, torch.ones_like(pn))
                    d = d.mul(trust)
                buf = self.state[p].setdefault("mu", torch.zeros_like(p))
                buf.mul_(g["momentum"]).add_(d)
                p.add_(buf, alpha=-g["lr"])


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS: dict[str, Callable[[list[dict], TrainConfig], torch.optim.Optimizer]] = {
    "adamw": lambda g, c: torch.optim.AdamW(g, lr=c.lr),
    "lars": lambda g, c: LARS(g, lr=c.lr),
    "sgd": lambda g, c: torch.optim.SGD(g, lr=c.lr, momentum=0.9),
}


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Linear warmup over ``warmup`` of the run, then cosine to ``lr * min_lr_ratio``."""
    if progress < cfg.warmup:
        return cfg.lr * progress / cfg.warmup
    t = (progress - cfg.warmup) / max(1e-8, 1 - cfg.warmup)
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + (cfg.lr - lo) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


# ---------------------------------------------------------------- hardware

def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but CUDA is not available")
    return torch.device(device)


def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16
    autocast measurably speeds up convolutions (docs/benchmarks.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


# ---------------------------------------------------------------- run dir

def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, precision: str) -> dict:
    import torchvision

    return {
        "cltk": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "git_commit": git_commit(), "device": str(device),
        "precision": precision, "threads": torch.get_num_threads(), "world_size": dist.world(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "argv": sys.argv,
    }


def data_hash(data: ImageData) -> str:
    h = hashlib.sha256()
    h.update("\n".join(data.ids).encode())
    h.update(data.images.numpy().tobytes())
    return h.hexdigest()[:16]


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_file(path, force=True, binary=True) as f:
        torch.save(state, f)


# ---------------------------------------------------------------- tasks: data -> batches, model, export

class ImageTask:
    """What the trainer needs for image methods: the decoded images, the method's model on its
    encoder, augmented views per batch, and the exported ``encoder/``.

    A method trains on other inputs by naming another class as its ``task`` attribute with the
    same interface: ``__init__(cfg, entry, device, data)`` reads and validates the data and
    completes ``cfg``; ``n``, ``hash``, ``model``; ``batch(idx)`` -> the model's input for
    those records; ``export(out, extra)`` writes the run's inference artefacts."""

    def __init__(self, cfg: TrainConfig, entry, device: torch.device, data: ImageData | None = None):
        if data is None:
            data = load_images(cfg.data, channels=cfg.channels, size=cfg.image_size)
        cfg.channels, cfg.image_size = data.images.shape[1], data.images.shape[2]
        cfg.encoder = cfg.encoder or default_encoder(cfg.image_size)
        cfg.encoder_args = encoder_args(cfg.encoder, cfg.encoder_args)
        self.cfg, self.device, self.n, self.hash = cfg, device, len(data), data_hash(data)
        encoder = create_encoder(cfg.encoder, cfg.channels, cfg.image_size, **cfg.encoder_args)
        self.model = entry.cls(encoder, make_config(entry.config, cfg.method_config)).to(device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.views = ViewGenerator(preset(cfg.augment, cfg.image_size, cfg.channels, cfg.aug_strength,
                                          cfg.min_scale, cfg.small_crops), cfg.image_size, cfg.channels).to(device)
        self.images = data.images.to(device) if device.type == "cuda" else data.images

    def batch(self, idx: torch.Tensor) -> list[torch.Tensor]:
        v = self.views(self.images[idx].to(self.device, non_blocking=True))
        if self.cfg.channels_last:
            v = [x.contiguous(memory_format=torch.channels_last) for x in v]
        return v

    def export(self, out: Path, extra: dict) -> None:
        export_image_encoder(self.model.encoder, self.cfg.encoder, self.cfg.encoder_args, out / "encoder", extra)


# ---------------------------------------------------------------- the loop

@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    pos: int = 0               # batches done in the current epoch
    elapsed: float = 0.0       # training seconds (evaluation excluded)
    images: int = 0


Monitor = Callable[[nn.Module, TrainState], dict]


def _progress(state: TrainState, cfg: TrainConfig, total: int | None) -> float:
    if total is not None:
        return state.step / total
    return state.elapsed / (cfg.minutes * 60)


def pretrain(cfg: TrainConfig, *, resume: bool = False, force: bool = False, quiet: bool = False,
             data: ImageData | None = None, monitor: Monitor | None = None, monitor_every: int = 0,
             monitor_minutes: list[float] | None = None, stop_at_step: int | None = None) -> dict:
    """Train ``cfg.method`` on ``cfg.data`` into the run dir ``cfg.out``; returns a summary.

    ``monitor(model, state) -> dict`` (``model`` the method's module, ``model.encoder`` its
    backbone) is called every ``monitor_every`` steps and at the given training minutes
    (``monitor_minutes``), its results logged to metrics.jsonl.
    ``stop_at_step`` stops early as an interruption would (for tests of ``resume``).

    Under ``torchrun`` every rank runs this function: the global batch ``cfg.batch_size`` is
    split into contiguous per-rank slices of one shared per-epoch order, gradients are averaged
    by DistributedDataParallel, and rank 0 alone writes the run dir (docs/scaling.md).
    """
    out = Path(cfg.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    if resume:
        if not ckpt_path.is_file():
            raise InputError("nothing to resume (no checkpoints/last.pt)", out)
        saved_cfg = json.loads((out / "config.json").read_text())
        cfg = TrainConfig(**{**saved_cfg, **{k: v for k, v in asdict(cfg).items()
                                             if k in ("minutes", "epochs") and v is not None}})
    elif out.exists() and any(out.iterdir()) and not force:
        raise InputError("run dir already exists; pass --force to overwrite or --resume to continue", out)

    device = dist.local_device(resolve_device(cfg.device))
    dist.init(device)
    world, rank, main = dist.world(), dist.rank(), dist.is_main()
    torch.set_num_threads(cfg.threads or max(1, available_cpus() // _local_ranks(device)))
    seed_everything(cfg.seed)

    # 1. read and validate all input, build the model: nothing is written before this succeeds
    entry = get_method(cfg.method)
    task = getattr(entry.cls, "task", ImageTask)(cfg, entry, device, data)
    model = task.model
    if task.n < 2:
        raise InputError(f"need at least 2 records to train, found {task.n}", cfg.data)
    cfg.batch_size = min(cfg.batch_size, task.n)
    if cfg.batch_size % world:
        raise InputError(f"batch size {cfg.batch_size} does not split over {world} ranks; "
                         f"use a multiple of {world}")
    local_bs = cfg.batch_size // world
    if cfg.chunk_size and not hasattr(model, "represent"):
        raise InputError(f"method {cfg.method!r} has no gradient caching (--chunk-size); methods with it: "
                         f"{', '.join(m for m in _chunkable())}")
    if resume and cfg.data_hash and cfg.data_hash != task.hash:
        raise InputError(f"data changed since the run started (hash {task.hash} != {cfg.data_hash})", cfg.data)
    cfg.data_hash = task.hash
    if cfg.sync_bn is None:
        cfg.sync_bn = bool(getattr(entry.cls, "sync_bn", False))
    _check_same_config(cfg)
    if world > 1:
        if cfg.sync_bn:
            model = task.model = dist.convert_sync_batchnorm(model, device)
        if rank:  # per-rank augmentation / dropout randomness; rank 0 keeps the single-process stream
            seed_everything(_rank_seed(cfg.seed, rank))
    precision = resolve_precision(cfg.precision, device)
    opt = OPTIMIZERS[cfg.optimizer](_param_groups(model, cfg.weight_decay), cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    state = TrainState()

    # 2. the run dir (rank 0 writes; every rank reads the same checkpoint)
    if resume:
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        state = TrainState(**ck["state"])
        ranks = ck.get("rng_ranks") or [ck["rng"]]
        if len(ranks) == world:
            _set_rng_state(ranks[rank])
        else:  # resumed on another number of ranks: fresh per-rank streams (not bit-exact)
            seed_everything(_rank_seed(cfg.seed, rank) + state.step)
        if main:
            _truncate_metrics(out / "metrics.jsonl", state.step)
    elif main:
        if out.exists():
            shutil.rmtree(out)
        (out / "checkpoints").mkdir(parents=True)
        (out / "metrics.jsonl").touch()
    if main:
        write_json(out / "config.json", asdict(cfg))
        write_json(out / "env.json", environment(device, precision))
    dist.barrier()
    ddp = model
    if world > 1 and any(p.requires_grad for p in model.parameters()):
        from torch.nn.parallel import DistributedDataParallel

        # buffers stay per rank (batch-norm statistics, queues kept equal by the methods themselves)
        sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
            DistributedDataParallel).parameters else "broadcast_buffers"
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=getattr(entry.cls, "find_unused_parameters", False),
                                      **{sync: False})

    n = task.n
    per_epoch = n // cfg.batch_size
    total = cfg.total_steps(n)
    pending_marks = sorted(m for m in (monitor_minutes or []) if m * 60 > state.elapsed)
    log = (out / "metrics.jsonl").open("a") if main else open(os.devnull, "w")
    bar = _Bar(quiet or not main, total, cfg.minutes)
    interrupted = warned = False
    perm, perm_epoch = torch.empty(0, dtype=torch.long), -1

    def checkpoint() -> None:
        rngs = dist.all_objects(_rng_state())
        if main:
            save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                        "scaler": scaler.state_dict(), "state": asdict(state),
                                        "rng": rngs[0], "rng_ranks": rngs, "world_size": world,
                                        "config": asdict(cfg)})
        dist.barrier()

    def run_monitor() -> None:
        if not main:
            return
        was = model.training
        model.eval()
        with torch.no_grad():
            res = monitor(model, state)  # type: ignore[misc]
        model.train(was)
        _log(log, {"step": state.step, "epoch": state.epoch, "elapsed_s": round(state.elapsed, 2), **res})

    def on_sigint(signum, frame):  # finish the step, checkpoint, stop
        nonlocal interrupted
        interrupted = True

    old_handler = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    model.train()
    t_log, img_log = time.perf_counter(), 0
    t_mark = t_log
    try:
        while True:
            if world > 1:  # one clock and one stop decision for all ranks: rank-local timing differs
                agreed = dist.all_reduce_(torch.tensor([state.elapsed, float(interrupted)]), "max")
                state.elapsed, interrupted = float(agreed[0]), bool(agreed[1])
            progress = _progress(state, cfg, total)
            if progress >= 1 or interrupted or (stop_at_step is not None and state.step >= stop_at_step):
                break
            if state.pos >= per_epoch:
                state.epoch, state.pos = state.epoch + 1, 0
            if perm_epoch != state.epoch:  # the epoch's order depends on (seed, epoch) only
                perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + state.epoch))
                perm_epoch = state.epoch
            start = state.pos * cfg.batch_size + rank * local_bs
            idx = perm[start:start + local_bs]
            lr = lr_at(cfg, progress)
            for grp in opt.param_groups:
                grp["lr"] = lr
            v = task.batch(idx)
            autocast = torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)
            opt.zero_grad(set_to_none=True)
            if cfg.chunk_size and cfg.chunk_size < local_bs:
                outp = grad_cache_step(model, v, progress, cfg.chunk_size, autocast, scaler)
                loss = _global_loss(outp.loss, world, state, ckpt_path)
                dist.average_gradients(model)
            else:
                with autocast:
                    outp = ddp(v, progress)
                loss = _global_loss(outp.loss, world, state, ckpt_path)
                scaler.scale(outp.loss.float()).backward()
            scaler.step(opt)
            scaler.update()
            model.after_step(progress)
            state.step += 1
            state.pos += 1
            state.images += len(idx) * world
            img_log += len(idx) * world
            bar.update(state, loss)
            if state.step % cfg.log_every == 0 or state.step == total:
                now = time.perf_counter()
                rec = {"step": state.step, "epoch": state.epoch, "loss": round(loss, 5),
                       "lr": lr, "images_per_s": round(img_log / (now - t_log), 1),
                       "elapsed_s": round(state.elapsed, 2)}
                cstats = collapse.stats(outp.z1.detach(), outp.z2.detach())
                rec.update({k: round(v, 5) for k, v in cstats.items()})
                warns = collapse.warnings_for(cstats, len(outp.z1))
                if warns:
                    rec["collapse_warning"] = True
                    if not warned and main:  # once per run on stderr; every affected line in metrics.jsonl
                        sys.stderr.write(f"cltk: warning: step {state.step}: {'; '.join(warns)} "
                                         f"(see collapse_warning in {out / 'metrics.jsonl'})\n")
                        warned = True
                _log(log, rec)
                t_log, img_log = time.perf_counter(), 0
            if state.step % cfg.checkpoint_every == 0:
                checkpoint()
            now = time.perf_counter()
            state.elapsed += now - t_mark  # wall-clock training time, checkpoints and logging included
            t_mark = now
            due = monitor is not None and monitor_every and state.step % monitor_every == 0
            while monitor is not None and pending_marks and state.elapsed >= pending_marks[0] * 60:
                pending_marks.pop(0)
                due = True
            if due:  # evaluation time is not training time
                run_monitor()
                dist.barrier()
                t_log, img_log, t_mark = time.perf_counter(), 0, time.perf_counter()
    finally:
        bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    checkpoint()
    done = _progress(state, cfg, total) >= 1
    if done and main:
        if monitor is not None and (not monitor_every or state.step % monitor_every):
            run_monitor()
        model.eval()
        task.export(out, {"source": {"run": str(out), "method": cfg.method, "step": state.step}})
    dist.barrier()
    log.close()
    summary = {"run": str(out), "method": cfg.method, "encoder": cfg.encoder, "steps": state.step,
               "epochs": round(state.step / max(1, per_epoch), 2), "images": state.images,
               "train_seconds": round(state.elapsed, 1),
               "images_per_s": round(state.images / max(state.elapsed, 1e-9), 1), "complete": done}
    if world > 1:
        summary["world_size"] = world
    if interrupted:
        summary["interrupted"] = True
    return summary


def _rank_seed(seed: int, rank: int) -> int:
    return seed + 1_000_003 * rank


def _local_ranks(device: torch.device) -> int:
    """Processes sharing this machine's CPU cores (torchrun's LOCAL_WORLD_SIZE) on a CPU run."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1


def _check_same_config(cfg: TrainConfig) -> None:
    """Every rank must train the same run: a clean error naming the first differing setting."""
    mine = asdict(cfg)
    for r, other in enumerate(dist.all_objects(mine)):
        diff = sorted(k for k in mine if mine[k] != other.get(k))
        if diff:
            k = diff[0]
            raise InputError(f"ranks disagree on the config: {k} is {other.get(k)!r} on rank {r} and "
                             f"{mine[k]!r} on rank {dist.rank()}; start every rank with the same command and data")


def _global_loss(loss: torch.Tensor, world: int, state: TrainState, ckpt_path: Path) -> float:
    """The mean loss over ranks (what the logs show), checked for NaN on every rank at once."""
    value = loss.detach().float().reshape(1).clone()
    if world > 1:
        dist.all_reduce_(value)
        value /= world
    if not torch.isfinite(value).all():
        raise TrainingError(
            f"loss became {value.item()} at step {state.step}; stopped. The last good checkpoint "
            f"is {ckpt_path} (lower --lr or use --precision fp32, then --resume)")
    return value.item()


def _chunkable() -> list[str]:
    from .methods import METHODS

    return sorted(name for name, e in METHODS.items() if hasattr(e.cls, "represent"))


def _split(batch: Any, start: int, stop: int, n: int) -> Any:
    """Rows start:stop of every per-sample tensor (first dimension ``n``) in a batch of nested
    lists / dicts; other values (pairwise masks, scalars) are left whole."""
    if isinstance(batch, torch.Tensor):
        return batch[start:stop] if batch.dim() and len(batch) == n else batch
    if isinstance(batch, dict):
        return {k: _split(v, start, stop, n) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_split(v, start, stop, n) for v in batch)
    return batch


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    return _batch_len(batch[0])


def grad_cache_step(model: nn.Module, batch: Any, progress: float, chunk: int, autocast, scaler) -> Any:
    """One step of gradient caching (Gao et al. 2021, arXiv:2101.06983): the exact gradient of
    the loss on the whole batch while only ``chunk`` samples' activations are alive at a time.

    1. ``model.represent`` on each chunk without a graph (saving the RNG state first, so that
       dropout draws the same masks again in 3.);
    2. ``model.objective`` on the concatenated representations: its gradient w.r.t. every
       representation is cached;
    3. each chunk again with a graph, back-propagating its slice of the cached gradient.
    The parameter gradients accumulate to the full-batch gradient. (Batch norm normalises each
    chunk by its own statistics; encoders without batch norm, as transformers, are exact.)"""
    n = _batch_len(batch)
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    rngs, reps = [], []
    with torch.no_grad():
        for s, e in bounds:
            rngs.append(torch.get_rng_state())
            with autocast:
                reps.append(model.represent(_split(batch, s, e, n), progress))
    after = torch.get_rng_state()
    full = [torch.cat([r[i] for r in reps]).detach().requires_grad_(reps[0][i].dtype.is_floating_point)
            for i in range(len(reps[0]))]
    with autocast:
        outp = model.objective(full, batch, progress)
    scaler.scale(outp.loss.float()).backward()
    for (s, e), rng in zip(bounds, rngs):
        torch.set_rng_state(rng)
        with autocast:
            part = model.represent(_split(batch, s, e, n), progress)
        pairs = [(r, f.grad[s:e]) for r, f in zip(part, full) if f.grad is not None and r.requires_grad]
        if pairs:
            torch.autograd.backward([r for r, _ in pairs], [g for _, g in pairs])
    torch.set_rng_state(after)
    return outp


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _log(f, rec: dict) -> None:
    f.write(json.dumps(rec) + "\n")
    f.flush()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    with atomic_file(path, force=True) as f:
        f.write("".join(ln + "\n" for ln in keep))


class _Bar:
    """A rich progress bar on stderr when it is a terminal, nothing otherwise."""

    def __init__(self, quiet: bool, total_steps: int | None, minutes: float | None):
        self.p = None
        if quiet or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(TextColumn("pretrain"), BarColumn(), TextColumn("{task.fields[info]}"),
                          TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self.total_steps, self.minutes = total_steps, minutes
        self.task = self.p.add_task("train", total=total_steps or minutes * 60, info="")
        self.p.start()

    def update(self, state: TrainState, loss: float) -> None:
        if self.p is None:
            return
        done = state.step if self.total_steps else state.elapsed
        rate = state.images / max(state.elapsed, 1e-9)
        self.p.update(self.task, completed=done,
                      info=f"step {state.step} epoch {state.epoch} loss {loss:.4f} {rate:.0f} img/s")

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()


def load_run_config(run: str | Path) -> dict:
    p = Path(run) / "config.json"
    if not p.is_file():
        raise InputError("not a run dir (no config.json)", run)
    return json.loads(p.read_text())


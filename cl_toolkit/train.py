"""The one trainer: every method trains through ``Trainer`` (``train`` runs one).

Budget by ``epochs`` (deterministic: the LR/EMA schedules run on step / total steps) or by
``minutes`` (the schedules run on elapsed training time / budget; evaluation time is not
counted). Warmup + cosine LR, AdamW / LARS / SGD, bf16 autocast where the hardware has it,
atomic ``checkpoints/last.pt`` every ``checkpoint_every`` steps and at the end, exact
``resume`` (model, optimizer, RNG states, data position), NaN guard, ``metrics.jsonl`` with
loss, lr, images/s and collapse statistics, and the task's exported ``encoder/``.

The loop reads as the run does: ``prepare`` (read, validate, build: nothing is written before it
succeeds), ``open_run`` (resume from the checkpoint, or create the run dir), then for each batch
``step`` (forward, backward, optimizer, momentum), ``log`` and ``checkpoint``, then ``finish``.
Under ``torchrun`` every rank runs it: the global batch ``cfg.batch_size`` is split into
contiguous per-rank slices of one shared per-epoch order, gradients are averaged by
DistributedDataParallel, and rank 0 alone writes the run dir (docs/scaling.md).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import collapse, dist
from .config import TrainConfig, given, resume_config
from .gradcache import grad_cache_step
from .io import CpuShare, InputError, RunDir, TrainingError, atomic_file, check_writable, write_json
from .methods import METHODS, get_method, update_momentum
from .optim import lr_at, make_optimizer
from .runtime import (
    ProgressBar,
    autocast_dtype,
    environment,
    resolve_device,
    resolve_precision,
    rng_state,
    seed_everything,
    set_rng_state,
    set_threads,
)


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    pos: int = 0               # batches done in the current epoch
    elapsed: float = 0.0       # training seconds (evaluation excluded)
    images: int = 0


Monitor = Callable[[nn.Module, TrainState], dict]
SHARE_SECONDS = 3.0       # how often automatic threads re-count the cores other processes leave free


class Trainer:
    """One pretraining run of ``cfg.method`` on ``cfg.data`` into the run dir ``cfg.out``.

    ``monitor(model, state) -> dict`` (``model`` the method's module, ``model.encoder`` its
    backbone) is called every ``monitor_every`` steps and at the given training minutes
    (``monitor_minutes``), its results logged to metrics.jsonl. ``stop_at_step`` stops early as
    an interruption would (for tests of ``resume``). ``data`` is the task's data already read."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, force: bool = False, quiet: bool = False,
                 data: Any = None, monitor: Monitor | None = None, monitor_every: int = 0,
                 monitor_minutes: list[float] | None = None, stop_at_step: int | None = None):
        self.cfg, self.resume, self.force, self.quiet, self.data = cfg, resume, force, quiet, data
        self.monitor, self.monitor_every, self.stop_at_step = monitor, monitor_every, stop_at_step
        self.marks = list(monitor_minutes or [])
        self.run_dir = RunDir(cfg.out)
        self.state = TrainState()
        self.interrupted = self.warned = False

    # ---------------------------------------------------------------- 1. prepare: read, validate, build
    def _run_config(self) -> TrainConfig:
        """The config to train with: the given one, or on resume the run's own, with a new budget
        of the same kind if one was given."""
        cfg, run = self.cfg, self.run_dir
        if not self.resume:
            if run.root.exists() and any(run.root.iterdir()) and not self.force:
                raise InputError("run dir already exists; pass --force to overwrite or --resume to continue", run.root)
            check_writable(run.root)
            return cfg
        if not run.last_checkpoint.is_file():
            raise InputError("nothing to resume (no checkpoints/last.pt)", run.root)
        return resume_config(run.read_config(), given(cfg))

    def prepare(self) -> None:
        cfg = self._run_config()
        device = dist.local_device(resolve_device(cfg.device))
        dist.init(device)
        self.world, self.rank, self.main = dist.world(), dist.rank(), dist.is_main()
        cores = set_threads(cfg.threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1)
        # threads follow the cores other processes leave free, unless a count was asked for (--threads,
        # OMP_NUM_THREADS): a pinned count gives the same floating-point results on every run
        self.share = CpuShare(cores) if device.type == "cpu" and not (cfg.threads or os.environ.get(
            "OMP_NUM_THREADS")) else None
        self._next_share = time.monotonic() + SHARE_SECONDS
        seed_everything(cfg.seed)
        entry = get_method(cfg.method)
        task = entry.cls.task(cfg, entry.cls, device, self.data)
        if task.n < 2:
            raise InputError(f"need at least 2 records to train, found {task.n}", cfg.data)
        if self.resume and cfg.data_hash and cfg.data_hash != task.hash:
            raise InputError(f"data changed since the run started (hash {task.hash} != {cfg.data_hash})", cfg.data)
        cfg = dataclasses.replace(cfg, **task.resolved, batch_size=min(cfg.batch_size, task.n), data_hash=task.hash,
                                  sync_bn=entry.cls.sync_bn if cfg.sync_bn is None else cfg.sync_bn)
        if cfg.batch_size % self.world:
            raise InputError(f"batch size {cfg.batch_size} does not split over {self.world} ranks; "
                             f"use a multiple of {self.world}")
        if cfg.chunk_size and not entry.cls.splits():
            chunkable = ", ".join(sorted(n for n, e in METHODS.items() if e.cls.splits()))
            raise InputError(f"method {cfg.method!r} has no gradient caching (--chunk-size); methods with it: "
                             f"{chunkable}")
        _check_same_config(cfg)
        self.model = task.model
        if self.world > 1:
            if cfg.sync_bn:
                self.model = task.model = dist.convert_sync_batchnorm(self.model, device)
            if self.rank:  # per-rank augmentation / dropout randomness; rank 0 keeps the single-process stream
                seed_everything(_rank_seed(cfg.seed, self.rank))
        self.cfg, self.task, self.device, self.entry = cfg, task, device, entry
        self.local_bs = cfg.batch_size // self.world
        self.precision = resolve_precision(cfg.precision, device)
        self.amp_dtype = autocast_dtype(self.precision)
        self.opt = make_optimizer(cfg.optimizer, self.model, cfg.lr, cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")

    # ---------------------------------------------------------------- 2. the run dir
    def open_run(self) -> None:
        """Resume from the checkpoint (every rank reads it) or create the run dir (rank 0)."""
        run = self.run_dir
        if self.resume:
            ck = _load_checkpoint(run.last_checkpoint, self.device)
            try:
                self.model.load_state_dict(ck["model"])
                self.opt.load_state_dict(ck["optimizer"])
                self.scaler.load_state_dict(ck["scaler"])
                self.state = TrainState(**ck["state"])
            except (KeyError, TypeError, ValueError, RuntimeError) as e:
                raise InputError(f"cannot continue from this checkpoint: it does not fit the run's model "
                                 f"({type(e).__name__})", run.last_checkpoint) from None
            ranks = ck.get("rng_ranks") or [ck["rng"]]
            if len(ranks) == self.world:
                set_rng_state(ranks[self.rank])
            else:  # resumed on another number of ranks: fresh per-rank streams (not bit-exact)
                seed_everything(_rank_seed(self.cfg.seed, self.rank) + self.state.step)
            if self.main:
                _truncate_metrics(run.metrics, self.state.step)
        elif self.main:
            if run.root.exists():
                shutil.rmtree(run.root)
            run.checkpoints.mkdir(parents=True)
            run.metrics.touch()
        if self.main:
            write_json(run.config, self.cfg.to_dict())
            write_json(run.env, environment(self.device, self.precision))
        dist.barrier()
        self.ddp = self.model
        if self.world > 1 and any(p.requires_grad for p in self.model.parameters()):
            # buffers stay per rank (batch-norm statistics, queues kept equal by the methods themselves)
            sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
                DistributedDataParallel).parameters else "broadcast_buffers"
            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                               else None, find_unused_parameters=self.entry.cls.find_unused_parameters,
                                               **{sync: False})

    # ---------------------------------------------------------------- 3. one step
    def progress(self) -> float:
        if self.total is not None:
            return self.state.step / self.total
        return self.state.elapsed / (self.cfg.minutes * 60)

    def step(self, idx: torch.Tensor, progress: float) -> tuple[float, Any]:
        """Forward, backward and optimizer step on the records ``idx``, then the momentum update
        and the method's ``after_step``. Returns (the loss averaged over ranks, StepOutput)."""
        cfg, model = self.cfg, self.model
        for grp in self.opt.param_groups:
            grp["lr"] = self.lr
        batch = self.task.batch(idx)
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                  enabled=self.amp_dtype is not None)
        self.opt.zero_grad(set_to_none=True)
        if cfg.chunk_size and cfg.chunk_size < self.local_bs:
            outp = grad_cache_step(model, batch, progress, cfg.chunk_size, autocast, self.scaler)
            loss = self._global_loss(outp.loss)
            dist.average_gradients(model)
        else:
            with autocast:
                outp = self.ddp(batch, progress)
            loss = self._global_loss(outp.loss)
            self.scaler.scale(outp.loss.float()).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        update_momentum(model, progress)
        model.after_step(progress)
        return loss, outp

    def _global_loss(self, loss: torch.Tensor) -> float:
        """The mean loss over ranks (what the logs show), checked for NaN on every rank at once."""
        value = loss.detach().float().reshape(1).clone()
        if self.world > 1:
            dist.all_reduce_(value)
            value /= self.world
        if not torch.isfinite(value).all():
            ck = self.run_dir.last_checkpoint
            where = (f"The last good checkpoint is {ck} (lower --lr or use --precision fp32, then --resume)"
                     if ck.is_file() else "No checkpoint was written yet, so the run dir is removed (lower --lr "
                     "or use --precision fp32)")
            raise TrainingError(f"loss became {value.item()} at step {self.state.step}; stopped. {where}")
        return value.item()

    # ---------------------------------------------------------------- 4. log, checkpoint, monitor
    def log(self, loss: float, outp: Any) -> None:
        """A metrics.jsonl line: loss, lr, throughput, collapse statistics (and a one-time warning)."""
        s = self.state
        now = time.perf_counter()
        rec = {"step": s.step, "epoch": s.epoch, "loss": round(loss, 5), "lr": self.lr,
               "images_per_s": round(self.img_log / (now - self.t_log), 1), "elapsed_s": round(s.elapsed, 2),
               "threads": torch.get_num_threads()}
        cstats = collapse.stats(outp.z1.detach(), outp.z2.detach())
        rec.update({k: round(v, 5) for k, v in cstats.items()})
        warns = collapse.warnings_for(cstats, len(outp.z1))
        if warns:
            rec["collapse_warning"] = True
            if not self.warned and self.main:  # once per run on stderr; every affected line in metrics.jsonl
                sys.stderr.write(f"cltk: warning: step {s.step}: {'; '.join(warns)} "
                                 f"(see collapse_warning in {self.run_dir.metrics})\n")
                self.warned = True
        _log(self.log_file, rec)
        self.t_log, self.img_log = time.perf_counter(), 0

    def checkpoint(self) -> None:
        rngs = dist.all_objects(rng_state())
        if self.main:
            with atomic_file(self.run_dir.last_checkpoint, force=True, binary=True) as f:
                torch.save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                            "scaler": self.scaler.state_dict(), "state": asdict(self.state),
                            "rng": rngs[0], "rng_ranks": rngs, "world_size": self.world,
                            "config": self.cfg.to_dict()}, f)
        dist.barrier()

    def run_monitor(self) -> None:
        if not self.main or self.monitor is None:
            return
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            res = self.monitor(self.model, self.state)
        self.model.train(was)
        s = self.state
        _log(self.log_file, {"step": s.step, "epoch": s.epoch, "elapsed_s": round(s.elapsed, 2), **res})

    def _monitor_due(self) -> bool:
        due = bool(self.monitor is not None and self.monitor_every and self.state.step % self.monitor_every == 0)
        while self.monitor is not None and self.marks and self.state.elapsed >= self.marks[0] * 60:
            self.marks.pop(0)
            due = True
        return due

    # ---------------------------------------------------------------- 5. the loop
    def _should_stop(self) -> bool:
        if self.world > 1:  # one clock and one stop decision for all ranks: rank-local timing differs
            agreed = dist.all_reduce_(torch.tensor([self.state.elapsed, float(self.interrupted)]), "max")
            self.state.elapsed, self.interrupted = float(agreed[0]), bool(agreed[1])
        return (self.progress() >= 1 or self.interrupted
                or (self.stop_at_step is not None and self.state.step >= self.stop_at_step))

    def _next_indices(self) -> torch.Tensor:
        """This rank's slice of the next batch of the epoch's order (which depends on seed and epoch only)."""
        s, cfg = self.state, self.cfg
        if s.pos >= self.per_epoch:
            s.epoch, s.pos = s.epoch + 1, 0
        if self._perm_epoch != s.epoch:
            gen = torch.Generator().manual_seed(cfg.seed * 100003 + s.epoch)
            self._perm = torch.randperm(self.task.n, generator=gen)
            self._perm_epoch = s.epoch
        start = s.pos * cfg.batch_size + self.rank * self.local_bs
        return self._perm[start:start + self.local_bs]

    def loop(self) -> None:
        s, cfg = self.state, self.cfg
        self.per_epoch = self.task.n // cfg.batch_size
        self.total = cfg.total_steps(self.task.n)
        self.marks = sorted(m for m in self.marks if m * 60 > s.elapsed)
        self._perm, self._perm_epoch = torch.empty(0, dtype=torch.long), -1
        bar = ProgressBar("pretrain", self.total or cfg.minutes * 60, self.quiet or not self.main, transient=False)
        old_handler = signal.signal(signal.SIGINT, self._on_sigint) if _main_thread() else None
        self.model.train()
        self.t_log, self.img_log = time.perf_counter(), 0
        t_mark = self.t_log
        try:
            while not self._should_stop():
                progress = self.progress()
                idx = self._next_indices()
                self.lr = lr_at(cfg, progress)
                loss, outp = self.step(idx, progress)
                s.step, s.pos = s.step + 1, s.pos + 1
                s.images += len(idx) * self.world
                self.img_log += len(idx) * self.world
                bar.update(s.step if self.total else s.elapsed, f"step {s.step} epoch {s.epoch} loss {loss:.4f} "
                           f"{s.images / max(s.elapsed, 1e-9):.0f} img/s")
                if s.step % cfg.log_every == 0 or s.step == self.total:
                    self.log(loss, outp)
                if s.step % cfg.checkpoint_every == 0:
                    self.checkpoint()
                now = time.perf_counter()
                s.elapsed += now - t_mark  # wall-clock training time, checkpoints and logging included
                t_mark = now
                if self.share is not None and time.monotonic() >= self._next_share:
                    self._follow_free_cores()
                if self._monitor_due():  # evaluation time is not training time
                    self.run_monitor()
                    dist.barrier()
                    self.t_log, self.img_log, t_mark = time.perf_counter(), 0, time.perf_counter()
        finally:
            bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)

    def _follow_free_cores(self) -> None:
        """Re-count the cores other processes leave free and use that many threads."""
        n = self.share.threads()
        if n is not None and n != torch.get_num_threads():
            torch.set_num_threads(n)
        self._next_share = time.monotonic() + SHARE_SECONDS

    def _on_sigint(self, signum, frame) -> None:  # finish the step, checkpoint, stop
        self.interrupted = True

    # ---------------------------------------------------------------- 6. finish
    def finish(self) -> dict:
        """The last checkpoint, the final monitor and the export (a complete run), the summary."""
        self.checkpoint()
        s, cfg = self.state, self.cfg
        done = self.progress() >= 1
        if done and self.main:
            if self.monitor is not None and (not self.monitor_every or s.step % self.monitor_every):
                self.run_monitor()
            self.model.eval()
            self.task.export(self.run_dir, {"source": {"run": str(self.run_dir.root), "method": cfg.method,
                                                       "step": s.step}})
        dist.barrier()
        summary = {"run": str(self.run_dir.root), "method": cfg.method, "encoder": cfg.encoder, "steps": s.step,
                   "epochs": round(s.step / max(1, self.per_epoch), 2), "images": s.images,
                   "train_seconds": round(s.elapsed, 1),
                   "images_per_s": round(s.images / max(s.elapsed, 1e-9), 1), "complete": done}
        if self.world > 1:
            summary["world_size"] = self.world
        if self.interrupted:
            summary["interrupted"] = True
        return summary

    def run(self) -> dict:
        self.prepare()
        try:
            self.open_run()
            self.log_file = self.run_dir.metrics.open("a") if self.main else open(os.devnull, "w")
            try:
                self.loop()
                return self.finish()
            finally:
                self.log_file.close()
        except BaseException:
            # a new run that fails before its first checkpoint leaves nothing behind (it could not resume)
            if not self.resume and self.main and not self.run_dir.last_checkpoint.is_file():
                shutil.rmtree(self.run_dir.root, ignore_errors=True)
            raise


def train(cfg: TrainConfig, **kwargs: Any) -> dict:
    """Run the trainer (``Trainer``'s keyword arguments); returns the run summary. The
    pretraining pipeline (``pipeline.pretrain``) adds what a method's apps need after it."""
    return Trainer(cfg, **kwargs).run()


# ---------------------------------------------------------------- helpers

def _rank_seed(seed: int, rank: int) -> int:
    return seed + 1_000_003 * rank


def _check_same_config(cfg: TrainConfig) -> None:
    """Every rank must train the same run: a clean error naming the first differing setting."""
    mine = cfg.to_dict()
    for r, other in enumerate(dist.all_objects(mine)):
        diff = sorted(k for k in mine if mine[k] != other.get(k))
        if diff:
            k = diff[0]
            raise InputError(f"ranks disagree on the config: {k} is {other.get(k)!r} on rank {r} and "
                             f"{mine[k]!r} on rank {dist.rank()}; start every rank with the same command and data")


def _load_checkpoint(path: Path, device: torch.device) -> dict:
    """``checkpoints/last.pt``, or one InputError naming it when it is truncated or not a checkpoint."""
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # torch.load raises many types on a damaged file (pickle, zip, EOF, runtime)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise InputError(f"cannot continue from this checkpoint: corrupt or unreadable ({first})", path) from None
    if not isinstance(ck, dict) or not {"model", "optimizer", "state"} <= set(ck):
        raise InputError("cannot continue from this checkpoint: not a cltk checkpoint", path)
    return ck


def _main_thread() -> bool:
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

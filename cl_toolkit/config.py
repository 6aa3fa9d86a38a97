"""The run config: a typed ``TrainConfig`` resolved once (trainer defaults < the method's defaults
< a TOML file < the command line), its method part the method's own ``Config`` dataclass; written
fully resolved to ``RUN/config.json`` and read back from it on ``--resume``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from .io import InputError
from .methods import METHODS, get_method, make_config
from .optim import OPTIMIZERS


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
    method_config: Any = field(default_factory=dict)   # the method's Config dataclass once resolved
    data_hash: str = ""

    def total_steps(self, n: int) -> int | None:
        return None if self.epochs is None else max(1, int(self.epochs * (n // self.batch_size)))

    def to_dict(self) -> dict:
        """The JSON form (config.json): the method config as a plain dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A config written by ``to_dict`` (a run's config.json), its method config rebuilt."""
        known = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if isinstance(cfg.method_config, dict):
            cfg.method_config = make_config(get_method(cfg.method).config, cfg.method_config)
        return cfg


TRAINER_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def resolve_config(overrides: dict[str, Any], toml_path: str | None = None) -> TrainConfig:
    """Trainer defaults < the method's defaults < a TOML file < explicit overrides (CLI);
    unknown keys and conflicting budgets are refused with one line."""
    file_cfg: dict[str, Any] = {}
    if toml_path:
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
    unknown = set(merged) - TRAINER_KEYS
    if unknown:
        raise InputError(f"unknown config key(s) {sorted(unknown)}", toml_path)
    cfg = TrainConfig(**merged, method_config=make_config(entry.config, mcfg))
    if cfg.epochs is None and cfg.minutes is None:
        cfg.epochs = 100
    if cfg.epochs is not None and cfg.minutes is not None:
        raise InputError("give either --epochs or --minutes, not both")
    if cfg.optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {cfg.optimizer!r}; choose {', '.join(OPTIMIZERS)}")
    if cfg.small_crops and not entry.cls.multicrop:
        multi = ", ".join(sorted(k for k, e in METHODS.items() if e.cls.multicrop))
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
        (trainer if k in TRAINER_KEYS else method)[k] = val
    if method:
        trainer["method_config"] = {**trainer.get("method_config", {}), **method}
    return trainer

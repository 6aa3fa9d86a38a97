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

from .io import InputError, check_range
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

# Valid ranges of the trainer's numbers: (type, low, low inclusive, high, high inclusive); None = unbounded.
RANGES: dict[str, tuple[type, float | None, bool, float | None, bool]] = {
    "epochs": (float, 0, False, None, False), "minutes": (float, 0, False, None, False),
    "batch_size": (int, 2, True, None, False), "chunk_size": (int, 0, True, None, False),
    "lr": (float, 0, False, None, False), "weight_decay": (float, 0, True, None, False),
    "warmup": (float, 0, True, 1, False), "min_lr_ratio": (float, 0, True, 1, True),
    "aug_strength": (float, 0, True, None, False), "min_scale": (float, 0, False, 1, True),
    "small_crops": (int, 0, True, None, False), "seed": (int, 0, True, None, False),
    "image_size": (int, 8, True, 4096, True), "channels": (int, 1, True, 4, True),
    "threads": (int, 1, True, None, False), "log_every": (int, 1, True, None, False),
    "checkpoint_every": (int, 1, True, None, False),
}
CHOICES = {"optimizer": tuple(OPTIMIZERS), "precision": ("auto", "fp32", "bf16", "fp16"),
           "augment": ("simclr", "byol", "none")}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Every number of the trainer in its range, every choice known: one line naming the option."""
    for key, rng in RANGES.items():
        value = getattr(cfg, key)
        if value is not None:
            check_range(_flag(key), value, *rng)
    for key, options in CHOICES.items():
        if getattr(cfg, key) not in options:
            raise InputError(f"{_flag(key)} must be one of {', '.join(options)}, got {getattr(cfg, key)!r}")
    if cfg.epochs is not None and cfg.minutes is not None:
        raise InputError("give either --epochs or --minutes, not both")
    return cfg


def _read_toml(toml_path: str | None) -> dict[str, Any]:
    if not toml_path:
        return {}
    try:
        return tomllib.loads(Path(toml_path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"cannot read config ({e})", toml_path) from None


def asked_config(overrides: dict[str, Any], toml_path: str | None = None) -> TrainConfig:
    """What the command line and a TOML file ask for, nothing resolved (for ``--resume``, where
    the run's own config.json supplies the rest: ``resume_config``)."""
    merged = _read_toml(toml_path)
    mcfg = dict(merged.pop("method_config", {}))
    merged.update({k: v for k, v in overrides.items() if v is not None})
    mcfg.update(merged.pop("method_config", {}) or {})
    unknown = set(merged) - TRAINER_KEYS
    if unknown:
        raise InputError(f"unknown config key(s) {sorted(unknown)}", toml_path)
    return TrainConfig(**merged, method_config=mcfg)


def resolve_config(overrides: dict[str, Any], toml_path: str | None = None) -> TrainConfig:
    """Trainer defaults < the method's defaults < a TOML file < explicit overrides (CLI);
    unknown keys, values out of range and conflicting budgets are refused with one line."""
    file_cfg = _read_toml(toml_path)
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
    validate(cfg)
    if cfg.small_crops and not entry.cls.multicrop:
        multi = ", ".join(sorted(k for k, e in METHODS.items() if e.cls.multicrop))
        raise InputError(f"method {method!r} trains on two views; small_crops is for multi-crop methods ({multi})")
    return cfg


SAFE_ON_RESUME = ("out", "device", "threads")     # where and how fast, not what is trained


def given(cfg: TrainConfig) -> dict[str, Any]:
    """The settings of ``cfg`` that differ from a default ``TrainConfig`` (what a caller asked for)."""
    base = TrainConfig().to_dict()
    return {k: v for k, v in cfg.to_dict().items() if v != base[k] and not (k == "method_config" and not v)}


def resume_config(saved: dict[str, Any], asked: dict[str, Any]) -> TrainConfig:
    """The config a resumed run continues with: its own (``saved``, from config.json) with the
    settings that are safe to change applied (device, threads, and a new budget of the kind the run
    was started with); any other setting in ``asked`` must equal the run's, else one line names it."""
    cfg = dict(saved)
    kind = "epochs" if saved.get("epochs") is not None else "minutes"
    for key, value in asked.items():
        if value is None or key in ("data_hash",):
            continue
        if key in SAFE_ON_RESUME:
            cfg[key] = value
        elif key in ("epochs", "minutes"):
            if key != kind:
                raise InputError(f"the run was started with --{kind} {saved[kind]}; resume it with --{kind} "
                                 f"(--{key} would change its schedule)")
            cfg[key] = value
        elif key == "method_config":
            mine = saved.get("method_config") or {}
            new = value if isinstance(value, dict) else asdict(value)
            diff = sorted(k for k, v in new.items() if k in mine and mine[k] != v or k not in mine)
            if diff:
                k = diff[0]
                raise InputError(f"--set {k}={json.dumps(new[k])} differs from the run's {json.dumps(mine.get(k))}; "
                                 "a resumed run keeps its settings (leave it out, or start a new run)")
        elif isinstance(value, dict) and isinstance(saved.get(key), dict):
            diff = sorted(k for k, v in value.items() if saved[key].get(k) != v)    # settings given: as the run's
            if diff:
                raise InputError(f"{_flag(key)} {diff[0]}={value[diff[0]]!r} differs from the run's "
                                 f"{saved[key].get(diff[0])!r}; a resumed run keeps its settings")
        elif value != saved.get(key):
            raise InputError(f"{_flag(key)} {value!r} differs from the run's {saved.get(key)!r}; a resumed run "
                             "keeps its settings (leave it out, or start a new run with --force)")
    return validate(TrainConfig.from_dict(cfg))


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

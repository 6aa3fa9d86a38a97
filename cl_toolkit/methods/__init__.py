"""The method registry. A method = encoders + heads + views + loss + schedule, one file each,
a ``Method`` subclass (the contract is in ``methods/base.py``) with its ``Config`` dataclass
beside it. ``@register_method(name, description, paper)`` makes it a name users type
(``--method byol``); ``cltk methods`` lists them."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..io import InputError, check_range
from .base import (
    KeyQueue,
    Method,
    StepOutput,
    duplicate_mask,
    ema_update,
    frozen_copy,
    momentum_copy,
    momentum_schedule,
    trained_pairs,
    update_momentum,
)

__all__ = ["METHODS", "KeyQueue", "Method", "MethodEntry", "StepOutput", "duplicate_mask", "ema_update",
           "frozen_copy", "get_method", "load_all", "make_config", "momentum_copy", "momentum_schedule",
           "register_method", "trained_pairs", "update_momentum"]


@dataclass
class MethodEntry:
    name: str
    cls: type
    config: type         # the method's Config dataclass (defined next to it)
    description: str
    paper: str


METHODS: dict[str, MethodEntry] = {}


def register_method(name: str, description: str, paper: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if not issubclass(cls, Method):
            raise TypeError(f"method {name!r}: {cls.__name__} must subclass methods.base.Method")
        METHODS[name] = MethodEntry(name, cls, sys.modules[cls.__module__].Config, description, paper)
        return cls

    return deco


def load_all() -> dict[str, MethodEntry]:
    """Import every method module (each registers itself on import)."""
    from . import (  # noqa: F401  (registration; the registry imports its members, not a layer above)
        barlow,
        byol,
        cdtom,
        cl4srec,
        clip,
        directpred,
        duorec,
        featmask,
        lightgcn,
        mocov2,
        mocov3,
        sasrec,
        sgl,
        simclr,
        simcse,
        simgcl,
        simsiam,
        swav,
        twin,
        twotower,
        vicreg,
    )

    return METHODS


def get_method(name: str) -> MethodEntry:
    load_all()
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


# Method settings that must be positive, and those that are fractions in [0, 1], by name: the
# conventions every method's Config follows (a new field with such a name is checked too).
POSITIVE = ("temperature", "_dim", "_hidden", "_size", "prototypes", "freq", "_iters", "_eps", "_length")
FRACTIONS = ("momentum", "rho", "holdout", "same_caption", "freeze_prototypes", "dup_rate", "dropout", "_ratio")
BELOW_ONE = ("tau_plus",)      # in [0, 1): DCL's class prior divides by 1 - tau_plus


def _check_setting(name: str, kind: str, value: Any, where: str) -> None:
    """A method setting of the declared type (``--set key=value`` arrives as JSON), finite, and in
    the range its name implies; one InputError naming it otherwise."""
    types = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}.get(kind)
    if types is None:
        return
    if not isinstance(value, types) or (kind in ("int", "float") and isinstance(value, bool)):
        raise InputError(f"{where} {name} must be {'a number' if kind == 'float' else f'a {kind}'}, got {value!r}")
    if kind in ("int", "float"):
        option = f"{where} {name}"
        if name.endswith(POSITIVE):
            check_range(option, value, float, 0, False)
        elif name.endswith(BELOW_ONE):
            check_range(option, value, float, 0, True, 1, False)
        elif name.endswith(FRACTIONS):
            check_range(option, value, float, 0, True, 1, True)
        else:
            check_range(option, value, float, None if name.endswith("eps") else 0)


def make_config(cls: type, overrides: dict[str, Any], where: str = "method config") -> Any:
    """Build a method's Config dataclass from overrides, refusing unknown keys by name and values
    of the wrong type or out of range (``_check_setting``)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(overrides) - set(fields)
    if unknown:
        raise InputError(f"unknown {where} key(s) {sorted(unknown)}; known: {sorted(fields)}")
    for name, value in overrides.items():
        _check_setting(name, str(fields[name].type), value, where)
    return cls(**overrides)

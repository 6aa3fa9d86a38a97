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

from ..io import InputError
from .base import (
    Method,
    StepOutput,
    duplicate_mask,
    ema_update,
    frozen_copy,
    momentum_schedule,
    update_momentum,
)

__all__ = ["METHODS", "Method", "MethodEntry", "StepOutput", "duplicate_mask", "ema_update", "frozen_copy",
           "get_method", "load_all", "make_config", "momentum_schedule", "register_method", "update_momentum"]


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
        clip,
        directpred,
        mocov2,
        mocov3,
        simclr,
        simcse,
        simsiam,
        swav,
        vicreg,
    )

    return METHODS


def get_method(name: str) -> MethodEntry:
    load_all()
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def make_config(cls: type, overrides: dict[str, Any], where: str = "method config") -> Any:
    """Build a method's Config dataclass from overrides, refusing unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - names
    if unknown:
        raise InputError(f"unknown {where} key(s) {sorted(unknown)}; known: {sorted(names)}")
    return cls(**overrides)

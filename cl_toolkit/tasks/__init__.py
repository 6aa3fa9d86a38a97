"""Tasks: what the one trainer trains on. A data family (images, texts, posts with tags, image-text
pairs) is one task class; a method names its task (``Method.task``), as RecBole keeps one data
layer under many models.

The trainer builds ``task = Method.task(cfg, method_cls, device, data)`` and asks of it:

- ``__init__``: read and validate the data (before anything is written), complete what the
  config left open, build the model (``method_cls(...)``, on ``device``);
- ``resolved``: the config fields it completed (e.g. ``encoder``, ``encoder_args``, ``channels``,
  ``image_size``, ``method_config``) as a dict; the trainer makes the run's final config from it,
  a task never writes into the config it was given;
- ``n`` (records an epoch walks), ``hash`` (a content hash: ``--resume`` refuses changed data),
  ``model`` (the method's module);
- ``batch(idx)``: the model's input for the records ``idx`` (a LongTensor of row numbers);
- ``export(run, extra)``: the run's inference artefacts into the ``RunDir`` ``run`` (``encoder/``
  or one folder per tower), ``extra`` merged into each ``encoder.json``.

``cfg`` is the trainer's ``TrainConfig`` (read by attribute; its ``method_config`` is the method's
own ``Config`` dataclass, built once).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from ..io import RunDir


class Task(ABC):
    """The base of every task: the attributes the trainer reads (see the module docstring)."""

    n: int
    hash: str
    model: nn.Module
    resolved: dict[str, Any]

    def __init__(self, cfg: Any, method_cls: type, device: torch.device, data: Any = None):
        self.device = device

    @abstractmethod
    def batch(self, idx: Tensor) -> Any:
        """The model's input for the records ``idx``."""

    @abstractmethod
    def export(self, run: RunDir, extra: dict) -> None:
        """Write the run's inference artefacts."""

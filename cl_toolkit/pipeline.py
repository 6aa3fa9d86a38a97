"""The pretraining pipeline (``cltk pretrain``): an optional kNN monitor, the one trainer, then
what a method's run needs from the apps once its towers are exported (CD-TOM: the tag index and
score calibration), then the optional report. Methods never import apps; this layer, above
both, joins them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import dist
from .config import TrainConfig
from .data import load_images
from .eval import knn_monitor
from .io import InputError, RunDir
from .report import write_report
from .tag import finish_run
from .train import train

# what a complete run of a method needs after its export, by method name: f(run_dir) -> info
FINISHERS: dict[str, Callable[[str], Any]] = {"cdtom": finish_run}


def _knn_monitor(cfg: TrainConfig, resume: bool, query: str | None):
    """The monitor for ``--knn-every``: the run's (labelled) images as the bank, ``query`` or a
    fixed 20% of them as queries. Returns (the images, to be trained on too, and the monitor)."""
    saved = RunDir(cfg.out).read_config() if resume else cfg.to_dict()
    data = load_images(saved["data"], channels=saved["channels"], size=saved["image_size"])
    q = (load_images(query, channels=data.images.shape[1], size=data.images.shape[2], classes=data.classes)
         if query else None)
    return data, knn_monitor(data, q)


def pretrain(cfg: TrainConfig, *, resume: bool = False, knn_every: int = 0, knn_query: str | None = None,
             report: bool = False, **trainer_kwargs: Any) -> dict:
    """Train ``cfg`` (``train.Trainer``'s keyword arguments pass through) and finish the run:
    the method's apps (``FINISHERS``) once it is complete, ``report.html`` when ``report``.
    Returns the run summary (on rank 0 under torchrun; other ranks return theirs)."""
    if knn_query and not knn_every:
        raise InputError("--knn-query is the query set of --knn-every N; give both")
    if knn_every:
        trainer_kwargs["data"], trainer_kwargs["monitor"] = _knn_monitor(cfg, resume, knn_query)
        trainer_kwargs["monitor_every"] = knn_every
    summary = train(cfg, resume=resume, **trainer_kwargs)
    if dist.is_main():
        finish = FINISHERS.get(summary["method"])
        if finish is not None and summary["complete"]:
            finish(summary["run"])
        if report:
            summary["report"] = str(write_report(summary["run"]))
    return summary

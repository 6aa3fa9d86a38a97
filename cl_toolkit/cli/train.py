"""``cltk pretrain``, ``cltk finetune``, ``cltk report``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..io import InputError
from .common import Device, Quiet, app, print_json


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option(help="Run dir to create (or continue with --resume).")],
    data: Annotated[Optional[str], typer.Option(
        help="Image folder, JSONL records (images; texts for simcse; posts with tags for cdtom), or "
             "fashion-mnist:train; for the recommendation methods (twotower, featmask, twin, sasrec, cl4srec, duorec, "
             "lightgcn, sgl, simgcl): interactions (a folder of RecBole atomic files, a .inter file, a JSONL with "
             "--items) or ml-100k.")] = None,
    method: Annotated[Optional[str], typer.Option(help="Method name (see `cltk methods`). Default: byol.")] = None,
    encoder: Annotated[Optional[str], typer.Option(
        help="Encoder name (see `cltk encoders`). Default by image size.")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Train for N epochs (default 100 unless --minutes).")] = None,
    minutes: Annotated[Optional[float], typer.Option(help="Train for M minutes of training time instead.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per batch (each gives two views); under torchrun "
                                                      "the global batch, split over the ranks.")] = None,
    chunk_size: Annotated[Optional[int], typer.Option(help="Gradient caching: encode the batch in chunks of N per "
                                                      "rank, exact full-batch gradients in the memory of N "
                                                      "(simclr, mocov3, clip, simcse).")] = None,
    sync_bn: Annotated[Optional[bool], typer.Option("--sync-bn/--no-sync-bn", help="Under torchrun: batch norm "
                                                    "over the global batch (default: the method's).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adamw | lars | sgd.")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Resize images to this square size.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto | fp32 | bf16 | fp16.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads (default: all cores).")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(min=1, help="Write checkpoints/last.pt every N "
                                                            "steps.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file with any of these settings.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Any config or method setting, KEY=VALUE (repeatable), "
                                            "e.g. --set temperature=0.1 --set 'encoder_args={\"width\":64}'.")] = [],  # noqa: B006
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing run dir.")] = False,
    quiet: Quiet = False,
    report: Annotated[bool, typer.Option(help="Write report.html + PNG curves (loss, lr, collapse statistics, "
                                         "kNN accuracy) into the run dir at the end.")] = False,
    knn_every: Annotated[Optional[int], typer.Option(min=1, help="Measure weighted-kNN accuracy every N steps (needs "
                                                     "labelled --data); logged to metrics.jsonl.")] = None,
    knn_query: Annotated[Optional[str], typer.Option(help="Labelled images to query for --knn-every (default: a "
                                                     "fixed 20% of up to 2000 --data images).")] = None,
    tags: Annotated[Optional[str], typer.Option(help="cdtom: the tag vocabulary, one tag a line (default: every "
                                                "tag in --data).")] = None,
    items: Annotated[Optional[str], typer.Option(help="twotower / featmask / twin: the item file (JSONL or atomic "
                                                 ".item; default: the .inter file's sibling NAME.item).")] = None,
) -> None:
    """Self-supervised pretraining; writes a run dir (config, env, metrics, checkpoints, encoder/)
    and prints a JSON summary.

    Example: cltk pretrain --method byol --data fashion-mnist:train --out runs/byol --minutes 10

    Example: cltk pretrain --method cdtom --data data_samples/posts.jsonl --out runs/tagger

    Example (2 processes, gathered negatives): torchrun --nproc-per-node 2 -m cl_toolkit pretrain --method simclr
    --data fashion-mnist:train --out runs/simclr --batch-size 512
    """
    from .. import dist
    from ..config import asked_config, resolve_config, settings_from
    from ..pipeline import pretrain as run_pretrain

    if not resume and not data:
        raise InputError("--data is required (an image folder, a JSONL file or fashion-mnist:train)")
    overrides = dict(method=method, data=data, out=str(out), encoder=encoder, epochs=epochs, minutes=minutes,
                     batch_size=batch_size, lr=lr, optimizer=optimizer, image_size=image_size, seed=seed,
                     device=device, precision=precision, threads=threads, checkpoint_every=checkpoint_every,
                     chunk_size=chunk_size, sync_bn=sync_bn)
    overrides.update(settings_from(set_))
    for key, value in (("tags", tags), ("items", items)):
        if value is not None:
            overrides["method_config"] = {**overrides.get("method_config", {}), key: value}
    if resume:
        if force:
            raise InputError("--resume continues the run and --force starts it again: give one of them")
        cfg = asked_config(overrides, str(config) if config else None)   # the run's config.json supplies the rest
    else:
        cfg = resolve_config(overrides, str(config) if config else None)
    summary = run_pretrain(cfg, resume=resume, force=force, quiet=quiet, knn_every=knn_every or 0,
                           knn_query=knn_query, report=report)
    if not dist.is_main():   # under torchrun, rank 0 reports for all
        return
    print_json(summary)
    if summary.get("interrupted"):
        sys.stderr.write(f"cltk: interrupted at step {summary['steps']}; checkpoint written. "
                         f"Continue with: cltk pretrain --out {out} --resume\n")
        raise typer.Exit(130)


@app.command("report")
def report_cmd(run: Annotated[str, typer.Argument(help="Run dir.")]) -> None:
    """Write report.html (self-contained) and PNG curves of loss, learning rate, collapse
    statistics and kNN accuracy into a run dir, from its metrics.jsonl.

    Example: cltk report runs/byol
    """
    from ..report import write_report

    print_json({"report": str(write_report(run))})


@app.command()
def finetune(
    run: Annotated[str, typer.Argument(help="Run dir (or encoder/ folder) to start from.")],
    data: Annotated[str, typer.Option(help="Labelled images: class subfolders, JSONL with 'label', or "
                                      "fashion-mnist:train.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Run dir to write (config, metrics, encoder/, "
                                     "head.safetensors, results.json).")],
    linear: Annotated[bool, typer.Option("--linear/--full", help="Linear probe on frozen features, or train "
                                         "encoder and head end to end.")] = True,
    test: Annotated[Optional[str], typer.Option(help="Labelled images to report accuracy on.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of full fine-tuning.")] = 10,
    batch_size: Annotated[int, typer.Option(min=2, help="Images per batch (full fine-tuning).")] = 256,
    lr: Annotated[float, typer.Option(help="Peak learning rate (full fine-tuning, AdamW, cosine).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="L2 penalty of the probe / AdamW weight decay.")] = 1e-4,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    device: Device = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite an existing output run dir.")] = False,
) -> None:
    """Supervised transfer of a pretrained encoder: a linear probe (logistic regression on frozen,
    standardised features) or full fine-tuning; writes a run dir and prints results as JSON.

    Example: cltk finetune runs/byol --data fashion-mnist:train --test fashion-mnist:test --out runs/byol-lin --linear
    """
    from ..finetune import FinetuneConfig
    from ..finetune import finetune as run_finetune

    cfg = FinetuneConfig(run=run, data=data, out=out, mode="linear" if linear else "full", test=test, epochs=epochs,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, device=device)
    print_json(run_finetune(cfg, force=force))

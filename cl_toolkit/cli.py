"""The ``cltk`` command line: parse, call the library, print JSON. Nothing else lives here.

Exit codes: 0 success, 1 failure inside the work, 2 bad usage or bad input (one line on
stderr), 130 interrupted (a checkpoint was written; continue with ``--resume``).
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from .io import InputError

app = typer.Typer(
    name="cltk",
    help="Contrastive-learning toolkit: learn embeddings from pairs of views without labels, then "
         "embed, index, match and evaluate.\n\nExample:\n\n"
         "  cltk pretrain --method byol --data fashion-mnist:train --out runs/byol --minutes 10\n\n"
         "  cltk eval knn --model runs/byol --bank fashion-mnist:train --query fashion-mnist:test",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]})
eval_app = typer.Typer(help="Evaluate embeddings or models; JSON on stdout.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def _fail(msg: str, code: int) -> None:
    sys.stderr.write(f"cltk: error: {msg}\n")
    sys.exit(code)


@contextmanager
def _progress(total: int, label: str, quiet: bool):
    """A rich progress bar on stderr when it is a terminal; yields an ``advance(n)`` function."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as p:
        task = p.add_task(label, total=total)
        yield lambda n: p.advance(task, n)


# ---------------------------------------------------------------- pretrain

@app.command()
def pretrain(
    out: Annotated[Path, typer.Option(help="Run dir to create (or continue with --resume).")],
    data: Annotated[Optional[str], typer.Option(
        help="Image folder, JSONL records (images; texts for simcse; posts with tags for cdtom), or "
             "fashion-mnist:train; for twotower / featmask / twin: interactions (a folder of RecBole atomic files, "
             "a .inter file, a JSONL with --items) or ml-100k.")] = None,
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
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: all cores).")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Write checkpoints/last.pt every N steps.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file with any of these settings.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Any config or method setting, KEY=VALUE (repeatable), "
                                            "e.g. --set temperature=0.1 --set 'encoder_args={\"width\":64}'.")] = [],  # noqa: B006
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing run dir.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    report: Annotated[bool, typer.Option(help="Write report.html + PNG curves (loss, lr, collapse statistics, "
                                         "kNN accuracy) into the run dir at the end.")] = False,
    knn_every: Annotated[Optional[int], typer.Option(help="Measure weighted-kNN accuracy every N steps (needs "
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
    from .train import TrainConfig, resolve_config, settings_from
    from .train import pretrain as run_pretrain

    if not resume and not data:
        raise InputError("--data is required (an image folder, a JSONL file or fashion-mnist:train)")
    overrides = dict(method=method, data=data, out=str(out), encoder=encoder, epochs=epochs, minutes=minutes,
                     batch_size=batch_size, lr=lr, optimizer=optimizer, image_size=image_size, seed=seed,
                     device=device, precision=precision, threads=threads, checkpoint_every=checkpoint_every,
                     chunk_size=chunk_size, sync_bn=sync_bn)
    overrides.update(settings_from(set_))
    if tags is not None:
        overrides["method_config"] = {**overrides.get("method_config", {}), "tags": tags}
    if items is not None:
        overrides["method_config"] = {**overrides.get("method_config", {}), "items": items}
    if resume:
        cfg = TrainConfig(out=str(out), epochs=epochs, minutes=minutes)
    else:
        cfg = resolve_config(overrides, str(config) if config else None)
    kdata, monitor = None, None
    if knn_every:
        from dataclasses import asdict

        from .data import load_images
        from .report import knn_monitor
        from .train import load_run_config

        saved = load_run_config(out) if resume else asdict(cfg)
        kdata = load_images(saved["data"], channels=saved["channels"], size=saved["image_size"])
        query = (load_images(knn_query, channels=kdata.images.shape[1], size=kdata.images.shape[2],
                             classes=kdata.classes) if knn_query else None)
        monitor = knn_monitor(kdata, query)
    summary = run_pretrain(cfg, resume=resume, force=force, quiet=quiet, data=kdata, monitor=monitor,
                           monitor_every=knn_every or 0)
    from . import dist

    if not dist.is_main():   # under torchrun, rank 0 reports for all
        return
    if report:
        from .report import write_report

        summary["report"] = str(write_report(out))
    _print_json(summary)
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
    from .report import write_report

    _print_json({"report": str(write_report(run))})


# ---------------------------------------------------------------- finetune, eval linear

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
    epochs: Annotated[int, typer.Option(help="Epochs of full fine-tuning.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Images per batch (full fine-tuning).")] = 256,
    lr: Annotated[float, typer.Option(help="Peak learning rate (full fine-tuning, AdamW, cosine).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="L2 penalty of the probe / AdamW weight decay.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite an existing output run dir.")] = False,
) -> None:
    """Supervised transfer of a pretrained encoder: a linear probe (logistic regression on frozen,
    standardised features) or full fine-tuning; writes a run dir and prints results as JSON.

    Example: cltk finetune runs/byol --data fashion-mnist:train --test fashion-mnist:test --out runs/byol-lin --linear
    """
    from .finetune import FinetuneConfig
    from .finetune import finetune as run_finetune

    cfg = FinetuneConfig(run=run, data=data, out=out, mode="linear" if linear else "full", test=test, epochs=epochs,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, device=device)
    _print_json(run_finetune(cfg, force=force))


@eval_app.command("linear")
def eval_linear(
    train: Annotated[str, typer.Option(help="Embeddings folder, or with --model a labelled image data set.")],
    test: Annotated[str, typer.Option(help="Embeddings folder, or with --model a labelled image data set.")],
    model: Annotated[Optional[str], typer.Option(help="Run dir or encoder folder to embed --train/--test "
                                                 "with.")] = None,
    weight_decay: Annotated[float, typer.Option(help="L2 penalty of the logistic regression.")] = 1e-4,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Linear-probe accuracy: logistic regression (L-BFGS) on standardised --train features, top-1 on --test.

    Example: cltk eval linear --model runs/byol --train fashion-mnist:train --test fashion-mnist:test
    """
    from .eval import labelled_features
    from .finetune import linear_eval
    from .train import resolve_device

    tx, ty, qx, qy = labelled_features(train, test, model, resolve_device(device), ("train", "test"))
    res, _ = linear_eval(tx, ty, qx, qy, weight_decay)
    _print_json({"eval": "linear", "train": train, "test": test, "model": model, **res})


# ---------------------------------------------------------------- embed

@app.command()
def embed(
    model: Annotated[str, typer.Argument(help="Run dir, encoder/ folder, or (text) a Hugging Face model folder or "
                                         "minilm-l6.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Embeddings folder to write; - for JSONL on stdout.")],
    input: Annotated[Optional[str], typer.Option(
        "--input", "-i", help="Image folder, JSONL of image or text records (- for stdin), or fashion-mnist:test. "
                              "Recommendation runs: an item file (--field item) or interactions (--field user); "
                              "default: the run's catalogue / users.")] = None,
    field: Annotated[Optional[str], typer.Option(
        help="What to embed: image | text | tag (a record field; in a two-tower run also the tower), or user | "
             "item for a recommendation run. Default: what the model takes.")] = None,
    batch_size: Annotated[int, typer.Option(help="Records per forward pass.")] = 512,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the embeddings.")] = True,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite an existing output folder.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Turn images or texts into an embeddings folder (embeddings.npy, meta.jsonl, info.json).

    Example: cltk embed runs/byol --input data_samples/images.jsonl --out emb/samples

    Example: cltk embed minilm-l6 --input data_samples/posts.jsonl --out emb/posts

    Example: cltk embed runs/rec --field item --out emb/items   (then build-index / match: similar items)
    """
    from .embed import embed as run_embed
    from .embed import embedding_records
    from .io import check_output, write_jsonl
    from .train import resolve_device

    if field is not None and field not in ("image", "text", "tag", "user", "item"):
        raise InputError(f"--field must be image, text, tag, user or item, got {field!r}")
    if out != "-":
        check_output(out, force)
    dev = resolve_device(device)
    if field in ("user", "item"):
        from .recommend import embed_field

        emb, records, info = embed_field(model, field, input, None if out == "-" else out, force, str(dev))
        if out == "-":
            write_jsonl(sys.stdout, embedding_records(emb, records))
        else:
            _print_json({"out": out, **info})
        return
    if input is None:
        raise InputError("--input is required (an image folder, a JSONL file or fashion-mnist:test)")
    with _progress(0, "embed", quiet) as advance:
        emb, records, info = run_embed(model, input, None if out == "-" else out, batch_size, normalize, dev,
                                       force, advance, field)
    if out == "-":
        write_jsonl(sys.stdout, embedding_records(emb, records))
    else:
        _print_json({"out": out, **info})


# ---------------------------------------------------------------- eval

@eval_app.command("knn")
def eval_knn(
    bank: Annotated[str, typer.Option(help="Embeddings folder, or with --model a labelled image data set.")],
    query: Annotated[str, typer.Option(help="Embeddings folder, or with --model a labelled image data set.")],
    model: Annotated[Optional[str], typer.Option(
        help="Run dir or encoder folder to embed --bank/--query with.")] = None,
    k: Annotated[int, typer.Option(help="Neighbours that vote.")] = 20,
    temperature: Annotated[float, typer.Option(help="Vote weight exp(sim / temperature).")] = 0.07,
    center: Annotated[bool, typer.Option(help="Subtract the bank mean before normalising.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Weighted kNN accuracy (k=20, t=0.07, cosine) of labelled queries against a labelled bank.

    Example: cltk eval knn --model runs/byol --bank fashion-mnist:train --query fashion-mnist:test
    """
    from .eval import knn_accuracy, labelled_features
    from .train import resolve_device

    b, bl, q, ql = labelled_features(bank, query, model, resolve_device(device), ("bank", "query"))
    res = knn_accuracy(b, bl, q, ql, k=k, temperature=temperature, center=center)
    _print_json({"eval": "knn", "bank": bank, "query": query, "model": model, **res})


# ---------------------------------------------------------------- index, match, eval retrieval

@app.command("build-index")
def build_index(
    emb: Annotated[str, typer.Argument(help="Embeddings folder (embeddings.npy, meta.jsonl, info.json) or a .npy.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Index folder to write (or extend with --append).")],
    kind: Annotated[str, typer.Option(help="auto, or any Faiss factory string (Flat, HNSW32, IVF1024,Flat, "
                                      "OPQ32_128,IVF4096,PQ32, ...).")] = "auto",
    metric: Annotated[Optional[str], typer.Option(help="ip (cosine: vectors are normalised) or l2. Default: ip, "
                                                  "or the index's own with --append.")] = None,
    target_recall: Annotated[float, typer.Option(help="Recall@10 vs exact search the tuned search setting "
                                                 "must reach.")] = 0.95,
    max_memory: Annotated[Optional[str], typer.Option(help="Memory budget for the index, e.g. 512M or 4G "
                                                      "(default: half the RAM); auto compresses to fit.")] = None,
    append: Annotated[bool, typer.Option(help="Add the vectors to the existing index --out.")] = False,
    shards: Annotated[Optional[int], typer.Option(help="Build an IVF index in K shards, each added by its own "
                                                  "process over one shared trained quantizer, then merged.")] = None,
    train_only: Annotated[bool, typer.Option(help="With --shards K: only train the shared quantizer and write the "
                                             "shard plan to --out (then --shard I/K on each machine, then "
                                             "--merge).")] = False,
    shard: Annotated[Optional[str], typer.Option(help="I/K: build only shard I of K into --out/shards/ (--out from "
                                                 "--train-only).")] = None,
    merge: Annotated[bool, typer.Option(help="Merge the shards in --out into the index folder --out.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for the training sample and the held-out queries.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing index folder.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Build a Faiss index folder (index.faiss, meta.jsonl, info.json): choose the index type,
    train, add, measure recall@10 against exact search on held-out vectors and tune the search
    setting to --target-recall; prints the summary as JSON.

    Example: cltk build-index emb/posts --out idx/posts --max-memory 2G

    Example: cltk build-index emb/big --out idx/big --shards 4   (IVF, 4 processes, merged)
    """
    from . import index as ix

    if sum([shards is not None, shard is not None, merge]) > 1:
        raise InputError("give one of --shards K, --shard I/K and --merge")
    if append and (shards is not None or shard is not None or merge):
        raise InputError("--append cannot be combined with a sharded build")
    if train_only and shards is None:
        raise InputError("--train-only needs --shards K")
    if (shard is not None or merge) and (kind != "auto" or metric is not None or max_memory is not None):
        raise InputError("--kind, --metric and --max-memory belong to the training step (--shards K --train-only); "
                         "the shard plan in --out fixes them")
    if shard is not None:
        i, k = ix.parse_shard(shard)
        _print_json({"out": out, **ix.build_shard(out, ix.open_vectors(emb), i, shards=k, force=force)})
        return
    from .embed import read_embeddings

    vectors, meta, info = read_embeddings(emb)
    ix.check_vectors(vectors, meta, emb)
    emb_info = {**info, "source": emb}
    if shards is not None and train_only:
        plan = ix.train_shared(vectors, meta, out, shards=shards, kind=kind, metric=metric, max_memory=max_memory,
                               emb_info=emb_info, seed=seed, force=force)
        _print_json({"out": out, **{k: plan[k] for k in ("factory", "metric", "dim", "count", "shards", "ranges",
                                                         "train_size", "train_seconds")}})
        return
    with _progress(len(vectors), "build-index", quiet) as advance:
        if merge:
            res = ix.merge_shards(out, vectors, meta, target_recall=target_recall, progress=advance)
        elif shards is not None:
            res = ix.build_sharded(vectors, meta, out, shards=shards, source=emb, kind=kind, metric=metric,
                                   target_recall=target_recall, max_memory=max_memory, emb_info=emb_info, seed=seed,
                                   progress=advance, force=force)
        else:
            res = ix.build(vectors, meta, out, kind=kind, metric=metric, target_recall=target_recall,
                           max_memory=max_memory, append=append, emb_info=emb_info, seed=seed,
                           progress=advance, force=force)
    _print_json({"out": out, **ix.describe(res)})


@app.command()
def match(
    queries: Annotated[str, typer.Argument(help="Embeddings folder, .npy, or JSONL (- for stdin): lines with "
                                           "'embedding' (cltk embed --out -), or records to embed with --model.")],
    index: Annotated[str, typer.Option(help="Index folder from cltk build-index.")],
    model: Annotated[Optional[str], typer.Option(help="Run dir or encoder folder to embed query records with.")] = None,
    k: Annotated[int, typer.Option(help="Neighbours per query.")] = 10,
    field: Annotated[Optional[str], typer.Option(help="With --model: embed the records' image or text (and use that "
                                                 "tower of a two-tower run), e.g. text -> image search.")] = None,
    exclude_self: Annotated[bool, typer.Option(help="Drop a neighbour whose id is the query's id.")] = False,
    out: Annotated[str, typer.Option("--out", "-o", help="JSONL file to write; - for stdout.")] = "-",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass when embedding.")] = 256,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
) -> None:
    """Nearest neighbours of each query in an index: one JSON line per query with its fields and
    "neighbors": [{"id", "score", ..target fields..}] (score: cosine for ip indexes, squared
    distance for l2).

    Example: cltk match data_samples/images.jsonl --model runs/byol --index idx/fashion --k 5 --exclude-self

    Example: cltk match captions.jsonl --model runs/clip --field text --index idx/images   (text -> image)
    """
    import contextlib

    from .index import check_compatible, load, read_queries
    from .index import match as run_match
    from .io import atomic_file, check_output, write_jsonl

    if k < 1:
        raise InputError(f"--k must be at least 1, got {k}")
    if out != "-":
        check_output(out, force)
    idx, meta, info = load(index)
    dev = "cpu"
    if model is not None:
        from .train import resolve_device

        dev = str(resolve_device(device))
    q, qmeta, qinfo = read_queries(queries, model, dev, batch_size, field)
    check_compatible(info, q.shape[1], qinfo.get("model"))
    with contextlib.ExitStack() as stack:
        f = sys.stdout if out == "-" else stack.enter_context(atomic_file(out, force=force))
        write_jsonl(f, run_match(q, qmeta, idx, meta, info, k=k, exclude_self=exclude_self))
        f.flush()


@eval_app.command("retrieval")
def eval_retrieval(
    queries: Annotated[str, typer.Option(help="Query embeddings folder or .npy.")],
    targets: Annotated[Optional[str], typer.Option(help="Target embeddings folder or .npy (or use --index).")] = None,
    index: Annotated[Optional[str], typer.Option(help="Search this index folder instead of exact search.")] = None,
    pairs: Annotated[Optional[str], typer.Option(help="JSONL of relevant pairs: {\"query\": QID, "
                                                 "\"target\": TID} lines.")] = None,
    match_field: Annotated[Optional[str], typer.Option(help="Targets sharing the query's value of this field "
                                                       "(e.g. label) are relevant.")] = None,
    exclude_self: Annotated[bool, typer.Option(help="Ignore a result with the query's own id.")] = False,
) -> None:
    """Retrieval quality of query -> target search (e.g. text -> image): recall@1/5/10 and MRR.
    Relevant targets: the one with the query's id (default), --pairs, or --match-field.

    Example: cltk eval retrieval --queries emb/captions --targets emb/images
    """
    from .embed import read_embeddings
    from .eval import read_pairs, retrieval_eval

    if (targets is None) == (index is None):
        raise InputError("give exactly one of --targets (exact search) or --index")
    if pairs is not None and match_field is not None:
        raise InputError("give at most one of --pairs and --match-field")
    q, qmeta, _ = read_embeddings(queries)
    t, tmeta = (read_embeddings(targets)[:2] if targets is not None else (None, None))
    res = retrieval_eval(q, qmeta, t, tmeta, index_dir=index, pairs=read_pairs(pairs) if pairs else None,
                         match_field=match_field, exclude_self=exclude_self)
    _print_json({"eval": "retrieval", "queries": queries, "targets": targets, **res})


@eval_app.command("zeroshot")
def eval_zeroshot(
    model: Annotated[str, typer.Option(help="A two-tower run dir (cltk pretrain --method clip).")],
    data: Annotated[str, typer.Option(help="Labelled images: class subfolders, JSONL with 'label', or "
                                      "fashion-mnist:test.")],
    classes: Annotated[str, typer.Option(help="One class a line: LABEL, or LABEL<TAB>name used in the prompts.")],
    templates: Annotated[Optional[str], typer.Option(help="Prompt templates, one a line with {} for the class name "
                                                     "(default: 'a photo of a {}.').")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Zero-shot classification: class-name prompts through the text tower, accuracy of the
    nearest class for each image through the image tower; JSON on stdout.

    Example: cltk eval zeroshot --model runs/clip --data fashion-mnist:test --classes classes.txt
    """
    from .eval import zeroshot
    from .train import resolve_device

    res = zeroshot(model, data, classes, templates, resolve_device(device))
    _print_json({"eval": "zeroshot", "model": model, "data": data, **res})


# ---------------------------------------------------------------- tag, eval tag

@app.command()
def tag(
    posts: Annotated[str, typer.Argument(help="JSONL posts {\"id\", \"text\"} (- for stdin).")],
    model: Annotated[str, typer.Option(help="A cdtom run dir; or, with --tags, any text encoder (zero-shot).")],
    tags: Annotated[Optional[str], typer.Option(help="Tag vocabulary file, one tag a line (default: the run's "
                                                "own tag index).")] = None,
    top_k: Annotated[int, typer.Option(help="Tags per post.")] = 3,
    min_score: Annotated[Optional[float], typer.Option(help="Drop tags scoring below this. For a cdtom run the "
                                                       "score is the calibrated probability that the tag is "
                                                       "right; zero-shot it is the cosine.")] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="JSONL file to write; - for stdout.")] = "-",
    batch_size: Annotated[int, typer.Option(help="Posts per forward pass (length-sorted).")] = 128,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Hashtag generation: the top-k tags of each post by nearest-neighbour search of the tag
    index, one JSON line per post: {"id", "tags": [{"tag", "score"}, ...]}.

    Example: cltk tag data_samples/posts.jsonl --model runs/tagger --top-k 3 > tagged.jsonl

    Example: cltk tag posts.jsonl --model minilm-l6 --tags data_samples/tags.txt   (zero-shot)
    """
    import contextlib

    from .data import load_posts
    from .io import atomic_file, check_output, write_jsonl
    from .tag import load_tagger, tag_posts
    from .train import resolve_device

    if out != "-":
        check_output(out, force)
    records = load_posts(posts, need_tags=False)
    dev = str(resolve_device(device))
    tagger = load_tagger(model, tags, dev)
    with contextlib.ExitStack() as stack:
        advance = stack.enter_context(_progress(len(records), "tag", quiet))
        f = sys.stdout if out == "-" else stack.enter_context(atomic_file(out, force=force))
        write_jsonl(f, tag_posts(tagger, records, top_k, min_score, batch_size, dev, progress=advance))
        f.flush()


@eval_app.command("tag")
def eval_tag(
    pred: Annotated[str, typer.Option(help="JSONL from cltk tag: {\"id\", \"tags\": [...]} lines.")],
    gold: Annotated[str, typer.Option(help="JSONL posts with their gold \"tags\".")],
    k: Annotated[int, typer.Option(help="Cut-off for hit@k and recall@k.")] = 3,
) -> None:
    """Tagging quality: hit@1, hit@k, recall@k and MRR of predicted tags against gold tags.

    Example: cltk eval tag --pred tagged.jsonl --gold data_samples/posts.jsonl
    """
    from .data import load_posts
    from .io import read_jsonl
    from .tag import tag_metrics

    res = tag_metrics(read_jsonl(pred, required=("id", "tags")), load_posts(gold), k, pred)
    _print_json({"eval": "tag", "pred": pred, "gold": gold, **res})


# ---------------------------------------------------------------- recommendation: split, eval rec

@app.command("split")
def split_cmd(
    interactions: Annotated[str, typer.Argument(help="Interactions: a folder of RecBole atomic files, a .inter file, "
                                                "a JSONL of {\"user\", \"item\", \"ts\"?} lines (- for stdin), "
                                                "or ml-100k.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder to write train / valid / test files into.")],
    protocol: Annotated[str, typer.Option(help="loo (leave-one-out in time order) | ratio (random, per user) | "
                                          "cold-items (a share of items: all their interactions in test).")] = "loo",
    items: Annotated[Optional[str], typer.Option(help="Item file (atomic .item or JSONL) to copy beside the split "
                                                 "(default: the .inter file's sibling NAME.item).")] = None,
    ratios: Annotated[str, typer.Option(help="ratio: train,valid,test shares.")] = "0.8,0.1,0.1",
    cold_share: Annotated[float, typer.Option(help="cold-items: share of items held out for test (and as many "
                                              "for valid).")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the ratio and cold-items draws.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out folder.")] = False,
) -> None:
    """Split interactions into train / valid / test files (deterministic, no interaction in two
    parts); prints the file names and counts as JSON.

    Example: cltk split ml-100k --out splits/ml-100k-loo --protocol loo

    Example: cltk split data_samples/rec --out splits/cold --protocol cold-items --cold-share 0.1
    """
    from .io import check_output
    from .io.interactions import read_interactions
    from .recdata import split, write_split

    check_output(out, force)
    try:
        shares = tuple(float(x) for x in ratios.split(","))
    except ValueError:
        raise InputError(f"--ratios must be three numbers like 0.8,0.1,0.1, got {ratios!r}") from None
    parts = split(read_interactions(interactions, items=items), protocol, seed, shares, cold_share)  # type: ignore[arg-type]
    _print_json({"protocol": protocol, "seed": seed, **write_split(parts, out, force)})


@eval_app.command("rec")
def eval_rec(
    pred: Annotated[str, typer.Option(help="Recommendations JSONL from cltk recommend (- for stdin).")],
    test: Annotated[str, typer.Option(help="Test interactions (.inter, JSONL or a split folder's test file).")],
    train: Annotated[Optional[str], typer.Option(help="Training interactions: their items are dropped from the "
                                                 "lists (history excluded) and count in the catalogue.")] = None,
    k: Annotated[str, typer.Option(help="Cut-offs, comma-separated.")] = "10,20",
) -> None:
    """Full-ranking recommendation quality: HR@k, Recall@k, NDCG@k, MRR and catalogue coverage@k,
    averaged over the test users (a test user without recommendations counts as a miss).

    Example: cltk eval rec --pred recs.jsonl --test splits/ml-100k-loo/ml-100k.test.inter
    --train splits/ml-100k-loo/ml-100k.train.inter
    """
    from .io.interactions import read_interactions, read_recommendations
    from .receval import evaluate

    try:
        ks = tuple(int(x) for x in k.split(","))
    except ValueError:
        raise InputError(f"--k must be comma-separated integers, got {k!r}") from None
    if not ks or min(ks) < 1:
        raise InputError(f"--k must be positive, got {k!r}")
    res = evaluate(read_recommendations(pred), read_interactions(test),
                   read_interactions(train) if train else None, ks)
    _print_json({"eval": "rec", "pred": pred, "test": test, "train": train, "ranking": "full", **res})


@app.command()
def recommend(
    run: Annotated[str, typer.Argument(help="A run dir of twotower, featmask or twin.")],
    users: Annotated[Optional[str], typer.Option(help="User ids one a line, or a user file (- for stdin). Default: "
                                                 "every user of the training data.")] = None,
    k: Annotated[int, typer.Option(help="Items per user.")] = 10,
    candidates: Annotated[Optional[str], typer.Option(help="Rank only these items: ids one a line, or an item file "
                                                      "(its new items are embedded from their features).")] = None,
    history: Annotated[Optional[str], typer.Option(help="More interactions (e.g. after training, or of new users): "
                                                   "added to the users' histories.")] = None,
    include_seen: Annotated[bool, typer.Option(help="Also recommend items the user already interacted "
                                               "with.")] = False,
    out: Annotated[str, typer.Option("--out", "-o", help="JSONL file to write; - for stdout.")] = "-",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
) -> None:
    """Top-k items for each user, best first, one JSON line per user: {"user", "items": [{"item",
    "score"}]} (score: cosine of the user and item embeddings); items the user interacted with are
    left out unless --include-seen.

    Example: cltk recommend runs/rec --k 10 > recs.jsonl

    Example: cltk recommend runs/rec --candidates cold_items.txt --k 20   (rank only new items)
    """
    import contextlib

    from .io import atomic_file, check_output
    from .io.interactions import write_recommendations
    from .recommend import recommend as run_recommend
    from .train import resolve_device

    if out != "-":
        check_output(out, force)
    recs = run_recommend(run, users, k, candidates, include_seen, history, str(resolve_device(device)))
    first = next(recs, None)           # input errors surface before the output is opened
    with contextlib.ExitStack() as stack:
        f = sys.stdout if out == "-" else stack.enter_context(atomic_file(out, force=force))
        if first is not None:
            write_recommendations(f, [first])
        write_recommendations(f, recs)
        f.flush()


# ---------------------------------------------------------------- listings

@app.command()
def methods(as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """List the pretraining methods with a one-line description and the paper.

    Example: cltk methods --json
    """
    from .methods import METHODS, _load_all

    _load_all()
    rows = [{"name": m.name, "description": m.description, "paper": m.paper} for m in METHODS.values()]
    if as_json:
        _print_json(rows)
    else:
        for r in rows:
            typer.echo(f"{r['name']:<12} {r['description']}  [{r['paper']}]")


@app.command()
def encoders(as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """List the registered encoders (names for --encoder).

    Example: cltk encoders
    """
    from .encoders import ENCODERS

    rows = [{"name": e.name, "modality": e.modality, "description": e.description} for e in ENCODERS.values()]
    if as_json:
        _print_json(rows)
    else:
        for r in rows:
            typer.echo(f"{r['name']:<16} {r['modality']:<6} {r['description']}")


def main() -> None:
    """Entry point: run the app, turning library errors into one line and an exit code."""
    from .train import TrainingError

    try:
        rc = app(standalone_mode=False)
    except InputError as e:
        _fail(str(e), 2)
    except TrainingError as e:
        _fail(str(e), 1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.stderr.write("cltk: aborted\n")
        sys.exit(130)
    except Exception as e:  # click's usage errors (typer vendors click) arrive here
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)

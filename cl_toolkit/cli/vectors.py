"""``cltk embed``, ``cltk build-index``, ``cltk match``."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ..io import InputError
from .common import Device, Quiet, Threads, app, print_json


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
    batch_size: Annotated[int, typer.Option(min=1, help="Records per forward pass.")] = 512,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the embeddings.")] = True,
    device: Device = "auto",
    threads: Threads = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing output folder.")] = False,
    quiet: Quiet = False,
) -> None:
    """Turn images or texts into an embeddings folder (embeddings.npy, meta.jsonl, info.json).

    Example: cltk embed runs/byol --input data_samples/images.jsonl --out emb/samples

    Example: cltk embed minilm-l6 --input data_samples/posts.jsonl --out emb/posts

    Example: cltk embed runs/rec --field item --out emb/items   (then build-index / match: similar items)
    """
    from ..embed import embed as run_embed
    from ..io import check_output, embedding_records, write_jsonl
    from ..runtime import ProgressBar, resolve_device, use_threads

    if field is not None and field not in ("image", "text", "tag", "user", "item"):
        raise InputError(f"--field must be image, text, tag, user or item, got {field!r}")
    if out != "-":
        check_output(out, force)
    dev = resolve_device(device)
    use_threads(threads)
    if field in ("user", "item"):
        from ..recommend import embed_field

        emb, records, info = embed_field(model, field, input, None if out == "-" else out, force, str(dev))
        if out == "-":
            write_jsonl(sys.stdout, embedding_records(emb, records))
        else:
            print_json({"out": out, **info})
        return
    if input is None:
        raise InputError("--input is required (an image folder, a JSONL file or fashion-mnist:test)")
    with ProgressBar("embed", quiet=quiet) as bar:
        emb, records, info = run_embed(model, input, None if out == "-" else out, batch_size, normalize, dev,
                                       force, bar.advance, field)
    if out == "-":
        write_jsonl(sys.stdout, embedding_records(emb, records))
    else:
        print_json({"out": out, **info})


@app.command("build-index")
def build_index(
    emb: Annotated[str, typer.Argument(help="Embeddings folder (embeddings.npy, meta.jsonl, info.json) or a .npy.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Index folder to write (or extend with --append).")],
    kind: Annotated[str, typer.Option(help="auto, or any Faiss factory string (Flat, HNSW32, IVF1024,Flat, "
                                      "OPQ32_128,IVF4096,PQ32, ...).")] = "auto",
    metric: Annotated[Optional[str], typer.Option(help="ip (cosine: vectors are normalised) or l2. Default: ip, "
                                                  "or the index's own with --append.")] = None,
    target_recall: Annotated[Optional[float], typer.Option(help="Recall@10 vs exact search the tuned search "
                                                           "setting must reach (default 0.95).")] = None,
    max_memory: Annotated[Optional[str], typer.Option(help="Memory budget for the index, e.g. 512M or 4G "
                                                      "(default: half the RAM); auto compresses to fit.")] = None,
    append: Annotated[bool, typer.Option(help="Add the vectors to the existing index --out.")] = False,
    shards: Annotated[Optional[int], typer.Option(min=1, help="Build an IVF index in K shards, each added by its own "
                                                  "process over one shared trained quantizer, then merged.")] = None,
    train_only: Annotated[bool, typer.Option(help="With --shards K: only train the shared quantizer and write the "
                                             "shard plan to --out (then --shard I/K on each machine, then "
                                             "--merge).")] = False,
    shard: Annotated[Optional[str], typer.Option(help="I/K: build only shard I of K into --out/shards/ (--out from "
                                                 "--train-only).")] = None,
    merge: Annotated[bool, typer.Option(help="Merge the shards in --out into the index folder --out.")] = False,
    seed: Annotated[Optional[int], typer.Option(min=0, help="Seed for the training sample and the held-out queries "
                                                "(default 0).")] = None,
    threads: Threads = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing index folder.")] = False,
    quiet: Quiet = False,
) -> None:
    """Build a Faiss index folder (index.faiss, meta.jsonl, info.json): choose the index type,
    train, add, measure recall@10 against exact search on held-out vectors and tune the search
    setting to --target-recall; prints the summary as JSON.

    Example: cltk build-index emb/posts --out idx/posts --max-memory 2G

    Example: cltk build-index emb/big --out idx/big --shards 4   (IVF, 4 processes, merged)
    """
    from .. import index as ix
    from ..io import check_range, open_vectors, read_embeddings
    from ..runtime import ProgressBar

    if sum([shards is not None, shard is not None, merge]) > 1:
        raise InputError("give one of --shards K, --shard I/K and --merge")
    if append and (shards is not None or shard is not None or merge):
        raise InputError("--append cannot be combined with a sharded build")
    if train_only and shards is None:
        raise InputError("--train-only needs --shards K")
    if (shard is not None or merge) and (kind != "auto" or metric is not None or max_memory is not None
                                         or seed is not None):
        raise InputError("--kind, --metric, --max-memory and --seed belong to the training step (--shards K "
                         "--train-only); the shard plan in --out fixes them")
    if target_recall is not None and (train_only or shard is not None):
        raise InputError("--target-recall is used where recall is measured: the build, or --merge of a sharded build")
    if target_recall is not None:
        check_range("--target-recall", target_recall, float, 0, False, 1, True)
    target_recall = 0.95 if target_recall is None else target_recall
    ix.use_threads(threads)
    seed = 0 if seed is None else seed
    if shard is not None:
        i, k = ix.parse_shard(shard)
        print_json({"out": out, **ix.build_shard(out, open_vectors(emb), i, shards=k, force=force)})
        return
    vectors, meta, info = read_embeddings(emb)
    emb_info = {**info, "source": emb}
    if shards is not None and train_only:
        plan = ix.train_shared(vectors, meta, out, shards=shards, kind=kind, metric=metric, max_memory=max_memory,
                               emb_info=emb_info, seed=seed, force=force)
        print_json({"out": out, **{k: plan[k] for k in ("factory", "metric", "dim", "count", "shards", "ranges",
                                                         "train_size", "train_seconds")}})
        return
    with ProgressBar("build-index", len(vectors), quiet) as bar:
        advance = bar.advance
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
    print_json({"out": out, **ix.describe(res)})


@app.command()
def match(
    queries: Annotated[str, typer.Argument(help="Embeddings folder, .npy, or JSONL (- for stdin): lines with "
                                           "'embedding' (cltk embed --out -), or records to embed with --model.")],
    index: Annotated[str, typer.Option(help="Index folder from cltk build-index.")],
    model: Annotated[Optional[str], typer.Option(help="Run dir or encoder folder to embed query records with.")] = None,
    k: Annotated[int, typer.Option(min=1, help="Neighbours per query.")] = 10,
    field: Annotated[Optional[str], typer.Option(help="With --model: embed the records' image or text (and use that "
                                                 "tower of a two-tower run), e.g. text -> image search.")] = None,
    exclude_self: Annotated[bool, typer.Option(help="Drop a neighbour whose id is the query's id.")] = False,
    out: Annotated[str, typer.Option("--out", "-o", help="JSONL file to write; - for stdout.")] = "-",
    batch_size: Annotated[int, typer.Option(min=1, help="Records per forward pass when embedding.")] = 256,
    device: Device = "auto",
    threads: Threads = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
) -> None:
    """Nearest neighbours of each query in an index: one JSON line per query with its fields and
    "neighbors": [{"id", "score", ..target fields..}] (score: cosine for ip indexes, squared
    distance for l2).

    Example: cltk match data_samples/images.jsonl --model runs/byol --index idx/fashion --k 5 --exclude-self

    Example: cltk match captions.jsonl --model runs/clip --field text --index idx/images   (text -> image)
    """
    import contextlib

    from ..index import check_compatible, load, use_threads
    from ..io import atomic_file, check_output, write_jsonl
    from ..match import match as run_match
    from ..match import read_queries

    if out != "-":
        check_output(out, force)
    use_threads(threads)
    idx, meta, info = load(index)
    dev = "cpu"
    if model is not None:
        from ..runtime import resolve_device

        dev = str(resolve_device(device))
    q, qmeta, qinfo = read_queries(queries, model, dev, batch_size, field)
    check_compatible(info, q.shape[1], qinfo.get("model"))
    with contextlib.ExitStack() as stack:
        f = sys.stdout if out == "-" else stack.enter_context(atomic_file(out, force=force))
        write_jsonl(f, run_match(q, qmeta, idx, meta, info, k=k, exclude_self=exclude_self))
        f.flush()

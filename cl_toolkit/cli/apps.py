"""``cltk tag``, ``cltk mine`` and the listings ``cltk methods``, ``cltk encoders``."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .common import Device, Quiet, Threads, app, print_json


@app.command()
def tag(
    posts: Annotated[str, typer.Argument(help="JSONL posts {\"id\", \"text\"} (- for stdin).")],
    model: Annotated[str, typer.Option(help="A cdtom run dir; or, with --tags, any text encoder (zero-shot).")],
    tags: Annotated[Optional[str], typer.Option(help="Tag vocabulary file, one tag a line (default: the run's "
                                                "own tag index).")] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Tags per post.")] = 3,
    min_score: Annotated[Optional[float], typer.Option(help="Drop tags scoring below this. For a cdtom run the "
                                                       "score is the calibrated probability that the tag is "
                                                       "right; zero-shot it is the cosine.")] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="JSONL file to write; - for stdout.")] = "-",
    batch_size: Annotated[int, typer.Option(min=1, help="Posts per forward pass (length-sorted).")] = 128,
    device: Device = "auto",
    threads: Threads = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
    quiet: Quiet = False,
) -> None:
    """Hashtag generation: the top-k tags of each post by nearest-neighbour search of the tag
    index, one JSON line per post: {"id", "tags": [{"tag", "score"}, ...]}.

    Example: cltk tag data_samples/posts.jsonl --model runs/tagger --top-k 3 > tagged.jsonl

    Example: cltk tag posts.jsonl --model minilm-l6 --tags data_samples/tags.txt   (zero-shot)
    """
    import contextlib

    from ..data import load_posts
    from ..io import atomic_file, check_output, write_jsonl
    from ..runtime import ProgressBar, resolve_device, use_threads
    from ..tag import load_tagger, tag_posts

    if out != "-":
        check_output(out, force)
    records = load_posts(posts, need_tags=False)
    dev = str(resolve_device(device))
    use_threads(threads)
    tagger = load_tagger(model, tags, dev)
    with contextlib.ExitStack() as stack:
        advance = stack.enter_context(ProgressBar("tag", len(records), quiet)).advance
        f = sys.stdout if out == "-" else stack.enter_context(atomic_file(out, force=force))
        write_jsonl(f, tag_posts(tagger, records, top_k, min_score, batch_size, dev, progress=advance))
        f.flush()


@app.command()
def mine(
    records: Annotated[str, typer.Argument(help="JSONL to mine for (- for stdin): texts with 'positive' "
                                           "(supervised SimCSE), image-text pairs (CLIP) or posts with 'tags' "
                                           "(CD-TOM).")],
    model: Annotated[str, typer.Option(help="The model whose neighbours are the candidates: a run dir (its "
                                       "towers for two-tower runs), an encoder/ folder or a text model.")],
    out: Annotated[str, typer.Option("--out", "-o", help="JSONL file to write: the records with 'negative'.")],
    index: Annotated[Optional[str], typer.Option(help="Search this index folder instead (its rows' text / tag "
                                                 "are the candidates; built from the model's vectors).")] = None,
    tags: Annotated[Optional[str], typer.Option(help="Posts: the candidate tag vocabulary, one a line (default: "
                                                "every tag of the records).")] = None,
    num: Annotated[int, typer.Option(min=1, help="Negatives per record (posts only; SimCSE and CLIP read one).")] = 1,
    range_min: Annotated[int, typer.Option(min=0, help="Skip this many nearest candidates (likely paraphrases).")] = 0,
    range_max: Annotated[int, typer.Option(min=1, help="Consider candidates up to this rank.")] = 50,
    margin: Annotated[Optional[float], typer.Option(help="Keep a candidate only if it scores at most the positive's "
                                                    "score minus this (default 0: never closer than a known "
                                                    "positive); --no-margin to turn off.")] = 0.0,
    no_margin: Annotated[bool, typer.Option("--no-margin", help="No margin test.")] = False,
    max_score: Annotated[Optional[float], typer.Option(help="Keep candidates scoring at most this cosine.")] = None,
    sampling: Annotated[str, typer.Option(help="top (the nearest that pass) | random (drawn among them).")] = "top",
    seed: Annotated[int, typer.Option(min=0, help="Seed for --sampling random.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per forward pass.")] = 256,
    device: Device = "auto",
    threads: Threads = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
    quiet: Quiet = False,
) -> None:
    """Mine hard negatives: for each record, the model's nearest candidates that are not the record
    itself or a known positive, in the rank window and under the margin, written as its 'negative'
    field (a text, a caption, or a list of tags); prints a summary as JSON.

    Example: cltk mine nli.jsonl --model minilm-l6 --out nli_hard.jsonl --range-min 3   (then simcse)

    Example: cltk mine pairs.jsonl --model runs/clip --out pairs_hard.jsonl   (image -> nearest wrong caption)

    Example: cltk mine posts.jsonl --model runs/tagger --num 5 --out posts_hard.jsonl   (hard-negative tags)
    """
    from ..io import check_output, check_range
    from ..mine import mine as run_mine
    from ..mine import read_records, write_mined
    from ..runtime import ProgressBar, resolve_device, use_threads

    for option, value in (("--margin", margin), ("--max-score", max_score)):
        if value is not None:
            check_range(option, value, float)
    check_output(out, force)
    dev = str(resolve_device(device))
    recs, kind = read_records(records)
    use_threads(threads)
    with ProgressBar("mine", len(recs), quiet) as bar:
        mined, summary = run_mine(recs, kind, "<stdin>" if records == "-" else records, model, index, tags, num,
                                  range_min, range_max, None if no_margin else margin, max_score, sampling, seed,
                                  batch_size, dev, bar.advance)
    write_mined(mined, kind, records, out, force)
    print_json({"out": out, **summary})


@app.command()
def methods(as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """List the pretraining methods with a one-line description and the paper.

    Example: cltk methods --json
    """
    from ..methods import load_all

    rows = [{"name": m.name, "description": m.description, "paper": m.paper} for m in load_all().values()]
    _listing(rows, as_json, "{name:<12} {description}  [{paper}]")


@app.command()
def encoders(as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """List the registered encoders (names for --encoder).

    Example: cltk encoders
    """
    from ..encoders import ENCODERS

    rows = [{"name": e.name, "modality": e.modality, "description": e.description} for e in ENCODERS.values()]
    _listing(rows, as_json, "{name:<16} {modality:<6} {description}")


def _listing(rows: list[dict], as_json: bool, line: str) -> None:
    """A registry listing: JSON, or one formatted line a row."""
    if as_json:
        print_json(rows)
    else:
        for r in rows:
            typer.echo(line.format(**r))

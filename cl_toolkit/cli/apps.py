"""``cltk tag`` and the listings ``cltk methods``, ``cltk encoders``."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .common import app, print_json


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
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads (default: the cores other processes "
                                                   "leave free).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
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

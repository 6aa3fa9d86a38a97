"""Recommendation: ``cltk split``, ``cltk recommend``, ``cltk eval rec``."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ..io import InputError
from .common import Device, app, eval_app, print_json


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
    seed: Annotated[int, typer.Option(min=0, help="Seed of the ratio and cold-items draws.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out folder.")] = False,
) -> None:
    """Split interactions into train / valid / test files (deterministic, no interaction in two
    parts); prints the file names and counts as JSON.

    Example: cltk split ml-100k --out splits/ml-100k-loo --protocol loo

    Example: cltk split data_samples/rec --out splits/cold --protocol cold-items --cold-share 0.1
    """
    from ..io import check_output, check_range
    from ..io.interactions import read_interactions
    from ..recdata import split, write_split

    check_output(out, force)
    check_range("--cold-share", cold_share, float, 0, False, 0.5, False)
    try:
        shares = tuple(float(x) for x in ratios.split(","))
    except ValueError:
        raise InputError(f"--ratios must be three numbers like 0.8,0.1,0.1, got {ratios!r}") from None
    parts = split(read_interactions(interactions, items=items), protocol, seed, shares, cold_share)  # type: ignore[arg-type]
    print_json({"protocol": protocol, "seed": seed, **write_split(parts, out, force)})


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
    from ..io.interactions import read_interactions, read_recommendations
    from ..receval import evaluate

    try:
        ks = tuple(int(x) for x in k.split(","))
    except ValueError:
        raise InputError(f"--k must be comma-separated integers, got {k!r}") from None
    if not ks or min(ks) < 1:
        raise InputError(f"--k must be positive, got {k!r}")
    res = evaluate(read_recommendations(pred), read_interactions(test),
                   read_interactions(train) if train else None, ks)
    print_json({"eval": "rec", "pred": pred, "test": test, "train": train, "ranking": "full", **res})


@app.command()
def recommend(
    run: Annotated[str, typer.Argument(help="A run dir of a recommendation method: twotower, featmask, twin, sasrec, "
                                       "cl4srec, duorec, lightgcn, sgl or simgcl.")],
    users: Annotated[Optional[str], typer.Option(help="User ids one a line, or a user file (- for stdin). Default: "
                                                 "every user of the training data and of --history.")] = None,
    k: Annotated[int, typer.Option(min=1, help="Items per user.")] = 10,
    candidates: Annotated[Optional[str], typer.Option(help="Rank only these items: ids one a line, or an item file "
                                                      "(its new items are embedded from their features).")] = None,
    history: Annotated[Optional[str], typer.Option(help="More interactions (e.g. after training, or new sessions): "
                                                   "added to the users' histories, after their training items; "
                                                   "sequence models predict the next item from them.")] = None,
    include_seen: Annotated[bool, typer.Option(help="Also recommend items the user already interacted "
                                               "with.")] = False,
    out: Annotated[str, typer.Option("--out", "-o", help="JSONL file to write; - for stdout.")] = "-",
    device: Device = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
) -> None:
    """Top-k items for each user, best first, one JSON line per user: {"user", "items": [{"item",
    "score"}]} (score: cosine of the user and item embeddings for tower models, the next-item score
    of a sequence model from the user's time-ordered history, the dot product of propagated
    embeddings for a graph model); items the user interacted with are left out unless --include-seen.

    Example: cltk recommend runs/rec --k 10 > recs.jsonl

    Example: cltk recommend runs/rec --candidates cold_items.txt --k 20   (rank only new items)

    Example: cltk recommend runs/sasrec --history session.jsonl --users - < session_users.txt   (new sessions)
    """
    import contextlib

    from ..io import atomic_file, check_output
    from ..io.interactions import write_recommendations
    from ..recommend import recommend as run_recommend
    from ..runtime import resolve_device

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

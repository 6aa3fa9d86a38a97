"""``cltk eval``: knn, linear, retrieval, zeroshot, tag; JSON on stdout."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..io import InputError
from .common import Device, eval_app, print_json


@eval_app.command("knn")
def eval_knn(
    bank: Annotated[str, typer.Option(help="Embeddings folder, or with --model a labelled image data set.")],
    query: Annotated[str, typer.Option(help="Embeddings folder, or with --model a labelled image data set.")],
    model: Annotated[Optional[str], typer.Option(
        help="Run dir or encoder folder to embed --bank/--query with.")] = None,
    k: Annotated[int, typer.Option(min=1, help="Neighbours that vote.")] = 20,
    temperature: Annotated[float, typer.Option(help="Vote weight exp(sim / temperature).")] = 0.07,
    center: Annotated[bool, typer.Option(help="Subtract the bank mean before normalising.")] = False,
    device: Device = "auto",
) -> None:
    """Weighted kNN accuracy (k=20, t=0.07, cosine) of labelled queries against a labelled bank.

    Example: cltk eval knn --model runs/byol --bank fashion-mnist:train --query fashion-mnist:test
    """
    from ..eval import knn_accuracy, labelled_features
    from ..runtime import resolve_device

    b, bl, q, ql = labelled_features(bank, query, model, resolve_device(device), ("bank", "query"))
    res = knn_accuracy(b, bl, q, ql, k=k, temperature=temperature, center=center)
    print_json({"eval": "knn", "bank": bank, "query": query, "model": model, **res})


@eval_app.command("linear")
def eval_linear(
    train: Annotated[str, typer.Option(help="Embeddings folder, or with --model a labelled image data set.")],
    test: Annotated[str, typer.Option(help="Embeddings folder, or with --model a labelled image data set.")],
    model: Annotated[Optional[str], typer.Option(help="Run dir or encoder folder to embed --train/--test "
                                                 "with.")] = None,
    weight_decay: Annotated[float, typer.Option(help="L2 penalty of the logistic regression.")] = 1e-4,
    device: Device = "auto",
) -> None:
    """Linear-probe accuracy: logistic regression (L-BFGS) on standardised --train features, top-1 on --test.

    Example: cltk eval linear --model runs/byol --train fashion-mnist:train --test fashion-mnist:test
    """
    from ..eval import labelled_features, linear_eval
    from ..runtime import resolve_device

    tx, ty, qx, qy = labelled_features(train, test, model, resolve_device(device), ("train", "test"))
    res, _ = linear_eval(tx, ty, qx, qy, weight_decay)
    print_json({"eval": "linear", "train": train, "test": test, "model": model, **res})


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
    from ..eval import read_pairs, retrieval_eval
    from ..io import read_embeddings

    if (targets is None) == (index is None):
        raise InputError("give exactly one of --targets (exact search) or --index")
    if pairs is not None and match_field is not None:
        raise InputError("give at most one of --pairs and --match-field")
    q, qmeta, _ = read_embeddings(queries)
    t, tmeta = (read_embeddings(targets)[:2] if targets is not None else (None, None))
    res = retrieval_eval(q, qmeta, t, tmeta, index_dir=index, pairs=read_pairs(pairs) if pairs else None,
                         match_field=match_field, exclude_self=exclude_self)
    print_json({"eval": "retrieval", "queries": queries, "targets": targets, **res})


@eval_app.command("zeroshot")
def eval_zeroshot(
    model: Annotated[str, typer.Option(help="A two-tower run dir (cltk pretrain --method clip).")],
    data: Annotated[str, typer.Option(help="Labelled images: class subfolders, JSONL with 'label', or "
                                      "fashion-mnist:test.")],
    classes: Annotated[str, typer.Option(help="One class a line: LABEL, or LABEL<TAB>name used in the prompts.")],
    templates: Annotated[Optional[str], typer.Option(help="Prompt templates, one a line with {} for the class name "
                                                     "(default: 'a photo of a {}.').")] = None,
    device: Device = "auto",
) -> None:
    """Zero-shot classification: class-name prompts through the text tower, accuracy of the
    nearest class for each image through the image tower; JSON on stdout.

    Example: cltk eval zeroshot --model runs/clip --data fashion-mnist:test --classes classes.txt
    """
    from ..eval import zeroshot
    from ..runtime import resolve_device

    res = zeroshot(model, data, classes, templates, resolve_device(device))
    print_json({"eval": "zeroshot", "model": model, "data": data, **res})


@eval_app.command("tag")
def eval_tag(
    pred: Annotated[str, typer.Option(help="JSONL from cltk tag: {\"id\", \"tags\": [...]} lines.")],
    gold: Annotated[str, typer.Option(help="JSONL posts with their gold \"tags\".")],
    k: Annotated[int, typer.Option(min=1, help="Cut-off for hit@k and recall@k.")] = 3,
) -> None:
    """Tagging quality: hit@1, hit@k, recall@k and MRR of predicted tags against gold tags.

    Example: cltk eval tag --pred tagged.jsonl --gold data_samples/posts.jsonl
    """
    from ..data import load_posts
    from ..io import read_jsonl
    from ..tag import tag_metrics

    res = tag_metrics(read_jsonl(pred, required=("id", "tags")), load_posts(gold), k, pred)
    print_json({"eval": "tag", "pred": pred, "gold": gold, **res})


@eval_app.command("collapse")
def eval_collapse(
    emb: Annotated[str, typer.Argument(help="Embeddings folder or .npy (from cltk embed or any tool).")],
    views: Annotated[Optional[str], typer.Option(help="A second embeddings folder of the same ids (another view "
                                                 "of each row): alignment between the two.")] = None,
    pairs: Annotated[Optional[str], typer.Option(help="JSONL {\"query\": ID, \"target\": ID} of positive pairs "
                                                 "within EMB: their alignment.")] = None,
    sample: Annotated[int, typer.Option(min=2, help="Rows the statistics are taken on (drawn with --seed).")] = 5000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the row sample.")] = 0,
) -> None:
    """Collapse diagnostics of any embeddings: per-dimension std (against 1/sqrt(D) when spread out),
    effective rank, uniformity, alignment of known positives (--views or --pairs), and the
    collapse warnings the trainer gives; JSON on stdout.

    Example: cltk eval collapse emb/train

    Example: cltk eval collapse emb/view1 --views emb/view2
    """
    from ..eval import collapse_report, read_pairs
    from ..io import read_embeddings

    if views is not None and pairs is not None:
        raise InputError("give at most one of --views and --pairs")
    x, meta, _ = read_embeddings(emb)
    other = read_embeddings(views)[:2] if views is not None else None
    if other is not None and other[0].shape[1] != x.shape[1]:
        raise InputError(f"--views has dimension {other[0].shape[1]} but EMB has {x.shape[1]}", views)
    res = collapse_report(x, meta, other, read_pairs(pairs) if pairs else None, sample, seed)
    print_json({"eval": "collapse", "embeddings": emb, **res})

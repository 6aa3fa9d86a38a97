"""The command-line contract, walked over every command and option so that a new option cannot
skip it:

- every option reaches the library (it changes what the library is asked to do) or is refused
  with one line where it cannot apply: ``OPTIONS`` has a row for each (command, option), run with
  the library's entry points replaced by recorders;
- every numeric option refuses an out-of-range value with one line and exit 2 before any output
  exists (``BAD_NUMBERS``, run for real);
- the classes of bad input of issue 18 (unknown device, corrupt model files, unwritable output,
  non-finite embeddings, null labels), one row per command and class, run for real.
"""

from __future__ import annotations

import inspect
import io
import json
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import typer

from cl_toolkit.cli import app, main
from cl_toolkit.io import write_embeddings

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"
ENCODER = ROOT / "tests" / "fixtures" / "prev_runs" / "byol_encoder"
REC = SAMPLES / "rec"


def _commands(cmd=None, prefix=()):
    cmd = cmd or typer.main.get_command(app)
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, prefix + (name,))
    else:
        yield " ".join(prefix), cmd


def _options() -> set[tuple[str, str]]:
    return {(name, p.opts[0] if p.opts and p.opts[0].startswith("-") else p.name)
            for name, cmd in _commands() for p in cmd.params if p.name != "help"}


def run(*args, stdin: str = "") -> tuple[int, str, str]:
    """``cltk ARGS`` in this process (the library stays imported between calls): (code, out, err)."""
    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["cltk", *map(str, args)]
    stdin_, sys.stdin = sys.stdin, io.StringIO(stdin)
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv, sys.stdin = argv, stdin_
    return code, out.getvalue(), err.getvalue()


def one_line(result, *words) -> None:
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("cltk: error:"), result
    for w in words:
        assert w in lines[0], (w, lines[0])


# ---------------------------------------------------------------- inputs shared by the rows

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    rng = np.random.default_rng(0)
    meta = [{"id": f"r{i}", "label": "ab"[i % 2]} for i in range(12)]
    write_embeddings(root / "emb", rng.normal(size=(12, 4)).astype(np.float32), meta, {"model": "m"})
    write_embeddings(root / "emb2", rng.normal(size=(12, 4)).astype(np.float32), meta, {"model": "m"})
    bad = rng.normal(size=(12, 4)).astype(np.float32)
    bad[3, 1] = np.nan
    write_embeddings(root / "nan", bad, meta, {"model": "m"})
    write_embeddings(root / "nolabel", rng.normal(size=(12, 4)).astype(np.float32),
                     [{**m, "label": None} if i == 5 else m for i, m in enumerate(meta)], {"model": "m"})
    (root / "pairs.jsonl").write_text("".join(json.dumps({"query": f"r{i}", "target": f"r{i + 1}"}) + "\n"
                                              for i in range(0, 10, 2)))
    (root / "a_file").write_text("x")
    lines = (REC / "sample.inter").read_text().splitlines()
    lines[2] = "u1\ti1\tfour\t12"                # line 3: the rating is not a number
    (root / "bad.inter").write_text("\n".join(lines[:20]) + "\n")
    (root / "recs.jsonl").write_text(json.dumps({"user": "u29", "items": [{"item": "i023", "score": 1.0}]}) + "\n")
    from cl_toolkit import index as ix

    ix.build(np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32), meta, root / "idx", kind="Flat",
             emb_info={"model": None})
    corrupt = root / "corrupt_encoder"
    shutil.copytree(ENCODER, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 40)
    labelled = root / "labelled.jsonl"
    recs = [json.loads(x) for x in (SAMPLES / "images.jsonl").read_text().splitlines()]
    recs[2]["label"] = None
    labelled.write_text("".join(json.dumps({**r, "image": str(SAMPLES / r["image"])}) + "\n" for r in recs))
    return root


# ---------------------------------------------------------------- every option reaches the library

class Recorder:
    """Replaces library entry points; remembers each call's arguments by parameter name."""

    def __init__(self, monkeypatch):
        self.calls: dict[str, dict] = {}
        self.mp = monkeypatch

    def stub(self, module: str, name: str, result):
        mod = __import__(module, fromlist=[name])
        real = getattr(mod, name)
        sig = inspect.signature(real)

        def fake(*a, **k):
            bound = sig.bind(*a, **k)
            bound.apply_defaults()
            self.calls[name] = dict(bound.arguments)
            return result(**bound.arguments) if callable(result) else result

        self.mp.setattr(mod, name, fake)


EMB = np.zeros((2, 4), np.float32)


@pytest.fixture
def rec(monkeypatch, files):
    r = Recorder(monkeypatch)
    r.stub("cl_toolkit.pipeline", "pretrain", {"run": "r", "method": "byol", "complete": True})
    r.stub("cl_toolkit.report", "write_report", Path("r/report.html"))
    r.stub("cl_toolkit.finetune", "finetune", {"out": "o"})
    r.stub("cl_toolkit.embed", "embed", (EMB, [{"id": "a"}, {"id": "b"}], {"dim": 4}))
    for name in ("build", "build_sharded", "merge_shards", "train_shared", "build_shard"):
        r.stub("cl_toolkit.index", name, {k: 1 for k in ("factory", "metric", "dim", "count", "shards", "ranges",
                                                          "train_size", "train_seconds")})
    r.stub("cl_toolkit.index", "load", (None, [{"id": "t"}], {"dim": 4, "model": None}))
    r.stub("cl_toolkit.match", "read_queries", (EMB, [{"id": "a"}, {"id": "b"}], {"model": None}))
    r.stub("cl_toolkit.match", "match", iter([{"id": "a", "neighbors": []}]))
    r.stub("cl_toolkit.tag", "load_tagger", None)
    r.stub("cl_toolkit.tag", "tag_posts", iter([{"id": "a", "tags": []}]))
    r.stub("cl_toolkit.tag", "tag_metrics", {"hit@1": 1.0})
    r.stub("cl_toolkit.eval", "labelled_features", (EMB, np.zeros(2), EMB, np.zeros(2)))
    r.stub("cl_toolkit.eval", "knn_accuracy", {"knn_top1": 1.0})
    r.stub("cl_toolkit.eval", "linear_eval", ({"linear_top1": 1.0}, None))
    r.stub("cl_toolkit.eval", "retrieval_eval", {"recall@1": 1.0})
    r.stub("cl_toolkit.eval", "zeroshot", {"accuracy": 1.0})
    r.stub("cl_toolkit.eval", "collapse_report", {"std": 1.0})
    r.stub("cl_toolkit.runtime", "use_threads", 1)
    r.stub("cl_toolkit.index", "use_threads", 1)
    r.stub("cl_toolkit.recdata", "split", {})
    r.stub("cl_toolkit.recdata", "write_split", {"files": []})
    r.stub("cl_toolkit.receval", "evaluate", {"hr@10": 1.0})
    r.stub("cl_toolkit.recommend", "recommend", lambda **kw: iter([{"user": "u", "items": []}]))
    r.stub("cl_toolkit.recommend", "embed_field", (EMB, [{"id": "a"}, {"id": "b"}], {"dim": 4}))
    bars = []
    monkeypatch.setattr("cl_toolkit.runtime.ProgressBar.__init__",
                        lambda self, label, total=None, quiet=False, transient=True:
                        bars.append(quiet) or setattr(self, "_p", None))
    r.bars = bars
    return r


def _base(files, tmp):
    """A valid invocation of each command (the stubs make it cheap)."""
    e, _f = files / "emb", files
    return {
        "pretrain": ["pretrain", "--data", SAMPLES / "fashion", "--out", tmp / "run"],
        "report": ["report", "runs/x"],
        "finetune": ["finetune", ENCODER, "--data", SAMPLES / "fashion", "--out", tmp / "ft"],
        "embed": ["embed", ENCODER, "--input", SAMPLES / "images.jsonl", "--out", tmp / "emb"],
        "build-index": ["build-index", e, "--out", tmp / "idx"],
        "match": ["match", e, "--index", tmp / "idx"],
        "tag": ["tag", SAMPLES / "posts.jsonl", "--model", "minilm-l6"],
        "eval knn": ["eval", "knn", "--bank", e, "--query", e],
        "eval linear": ["eval", "linear", "--train", e, "--test", e],
        "eval retrieval": ["eval", "retrieval", "--queries", e, "--targets", e],
        "eval zeroshot": ["eval", "zeroshot", "--model", "r", "--data", SAMPLES / "fashion", "--classes",
                          SAMPLES / "classes.txt"],
        "eval tag": ["eval", "tag", "--pred", SAMPLES / "posts.jsonl", "--gold", SAMPLES / "posts.jsonl"],
        "eval collapse": ["eval", "collapse", e],
        "split": ["split", REC / "sample.inter", "--out", tmp / "split"],
        "eval rec": ["eval", "rec", "--pred", "{files}/recs.jsonl", "--test", REC / "sample.inter"],
        "recommend": ["recommend", "runs/rec"],
        "methods": ["methods"],
        "encoders": ["encoders"],
    }


def _cfg(r):
    return r.calls["pretrain"]["cfg"]


# (command, option): (extra arguments, check(recorder, stdout) -> bool). Positional arguments are
# checked through the base invocation (they name the input).
OPTIONS = {
    ("pretrain", "--out"): ([], lambda r, o: _cfg(r).out.endswith("run")),
    ("pretrain", "--data"): ([], lambda r, o: _cfg(r).data.endswith("fashion")),
    ("pretrain", "--method"): (["--method", "simclr"], lambda r, o: _cfg(r).method == "simclr"),
    ("pretrain", "--encoder"): (["--encoder", "convnet-tiny"], lambda r, o: _cfg(r).encoder == "convnet-tiny"),
    ("pretrain", "--epochs"): (["--epochs", "3"], lambda r, o: _cfg(r).epochs == 3),
    ("pretrain", "--minutes"): (["--minutes", "2"], lambda r, o: _cfg(r).minutes == 2 and _cfg(r).epochs is None),
    ("pretrain", "--batch-size"): (["--batch-size", "32"], lambda r, o: _cfg(r).batch_size == 32),
    ("pretrain", "--chunk-size"): (["--chunk-size", "8"], lambda r, o: _cfg(r).chunk_size == 8),
    ("pretrain", "--sync-bn"): (["--no-sync-bn"], lambda r, o: _cfg(r).sync_bn is False),
    ("pretrain", "--lr"): (["--lr", "0.01"], lambda r, o: _cfg(r).lr == 0.01),
    ("pretrain", "--optimizer"): (["--optimizer", "lars"], lambda r, o: _cfg(r).optimizer == "lars"),
    ("pretrain", "--image-size"): (["--image-size", "32"], lambda r, o: _cfg(r).image_size == 32),
    ("pretrain", "--seed"): (["--seed", "7"], lambda r, o: _cfg(r).seed == 7),
    ("pretrain", "--device"): (["--device", "cpu"], lambda r, o: _cfg(r).device == "cpu"),
    ("pretrain", "--precision"): (["--precision", "fp32"], lambda r, o: _cfg(r).precision == "fp32"),
    ("pretrain", "--threads"): (["--threads", "1"], lambda r, o: _cfg(r).threads == 1),
    ("pretrain", "--checkpoint-every"): (["--checkpoint-every", "9"], lambda r, o: _cfg(r).checkpoint_every == 9),
    ("pretrain", "--config"): (["--config", "{tmp}/c.toml"], lambda r, o: _cfg(r).warmup == 0.3),
    ("pretrain", "--set"): (["--set", "momentum=0.9"], lambda r, o: _cfg(r).method_config.momentum == 0.9),
    ("pretrain", "--resume"): (["--resume"], lambda r, o: r.calls["pretrain"]["resume"] is True),
    ("pretrain", "--force"): (["--force"], lambda r, o: r.calls["pretrain"]["trainer_kwargs"]["force"] is True),
    ("pretrain", "--quiet"): (["--quiet"], lambda r, o: r.calls["pretrain"]["trainer_kwargs"]["quiet"] is True),
    ("pretrain", "--report"): (["--report"], lambda r, o: r.calls["pretrain"]["report"] is True),
    ("pretrain", "--knn-every"): (["--knn-every", "5"], lambda r, o: r.calls["pretrain"]["knn_every"] == 5),
    ("pretrain", "--knn-query"): (["--knn-every", "5", "--knn-query", "q"],
                                  lambda r, o: r.calls["pretrain"]["knn_query"] == "q"),
    ("pretrain", "--tags"): (["--method", "cdtom", "--tags", "t.txt"],
                             lambda r, o: _cfg(r).method_config.tags == "t.txt"),
    ("report", "run"): ([], lambda r, o: str(r.calls["write_report"]["run"]) == "runs/x"),
    ("finetune", "run"): ([], lambda r, o: r.calls["finetune"]["cfg"].run == str(ENCODER)),
    ("finetune", "--data"): ([], lambda r, o: r.calls["finetune"]["cfg"].data.endswith("fashion")),
    ("finetune", "--out"): ([], lambda r, o: r.calls["finetune"]["cfg"].out.endswith("ft")),
    ("finetune", "--linear"): (["--full"], lambda r, o: r.calls["finetune"]["cfg"].mode == "full"),
    ("finetune", "--test"): (["--test", "t"], lambda r, o: r.calls["finetune"]["cfg"].test == "t"),
    ("finetune", "--epochs"): (["--epochs", "3"], lambda r, o: r.calls["finetune"]["cfg"].epochs == 3),
    ("finetune", "--batch-size"): (["--batch-size", "8"], lambda r, o: r.calls["finetune"]["cfg"].batch_size == 8),
    ("finetune", "--lr"): (["--lr", "0.5"], lambda r, o: r.calls["finetune"]["cfg"].lr == 0.5),
    ("finetune", "--weight-decay"): (["--weight-decay", "0.5"],
                                     lambda r, o: r.calls["finetune"]["cfg"].weight_decay == 0.5),
    ("finetune", "--seed"): (["--seed", "4"], lambda r, o: r.calls["finetune"]["cfg"].seed == 4),
    ("finetune", "--device"): (["--device", "cpu"], lambda r, o: r.calls["finetune"]["cfg"].device == "cpu"),
    ("finetune", "--force"): (["--force"], lambda r, o: r.calls["finetune"]["force"] is True),
    ("embed", "model"): ([], lambda r, o: r.calls["embed"]["model"] == str(ENCODER)),
    ("embed", "--input"): ([], lambda r, o: r.calls["embed"]["data"].endswith("images.jsonl")),
    ("embed", "--out"): ([], lambda r, o: r.calls["embed"]["out"].endswith("emb")),
    ("embed", "--field"): (["--field", "item"], lambda r, o: r.calls["embed_field"]["field"] == "item"),
    ("embed", "--batch-size"): (["--batch-size", "7"], lambda r, o: r.calls["embed"]["batch_size"] == 7),
    ("embed", "--normalize"): (["--no-normalize"], lambda r, o: r.calls["embed"]["normalize"] is False),
    ("embed", "--device"): (["--device", "cpu"], lambda r, o: str(r.calls["embed"]["device"]) == "cpu"),
    ("embed", "--force"): (["--force"], lambda r, o: r.calls["embed"]["force"] is True),
    ("embed", "--threads"): (["--threads", "1"], lambda r, o: r.calls["use_threads"]["threads"] == 1),
    ("tag", "--threads"): (["--threads", "1"], lambda r, o: r.calls["use_threads"]["threads"] == 1),
    ("match", "--threads"): (["--threads", "1"], lambda r, o: r.calls["use_threads"]["threads"] == 1),
    ("build-index", "--threads"): (["--threads", "1"], lambda r, o: r.calls["use_threads"]["threads"] == 1),
    ("embed", "--quiet"): (["--quiet"], lambda r, o: r.bars == [True]),
    ("build-index", "emb"): ([], lambda r, o: r.calls["build"]["emb"].shape == (12, 4)),
    ("build-index", "--out"): ([], lambda r, o: str(r.calls["build"]["out"]).endswith("idx")),
    ("build-index", "--kind"): (["--kind", "Flat"], lambda r, o: r.calls["build"]["kind"] == "Flat"),
    ("build-index", "--metric"): (["--metric", "l2"], lambda r, o: r.calls["build"]["metric"] == "l2"),
    ("build-index", "--target-recall"): (["--target-recall", "0.9"],
                                         lambda r, o: r.calls["build"]["target_recall"] == 0.9),
    ("build-index", "--max-memory"): (["--max-memory", "1G"], lambda r, o: r.calls["build"]["max_memory"] == "1G"),
    ("build-index", "--append"): (["--append"], lambda r, o: r.calls["build"]["append"] is True),
    ("build-index", "--shards"): (["--shards", "3"], lambda r, o: r.calls["build_sharded"]["shards"] == 3),
    ("build-index", "--train-only"): (["--shards", "3", "--train-only"],
                                      lambda r, o: r.calls["train_shared"]["shards"] == 3),
    ("build-index", "--shard"): (["--shard", "1/3"], lambda r, o: r.calls["build_shard"]["shard"] == 1),
    ("build-index", "--merge"): (["--merge"], lambda r, o: "merge_shards" in r.calls),
    ("build-index", "--seed"): (["--seed", "5"], lambda r, o: r.calls["build"]["seed"] == 5),
    ("build-index", "--force"): (["--force"], lambda r, o: r.calls["build"]["force"] is True),
    ("build-index", "--quiet"): (["--quiet"], lambda r, o: r.bars == [True]),
    ("match", "queries"): ([], lambda r, o: r.calls["read_queries"]["spec"].endswith("emb")),
    ("match", "--index"): ([], lambda r, o: str(r.calls["load"]["idx_dir"]).endswith("idx")),
    ("match", "--model"): (["--model", "m"], lambda r, o: r.calls["read_queries"]["model"] == "m"),
    ("match", "--k"): (["--k", "4"], lambda r, o: r.calls["match"]["k"] == 4),
    ("match", "--field"): (["--model", "m", "--field", "text"],
                           lambda r, o: r.calls["read_queries"]["field"] == "text"),
    ("match", "--exclude-self"): (["--exclude-self"], lambda r, o: r.calls["match"]["exclude_self"] is True),
    ("match", "--out"): (["--out", "{tmp}/m.jsonl"], lambda r, o: o == ""),
    ("match", "--batch-size"): (["--batch-size", "3"], lambda r, o: r.calls["read_queries"]["batch_size"] == 3),
    ("match", "--device"): (["--model", "m", "--device", "cpu"],
                            lambda r, o: r.calls["read_queries"]["device"] == "cpu"),
    ("match", "--force"): (["--out", "{tmp}/m.jsonl", "--force"], lambda r, o: o == ""),
    ("tag", "posts"): ([], lambda r, o: len(r.calls["tag_posts"]["records"]) == 120),
    ("tag", "--model"): ([], lambda r, o: r.calls["load_tagger"]["model"] == "minilm-l6"),
    ("tag", "--tags"): (["--tags", "t.txt"], lambda r, o: r.calls["load_tagger"]["tags"] == "t.txt"),
    ("tag", "--top-k"): (["--top-k", "5"], lambda r, o: r.calls["tag_posts"]["top_k"] == 5),
    ("tag", "--min-score"): (["--min-score", "0.5"], lambda r, o: r.calls["tag_posts"]["min_score"] == 0.5),
    ("tag", "--out"): (["--out", "{tmp}/t.jsonl"], lambda r, o: o == ""),
    ("tag", "--batch-size"): (["--batch-size", "9"], lambda r, o: r.calls["tag_posts"]["batch_size"] == 9),
    ("tag", "--device"): (["--device", "cpu"], lambda r, o: r.calls["load_tagger"]["device"] == "cpu"),
    ("tag", "--force"): (["--out", "{tmp}/t.jsonl", "--force"], lambda r, o: o == ""),
    ("tag", "--quiet"): (["--quiet"], lambda r, o: r.bars == [True]),
    ("eval knn", "--bank"): ([], lambda r, o: r.calls["labelled_features"]["first"].endswith("emb")),
    ("eval knn", "--query"): ([], lambda r, o: r.calls["labelled_features"]["second"].endswith("emb")),
    ("eval knn", "--model"): (["--model", "m"], lambda r, o: r.calls["labelled_features"]["model"] == "m"),
    ("eval knn", "--k"): (["--k", "3"], lambda r, o: r.calls["knn_accuracy"]["k"] == 3),
    ("eval knn", "--temperature"): (["--temperature", "0.5"],
                                    lambda r, o: r.calls["knn_accuracy"]["temperature"] == 0.5),
    ("eval knn", "--center"): (["--center"], lambda r, o: r.calls["knn_accuracy"]["center"] is True),
    ("eval knn", "--device"): (["--device", "cpu"], lambda r, o: str(r.calls["labelled_features"]["device"]) == "cpu"),
    ("eval linear", "--train"): ([], lambda r, o: r.calls["labelled_features"]["first"].endswith("emb")),
    ("eval linear", "--test"): ([], lambda r, o: r.calls["labelled_features"]["second"].endswith("emb")),
    ("eval linear", "--model"): (["--model", "m"], lambda r, o: r.calls["labelled_features"]["model"] == "m"),
    ("eval linear", "--weight-decay"): (["--weight-decay", "0.5"],
                                        lambda r, o: r.calls["linear_eval"]["weight_decay"] == 0.5),
    ("eval linear", "--device"): (["--device", "cpu"],
                                  lambda r, o: str(r.calls["labelled_features"]["device"]) == "cpu"),
    ("eval retrieval", "--queries"): ([], lambda r, o: len(r.calls["retrieval_eval"]["qmeta"]) == 12),
    ("eval retrieval", "--targets"): ([], lambda r, o: len(r.calls["retrieval_eval"]["tmeta"]) == 12),
    ("eval retrieval", "--index"): (["--index", "i", "!--targets"],
                                    lambda r, o: r.calls["retrieval_eval"]["index_dir"] == "i"),
    ("eval retrieval", "--pairs"): (["--pairs", "{files}/pairs.jsonl"],
                                    lambda r, o: r.calls["retrieval_eval"]["pairs"]["r0"] == {"r1"}),
    ("eval retrieval", "--match-field"): (["--match-field", "label"],
                                          lambda r, o: r.calls["retrieval_eval"]["match_field"] == "label"),
    ("eval retrieval", "--exclude-self"): (["--exclude-self"],
                                           lambda r, o: r.calls["retrieval_eval"]["exclude_self"] is True),
    ("eval zeroshot", "--model"): ([], lambda r, o: r.calls["zeroshot"]["model"] == "r"),
    ("eval zeroshot", "--data"): ([], lambda r, o: r.calls["zeroshot"]["data"].endswith("fashion")),
    ("eval zeroshot", "--classes"): ([], lambda r, o: r.calls["zeroshot"]["classes"].endswith("classes.txt")),
    ("eval zeroshot", "--templates"): (["--templates", "t"], lambda r, o: r.calls["zeroshot"]["templates"] == "t"),
    ("eval zeroshot", "--device"): (["--device", "cpu"], lambda r, o: str(r.calls["zeroshot"]["device"]) == "cpu"),
    ("eval tag", "--pred"): ([], lambda r, o: len(r.calls["tag_metrics"]["pred"]) == 120),
    ("eval tag", "--gold"): ([], lambda r, o: len(r.calls["tag_metrics"]["gold"]) == 120),
    ("eval tag", "--k"): (["--k", "5"], lambda r, o: r.calls["tag_metrics"]["k"] == 5),
    ("eval collapse", "emb"): ([], lambda r, o: r.calls["collapse_report"]["emb"].shape == (12, 4)),
    ("eval collapse", "--views"): (["--views", "{files}/emb2"], lambda r, o: r.calls["collapse_report"]["views"]
                                   is not None),
    ("eval collapse", "--pairs"): (["--pairs", "{files}/pairs.jsonl"],
                                   lambda r, o: r.calls["collapse_report"]["pairs"]["r0"] == {"r1"}),
    ("eval collapse", "--sample"): (["--sample", "5"], lambda r, o: r.calls["collapse_report"]["sample"] == 5),
    ("eval collapse", "--seed"): (["--seed", "3"], lambda r, o: r.calls["collapse_report"]["seed"] == 3),
    ("pretrain", "--items"): (["--method", "twotower", "--items", "i.jsonl"],
                              lambda r, o: _cfg(r).method_config.items == "i.jsonl"),
    ("split", "interactions"): ([], lambda r, o: len(r.calls["split"]["inter"]) == 949),
    ("split", "--out"): ([], lambda r, o: str(r.calls["write_split"]["out"]).endswith("split")),
    ("split", "--protocol"): (["--protocol", "ratio"], lambda r, o: r.calls["split"]["protocol"] == "ratio"),
    ("split", "--items"): (["--items", REC / "items.jsonl"],
                           lambda r, o: r.calls["split"]["inter"].item_file.endswith("items.jsonl")),
    ("split", "--ratios"): (["--ratios", "0.7,0.2,0.1"], lambda r, o: r.calls["split"]["ratios"] == (0.7, 0.2, 0.1)),
    ("split", "--cold-share"): (["--cold-share", "0.2"], lambda r, o: r.calls["split"]["cold_share"] == 0.2),
    ("split", "--seed"): (["--seed", "3"], lambda r, o: r.calls["split"]["seed"] == 3),
    ("split", "--force"): (["--force"], lambda r, o: r.calls["write_split"]["force"] is True),
    ("eval rec", "--pred"): ([], lambda r, o: r.calls["evaluate"]["pred"] == {"u29": ["i023"]}),
    ("eval rec", "--test"): ([], lambda r, o: len(r.calls["evaluate"]["test"]) == 949),
    ("eval rec", "--train"): (["--train", REC / "sample.inter"], lambda r, o: r.calls["evaluate"]["train"] is not None),
    ("eval rec", "--k"): (["--k", "5,50"], lambda r, o: r.calls["evaluate"]["ks"] == (5, 50)),
    ("recommend", "run"): ([], lambda r, o: r.calls["recommend"]["run"] == "runs/rec"),
    ("recommend", "--users"): (["--users", "u.txt"], lambda r, o: r.calls["recommend"]["users"] == "u.txt"),
    ("recommend", "--k"): (["--k", "100"], lambda r, o: r.calls["recommend"]["k"] == 100),
    ("recommend", "--candidates"): (["--candidates", "c.txt"],
                                    lambda r, o: r.calls["recommend"]["candidates"] == "c.txt"),
    ("recommend", "--history"): (["--history", "h.jsonl"], lambda r, o: r.calls["recommend"]["history"] == "h.jsonl"),
    ("recommend", "--include-seen"): (["--include-seen"], lambda r, o: r.calls["recommend"]["include_seen"] is True),
    ("recommend", "--out"): (["--out", "{tmp}/r.jsonl"], lambda r, o: o == ""),
    ("recommend", "--device"): (["--device", "cpu"], lambda r, o: r.calls["recommend"]["device"] == "cpu"),
    ("recommend", "--force"): (["--out", "{tmp}/r.jsonl", "--force"], lambda r, o: o == ""),
    ("methods", "--json"): (["--json"], lambda r, o: {m["name"] for m in json.loads(o)} >= {"byol", "simclr"}),
    ("encoders", "--json"): (["--json"], lambda r, o: "convnet-small" in {e["name"] for e in json.loads(o)}),
}


def test_every_option_has_a_row():
    assert _options() == set(OPTIONS), (sorted(_options() - set(OPTIONS)), sorted(set(OPTIONS) - _options()))


@pytest.mark.parametrize("key", sorted(OPTIONS), ids=" ".join)
def test_every_option_reaches_the_library(key, rec, files, tmp_path):
    (tmp_path / "c.toml").write_text("warmup = 0.3\n")
    command, _ = key
    extra, check = OPTIONS[key]
    base = list(_base(files, tmp_path)[command])
    extra = [str(x) for x in extra]
    for drop in [x[1:] for x in extra if x.startswith("!")]:     # "!--opt": leave --opt and its value out
        i = base.index(drop)
        del base[i:i + 2]
    extra = [str(x).format(tmp=tmp_path, files=files) for x in extra if not str(x).startswith("!")]
    base = [str(x).format(tmp=tmp_path, files=files) for x in base]
    code, out, err = run(*base, *extra)
    assert code == 0, (key, err)
    assert check(rec, out), (key, rec.calls, out)


# ---------------------------------------------------------------- numbers out of range

def _numeric() -> list[tuple[str, str, str]]:
    rows = []
    for name, cmd in _commands():
        for p in cmd.params:
            t = p.bare_type()                      # the option's type with Optional[...] removed
            if p.opts and p.opts[0].startswith("--") and t in ("int", "float"):
                rows.append((name, p.opts[0], t))
    return rows


# a value each numeric option must refuse (the smallest wrong one where there is a bound)
BAD_NUMBERS = {
    "--epochs": "0", "--minutes": "-1", "--batch-size": "0", "--chunk-size": "-1", "--lr": "-0.1",
    "--image-size": "0", "--seed": "-1", "--threads": "0", "--checkpoint-every": "0", "--knn-every": "0",
    "--weight-decay": "-1", "--target-recall": "1.5", "--shards": "0", "--k": "0", "--temperature": "0",
    "--top-k": "0", "--min-score": "nan", "--sample": "1", "--cold-share": "0.6",
}


def test_every_numeric_option_has_a_bad_value():
    assert len(_numeric()) >= 25 and {opt for _, opt, _ in _numeric()} <= set(BAD_NUMBERS)


@pytest.mark.parametrize("command,option,kind", _numeric(), ids=lambda x: str(x))
def test_a_number_out_of_range_is_one_line_before_any_output(command, option, kind, files, tmp_path, tiny_bert):
    base = _base(files, tmp_path)[command]
    base = [tiny_bert if x == "minilm-l6" else x for x in base]
    extra = (["--tags", SAMPLES / "tags.txt"] if command == "tag" else []) + [option, BAD_NUMBERS[option]]
    one_line(run(*base, *extra), option)
    assert not any(p.exists() for p in (tmp_path / "run", tmp_path / "ft", tmp_path / "emb", tmp_path / "idx"))


# ---------------------------------------------------------------- classes of bad input

def _bad_inputs(files, tmp):
    e = files / "emb"
    blocked = files / "a_file"                      # a file where a folder should be: not writable
    return {
        "unknown device": [
            (["pretrain", "--data", SAMPLES / "fashion", "--out", tmp / "r", "--device", "tpu"], "--device"),
            (["embed", ENCODER, "--input", SAMPLES / "images.jsonl", "--out", tmp / "o", "--device", "tpu"],
             "--device"),
            (["finetune", ENCODER, "--data", SAMPLES / "fashion", "--out", tmp / "o", "--device", "tpu"], "--device"),
            (["eval", "knn", "--bank", e, "--query", e, "--device", "tpu"], "--device"),
            (["eval", "linear", "--train", e, "--test", e, "--device", "tpu"], "--device"),
            (["eval", "zeroshot", "--model", ENCODER, "--data", SAMPLES / "fashion", "--classes",
              SAMPLES / "classes.txt", "--device", "tpu"], "--device"),
            (["tag", SAMPLES / "posts.jsonl", "--model", "minilm-l6", "--tags", SAMPLES / "tags.txt", "--device",
              "tpu"], "--device"),
            (["match", SAMPLES / "images.jsonl", "--model", ENCODER, "--index", files / "idx", "--device", "tpu"],
             "--device"),
        ],
        "corrupt model": [
            (["embed", files / "corrupt_encoder", "--input", SAMPLES / "images.jsonl", "--out", tmp / "o"],
             "model.safetensors"),
            (["finetune", files / "corrupt_encoder", "--data", SAMPLES / "fashion", "--out", tmp / "o"],
             "model.safetensors"),
            (["eval", "knn", "--model", files / "corrupt_encoder", "--bank", SAMPLES / "fashion", "--query",
              SAMPLES / "fashion"], "model.safetensors"),
            (["eval", "linear", "--model", files / "corrupt_encoder", "--train", SAMPLES / "fashion", "--test",
              SAMPLES / "fashion"], "model.safetensors"),
        ],
        "unwritable output": [
            (["pretrain", "--data", SAMPLES / "fashion", "--out", blocked / "r"], "cannot write here"),
            (["embed", ENCODER, "--input", SAMPLES / "images.jsonl", "--out", blocked / "o"], "cannot write here"),
            (["finetune", ENCODER, "--data", SAMPLES / "fashion", "--out", blocked / "o"], "cannot write here"),
            (["build-index", e, "--out", blocked / "o"], "cannot write here"),
            (["match", e, "--index", files / "idx", "--out", blocked / "o"], "cannot write here"),
            (["tag", SAMPLES / "posts.jsonl", "--model", "minilm-l6", "--tags", SAMPLES / "tags.txt", "--out",
              blocked / "o"], "cannot write here"),
        ],
        "non-finite embeddings": [
            (["eval", "knn", "--bank", files / "nan", "--query", e], "NaN"),
            (["eval", "linear", "--train", e, "--test", files / "nan"], "NaN"),
            (["eval", "retrieval", "--queries", files / "nan", "--targets", e], "NaN"),
            (["eval", "collapse", files / "nan"], "NaN"),
            (["build-index", files / "nan", "--out", tmp / "o"], "NaN"),
            (["match", files / "nan", "--index", files / "idx"], "NaN"),
        ],
        "bad interactions": [
            (["split", files / "bad.inter", "--out", tmp / "o"], "bad.inter:3"),
            (["eval", "rec", "--pred", files / "recs.jsonl", "--test", files / "bad.inter"], "bad.inter:3"),
            (["pretrain", "--method", "twotower", "--data", files / "bad.inter", "--out", tmp / "r"], "bad.inter:3"),
        ],
        "null labels": [
            (["finetune", ENCODER, "--data", files / "labelled.jsonl", "--out", tmp / "o"], "label"),
            (["eval", "knn", "--bank", files / "nolabel", "--query", e], "label"),
            (["eval", "linear", "--train", e, "--test", files / "nolabel"], "label"),
        ],
    }


def _rows():
    dummy = Path("/nonexistent")
    return [(cls, i) for cls, rows in _bad_inputs(dummy, dummy).items() for i in range(len(rows))]


@pytest.mark.parametrize("cls,i", _rows(), ids=lambda x: str(x))
def test_each_class_of_bad_input_is_one_line_and_leaves_nothing(cls, i, files, tmp_path, tiny_bert):
    args, word = _bad_inputs(files, tmp_path)[cls][i]
    args = [tiny_bert if a == "minilm-l6" else a for a in args]
    result = run(*args)
    one_line(result, *([word] if word else []))
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()
    if word == "cannot write here":
        assert (files / "a_file").read_text() == "x"

"""Hard-negative mining (`cltk mine`): never the record itself or a listed positive, the same choice
as brute force over the model's embeddings, and output the methods read as `negative`."""

import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from cl_toolkit.config import resolve_config
from cl_toolkit.embed import embed_records
from cl_toolkit.mine import mine, read_records
from cl_toolkit.pipeline import pretrain


def cltk(*args) -> tuple[int, str, str]:
    """``cltk ARGS`` in this process: (exit code, stdout, stderr)."""
    from cl_toolkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["cltk", *map(str, args)]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def test_mined_tags_match_brute_force_and_skip_gold_tags(samples, tiny_bert):
    recs, kind = read_records(str(samples / "posts.jsonl"))
    assert kind == "tags"
    out, summary = mine(recs, kind, str(samples / "posts.jsonl"), str(tiny_bert), num=3, range_min=1, range_max=20,
                        margin=0.0)
    assert summary["written"] == len(recs) == 120 and summary["candidates"] == 125
    vocab = sorted({t for r in recs for t in r["tags"]})
    q, _ = embed_records(recs, "p", str(tiny_bert), field="text")
    t, _ = embed_records([{"id": v, "tag": v, "_line": 1} for v in vocab], "t", str(tiny_bert), field="tag")
    for r, qv, got in zip(recs, q, out):
        assert got["id"] == r["id"] and not set(got["negative"]) & set(r["tags"])
        scores = t @ qv
        ranked = [j for j in np.argsort(-scores, kind="stable") if vocab[j] not in r["tags"]][1:20]
        floor = min(scores[vocab.index(g)] for g in r["tags"])
        want = [vocab[j] for j in ranked if scores[j] <= floor + 1e-6][:3]
        assert got["negative"] == want or _ties(got["negative"], want, scores, vocab)


def _ties(got, want, scores, vocab):
    """Equal up to candidates of equal score (exact search may order ties differently)."""
    s = lambda names: sorted(round(float(scores[vocab.index(n)]), 5) for n in names)  # noqa: E731
    return s(got) == s(want)


def test_mined_text_negatives_are_never_the_record_or_its_positive(samples, tiny_bert, tmp_path):
    posts = [json.loads(x) for x in (samples / "posts.jsonl").read_text().splitlines()][:40]
    recs = [{"id": p["id"], "text": p["text"], "positive": " ".join(p["tags"]).replace("::", " ")} for p in posts]
    recs[1]["positive"] = recs[0]["positive"]             # two records share a positive: it is neither's negative
    data = tmp_path / "sup.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    code, stdout, err = cltk("mine", data, "--model", tiny_bert, "--out", tmp_path / "hard.jsonl", "--range-max", 10,
                             "--no-margin", "--quiet")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["kind"] == "positive" and summary["written"] + summary["dropped"] == 40
    mined = [json.loads(x) for x in (tmp_path / "hard.jsonl").read_text().splitlines()]
    assert len(mined) == summary["written"] > 30
    for m in mined:
        assert m["negative"] not in (m["text"], m["positive"]) and m["negative"] in {r["positive"] for r in recs}
    # supervised SimCSE reads the file as (text, positive, hard negative)
    run = pretrain(resolve_config({"method": "simcse", "data": str(tmp_path / "hard.jsonl"), "out": str(tmp_path / "s"),
                                   "encoder": str(tiny_bert), "epochs": 1, "batch_size": 16}), quiet=True)
    assert run["steps"] >= 1 and np.isfinite(_last_loss(tmp_path / "s"))
    # several negatives are for posts only; records of no known kind are refused by line and field
    one = cltk("mine", data, "--model", tiny_bert, "--out", tmp_path / "x.jsonl", "--num", 2)
    assert one[0] == 2 and "--num 2" in one[2] and len(one[2].strip().splitlines()) == 1
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "a", "text": "t"}) + "\n")
    bad = cltk("mine", tmp_path / "bad.jsonl", "--model", tiny_bert, "--out", tmp_path / "y.jsonl")
    assert bad[0] == 2 and "bad.jsonl:1" in bad[2] and not (tmp_path / "y.jsonl").exists()


def _last_loss(run: Path) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["loss"]


def _clip(data: Path, out: Path, tiny_bert) -> dict:
    return pretrain(resolve_config({"method": "clip", "data": str(data), "out": str(out), "encoder": "convnet-tiny",
                                    "epochs": 1, "batch_size": 25, "method_config": {"text_encoder": str(tiny_bert)}}),
                    quiet=True)


def test_mined_captions_for_clip_pairs(samples, tiny_bert, tmp_path):
    _clip(samples / "pairs.jsonl", tmp_path / "clip", tiny_bert)
    out = tmp_path / "sub" / "hard.jsonl"
    out.parent.mkdir()
    code, stdout, err = cltk("mine", samples / "pairs.jsonl", "--model", tmp_path / "clip", "--out", out,
                             "--range-min", 1, "--no-margin", "--quiet")
    assert code == 0, err
    mined = [json.loads(x) for x in out.read_text().splitlines()]
    assert json.loads(stdout)["query_field"] == "image" and len(mined) > 40
    for m in mined:
        assert m["negative"] != m["text"] and (out.parent / m["image"]).is_file()   # paths still open from there
    # CLIP reads them as extra captions of the images
    _clip(out, tmp_path / "clip2", tiny_bert)
    assert np.isfinite(_last_loss(tmp_path / "clip2"))


def test_cdtom_batches_hold_a_posts_negative_tags_as_negatives(samples, tiny_bert, tmp_path):
    from cl_toolkit.methods import get_method
    from cl_toolkit.tasks.posts import PostsTask

    recs = [json.loads(x) for x in (samples / "posts.jsonl").read_text().splitlines()]
    vocab = sorted({t for r in recs for t in r["tags"]})
    recs[0]["negative"] = [v for v in vocab if v not in recs[0]["tags"]][-2:] + [recs[0]["tags"][0], "not-a-tag"]
    data = tmp_path / "posts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = resolve_config({"method": "cdtom", "data": str(data), "out": str(tmp_path / "t"), "encoder": str(tiny_bert),
                          "method_config": {"finetune_layers": 0}})
    task = PostsTask(cfg, get_method("cdtom").cls, torch.device("cpu"))
    b = task.batch(torch.tensor([0]))
    names = [task.vocab[i] for i in b["tag_ids"].tolist()]
    neg = recs[0]["negative"][:2]
    assert set(neg) <= set(names) and set(recs[0]["tags"]) <= set(names) and "not-a-tag" not in names
    assert not b["positives"][0, [names.index(n) for n in neg]].any()      # negatives, not positives
    assert b["positives"][0, names.index(recs[0]["tags"][0])]               # a gold tag listed as negative stays gold
    (tmp_path / "bad.jsonl").write_text(json.dumps({**recs[0], "negative": "admin"}) + "\n")
    code, _, err = cltk("pretrain", "--method", "cdtom", "--data", tmp_path / "bad.jsonl", "--out", tmp_path / "r")
    assert code == 2 and "bad.jsonl:1: field 'negative'" in err and not Path(tmp_path / "r").exists()


@pytest.mark.parametrize("kw", [{"range_min": 5, "range_max": 5}])
def test_an_empty_window_is_refused(samples, tiny_bert, kw):
    recs, kind = read_records(str(samples / "posts.jsonl"))
    from cl_toolkit.io import InputError

    with pytest.raises(InputError, match="--range-max"):
        mine(recs, kind, "p", str(tiny_bert), **kw)

"""twotower, featmask and twin on the synthetic sample through the one trainer; recommend and
embed from their run dirs (library calls, a few epochs each)."""

import json

import numpy as np
import pytest
from conftest import SAMPLES
from safetensors.numpy import load_file

from cl_toolkit.config import TrainConfig, resolve_config
from cl_toolkit.io import InputError
from cl_toolkit.io.interactions import read_interactions
from cl_toolkit.pipeline import pretrain
from cl_toolkit.recdata import split, write_split
from cl_toolkit.receval import evaluate
from cl_toolkit.recommend import embed_field, recommend


def train(method, data, out, epochs=4, **over):
    cfg = resolve_config({"method": method, "data": str(data), "out": str(out), "epochs": epochs, "batch_size": 64,
                          "threads": 1, "checkpoint_every": 1000, **over})
    return pretrain(cfg, force=True, quiet=True)


@pytest.fixture(scope="module")
def loo(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "loo"
    write_split(split(read_interactions(SAMPLES / "rec"), "loo"), out)
    return out


def _lists(recs):
    return {r["user"]: [x["item"] for x in r["items"]] for r in recs}


def test_twotower_recommends_unseen_items_and_learns(loo, tmp_path):
    s = train("twotower", loo / "sample.train.inter", tmp_path / "tt", epochs=15)
    assert s["complete"] and s["steps"] == 15 * (829 // 64)
    recs = list(recommend(tmp_path / "tt", k=10))
    train_data = read_interactions(loo / "sample.train.inter")
    seen = {}
    for u, i in zip(train_data.users, train_data.items):
        seen.setdefault(u, set()).add(i)
    assert len(recs) == 60
    for r in recs:
        items = [x["item"] for x in r["items"]]
        assert len(items) == 10 and not set(items) & seen[r["user"]]
        assert [x["score"] for x in r["items"]] == sorted((x["score"] for x in r["items"]), reverse=True)
    everything = list(recommend(tmp_path / "tt", k=90, include_seen=True))
    assert any(set(x["item"] for x in r["items"]) & seen[r["user"]] for r in everything)
    assert all(len(r["items"]) == 90 for r in everything)     # the whole catalogue, cold items included
    m = evaluate(_lists(recs), read_interactions(loo / "sample.valid.inter"), train_data)
    assert m["hr@10"] > 0.3                                   # random ranking of ~76 unseen items: ~0.13
    metrics = [json.loads(x) for x in (tmp_path / "tt" / "metrics.jsonl").read_text().splitlines()]
    assert "effective_rank" in metrics[-1] and metrics[-1]["loss"] < metrics[0]["loss"]


def test_twotower_resume_is_exact(loo, tmp_path):
    data = loo / "sample.train.inter"
    train("twotower", data, tmp_path / "full", epochs=3)
    cfg = resolve_config({"method": "twotower", "data": str(data), "out": str(tmp_path / "cut"), "epochs": 3,
                          "batch_size": 64, "threads": 1, "checkpoint_every": 1000})
    first = pretrain(cfg, quiet=True, stop_at_step=10)
    assert not first["complete"]
    again = pretrain(TrainConfig(out=str(tmp_path / "cut")), resume=True, quiet=True)
    assert again["complete"] and again["steps"] == 3 * (829 // 64)
    for tower in ("item", "user"):
        a = load_file(str(tmp_path / "full" / "encoder" / tower / "model.safetensors"))
        b = load_file(str(tmp_path / "cut" / "encoder" / tower / "model.safetensors"))
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_featmask_cold_items_candidates_and_embed(samples, tmp_path):
    parts = split(read_interactions(samples / "rec"), "cold-items", cold_share=0.1)
    write_split(parts, tmp_path / "cold")
    s = train("featmask", tmp_path / "cold" / "sample.train.inter", tmp_path / "fm", epochs=3,
              method_config={"masking": "mixed", "ssl_batch": 32})
    assert s["complete"]
    cold = sorted(set(parts["test"].items))
    (tmp_path / "cold.txt").write_text("\n".join(cold) + "\n")
    recs = list(recommend(tmp_path / "fm", k=5, candidates=str(tmp_path / "cold.txt")))
    assert recs and all({x["item"] for x in r["items"]} <= set(cold) and len(r["items"]) == 5 for r in recs)
    emb, meta, info = embed_field(tmp_path / "fm", "item", out=str(tmp_path / "emb"))
    assert emb.shape == (90, 64) and info["field"] == "item"
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    ids = [m["id"] for m in meta]
    assert set(cold) <= set(ids) and "i089" in ids                  # never-seen items embedded from features
    assert len({tuple(np.round(emb[ids.index(c)], 4)) for c in cold}) == len(cold)  # and not all alike
    users, umeta, _ = embed_field(tmp_path / "fm", "user")
    assert users.shape[0] == len(set(parts["train"].users)) and umeta[0]["history"] > 0
    with pytest.raises(InputError, match="not in the catalogue"):
        list(recommend(tmp_path / "fm", candidates=str(_write(tmp_path / "bad.txt", "nope\n"))))


def _write(p, text):
    p.write_text(text)
    return p


def test_twin_embeds_items_and_scores_by_history(loo, tmp_path):
    s = train("twin", loo / "sample.train.inter", tmp_path / "tw", epochs=20, method_config={"w2v_epochs": 5})
    assert s["complete"]
    assert not (tmp_path / "tw" / "encoder" / "user").exists()
    emb, meta, _ = embed_field(tmp_path / "tw", "item")
    users, umeta, _ = embed_field(tmp_path / "tw", "user")
    train_data = read_interactions(loo / "sample.train.inter")
    ids = [m["id"] for m in meta]
    u0 = umeta[0]["id"]
    hist = [i for u, i in zip(train_data.users, train_data.items) if u == u0]
    mean = emb[[ids.index(i) for i in hist]].mean(0)
    assert np.allclose(users[0], mean / np.linalg.norm(mean), atol=1e-5)
    recs = list(recommend(tmp_path / "tw", users=str(_write(tmp_path / "u.txt", f"{u0}\n")), k=5))
    top = [x["item"] for x in recs[0]["items"]]
    scores = emb[[ids.index(i) for i in top]] @ users[0]
    assert np.allclose(scores, [x["score"] for x in recs[0]["items"]], atol=1e-4) and not set(top) & set(hist)

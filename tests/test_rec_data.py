"""Interaction files (atomic and JSONL), splits, metrics and baselines on the synthetic sample."""

import json

import pytest

from cl_toolkit.io import InputError
from cl_toolkit.io.interactions import read_id_list, read_interactions, read_recommendations
from cl_toolkit.recbaselines import BASELINES
from cl_toolkit.recdata import build_spec, encode, split, time_order, write_split
from cl_toolkit.receval import evaluate, rec_metrics


@pytest.fixture
def rec(samples):
    return samples / "rec"


def test_atomic_and_jsonl_read_the_same_data(rec):
    a = read_interactions(rec)                                   # a folder: sample.inter + .item + .user
    b = read_interactions(rec / "interactions.jsonl", items=rec / "items.jsonl")
    assert len(a) == len(b) == 949
    assert a.users == b.users and a.items == b.items and a.ts == b.ts
    assert a.item_file.endswith("sample.item") and a.user_table is not None
    assert a.item_table.schema == {"title": "text", "year": "token", "genres": "token_seq", "price": "float"}
    assert b.item_table.schema == a.item_table.schema
    assert a.item_table.rows["i000"] == {"title": "Strike Bullet", "year": "1990", "genres": ["action"],
                                         "price": 15.74}
    assert b.item_table.rows["i000"] == a.item_table.rows["i000"]
    assert len(a.catalogue()) == 90                              # the 10 cold items come from the item file


@pytest.mark.parametrize("name,text,where", [
    ("bad.inter", "user_id:token\titem_id:token\trating:float\nu1\ti1\t4\nu2\ti2\tfour\n",
     "bad.inter:3: field 'rating'"),
    ("bad.inter", "user_id:token\titem_id:token\nu1\ti1\nu2\n", "bad.inter:3: 1 tab-separated columns"),
    ("bad.inter", "user_id:token\titem_id:token\nu1\t\n", "bad.inter:2: field 'item_id': missing"),
    ("bad.inter", "user_id:token\titem:tokn\n", "bad.inter:1: field 'item': unknown type"),
    ("bad.inter", "user_id:token\trating:float\nu1\t3\n", "bad.inter:1: header has no 'item_id'"),
    ("bad.jsonl", '{"user": "u1", "item": "i1"}\n{"user": "u1", "item": "i2", "ts": "yesterday"}\n',
     "bad.jsonl:2: field 'ts'"),
    ("bad.jsonl", '{"user": "u1"}\n', "bad.jsonl:1: field 'item': missing"),
    ("bad.jsonl", '{"user": "u1", "item": {"x": 1}}\n', "bad.jsonl:1: field 'item'"),
])
def test_bad_interaction_lines(tmp_path, name, text, where):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError) as e:
        read_interactions(p)
    assert str(e.value).startswith(str(tmp_path / where)), str(e.value)


def test_bad_item_lines(tmp_path, rec):
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "i1", "genres": ["a"]}\n{"id": "i2", "genres": "a"}\n')
    with pytest.raises(InputError, match=r"items.jsonl:2: field 'genres': is a token here but a token_seq on line 1"):
        read_interactions(rec / "interactions.jsonl", items=items)
    atomic = tmp_path / "x.item"
    atomic.write_text("item_id:token\tprice:float\ni1\t3\ni1\t4\n")
    with pytest.raises(InputError, match=r"x.item:3: field 'item_id': duplicate id"):
        read_interactions(rec / "interactions.jsonl", items=atomic)


def test_missing_builtin_or_path_is_one_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_interactions(tmp_path / "nope.inter")
    with pytest.raises(InputError, match="expected one NAME.inter in the folder, found 0"):
        read_interactions(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="expected a folder"):
        read_interactions(tmp_path / "a.txt")


def test_loo_split_time_order_ties_and_leaks(rec, tmp_path):
    data = read_interactions(rec)
    parts = split(data, "loo")
    again = split(read_interactions(rec), "loo")
    assert parts["test"].lines == again["test"].lines and parts["valid"].lines == again["valid"].lines
    train, valid, test = (set(parts[k].lines) for k in ("train", "valid", "test"))
    assert not train & test and not train & valid and not valid & test
    assert len(train) + len(valid) + len(test) == len(data)
    order = time_order(data)
    for _u, rows in order.items():
        last = data.lines[rows[-1]]
        assert last in test
        assert data.lines[rows[-2]] in valid
        assert max(data.ts[r] for r in rows if data.lines[r] in train) <= data.ts[rows[-2]]
    # ties keep file order: two interactions at the same time -> the later line is the test one
    p = tmp_path / "tie.inter"
    p.write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ta\t5\nu\tb\t9\nu\tc\t9\nu\td\t1\n")
    t = split(read_interactions(p), "loo")
    assert t["test"].items == ["c"] and t["valid"].items == ["b"] and t["train"].items == ["a", "d"]


def test_ratio_and_cold_item_splits(rec):
    data = read_interactions(rec)
    a, b = split(data, "ratio", seed=3), split(data, "ratio", seed=3)
    assert a["test"].lines == b["test"].lines
    assert split(data, "ratio", seed=4)["test"].lines != a["test"].lines
    assert not set(a["train"].lines) & set(a["test"].lines)
    assert 0.07 < len(a["test"]) / len(data) < 0.13
    cold = split(data, "cold-items", seed=0, cold_share=0.1)
    train_items = set(cold["train"].items)
    assert not train_items & set(cold["test"].items) and not train_items & set(cold["valid"].items)
    assert not set(cold["test"].items) & set(cold["valid"].items)
    assert len(set(cold["test"].items)) == 8                  # 10% of the 80 items with interactions
    assert split(data, "cold-items", seed=0)["test"].lines == cold["test"].lines
    with pytest.raises(InputError, match="unknown protocol"):
        split(data, "kfold")


def test_write_split_atomic_and_jsonl(rec, tmp_path):
    parts = split(read_interactions(rec), "loo")
    s = write_split(parts, tmp_path / "loo")
    assert sorted(p.name for p in (tmp_path / "loo").iterdir()) == [
        "sample.item", "sample.test.inter", "sample.train.inter", "sample.user", "sample.valid.inter"]
    back = read_interactions(tmp_path / "loo" / "sample.train.inter")   # finds sample.item beside it
    assert back.items == parts["train"].items and back.item_table is not None
    assert s["counts"]["test"]["interactions"] == len(parts["test"])
    with pytest.raises(InputError, match="already exists"):
        write_split(parts, tmp_path / "loo")
    j = split(read_interactions(rec / "interactions.jsonl", items=rec / "items.jsonl"), "loo")
    write_split(j, tmp_path / "j")
    back = read_interactions(tmp_path / "j" / "test.jsonl", items=tmp_path / "j" / "items.jsonl")
    assert back.items == j["test"].items == parts["test"].items


def test_metrics_hand_values():
    pred = {"a": ["x", "y", "z"], "b": ["z", "w"], "extra": ["x"]}
    test = {"a": {"y"}, "b": {"q", "w"}, "c": {"x"}}          # c has no prediction: a miss
    m = rec_metrics(pred, test, ks=(1, 2), catalogue={"x", "y", "z", "w", "q"})
    assert m["hr@1"] == 0 and m["hr@2"] == pytest.approx(2 / 3)
    assert m["recall@2"] == pytest.approx((1 + 0.5) / 3)
    import math
    ndcg_a = (1 / math.log2(3)) / 1
    ndcg_b = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["ndcg@2"] == pytest.approx((ndcg_a + ndcg_b) / 3)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 2) / 3)
    assert m["coverage@1"] == pytest.approx(2 / 5) and m["users_without_predictions"] == 1
    assert m["predicted_users_not_in_test"] == 1
    # seen items are dropped before scoring: y moves up to rank 1 for user a
    m2 = rec_metrics(pred, test, ks=(1,), seen={"a": {"x"}})
    assert m2["hr@1"] == pytest.approx(1 / 3) and m2["seen_items_dropped"] == 1


def test_baselines_rank_and_exclude_history(rec):
    data = read_interactions(rec)
    parts = split(data, "loo")
    train = parts["train"]
    users, items = sorted(set(train.users)), train.catalogue()
    seen = {}
    for u, i in zip(train.users, train.items):
        seen.setdefault(u, set()).add(i)
    results = {}
    for name, fn in BASELINES.items():
        recs = list(fn(train, users, items, k=10))
        assert len(recs) == len(users)
        for r in recs:
            ids = [x["item"] for x in r["items"]]
            assert len(ids) == 10 and not set(ids) & seen[r["user"]]
            scores = [x["score"] for x in r["items"]]
            assert scores == sorted(scores, reverse=True)
        results[name] = evaluate({r["user"]: [x["item"] for x in r["items"]] for r in recs}, parts["test"], train)
    # the sample's users like two genres: the content baseline must beat random ranking
    assert results["feature-profile"]["hr@10"] > results["random"]["hr@10"]
    cold = split(data, "cold-items")
    cands = sorted(set(cold["test"].items))
    recs = list(BASELINES["feature-profile"](cold["train"], sorted(set(cold["test"].users)), data.catalogue(), k=5,
                                             candidates=cands))
    assert all({x["item"] for x in r["items"]} <= set(cands) for r in recs)


def test_feature_encoding(rec):
    data = read_interactions(rec)
    spec = build_spec(data.item_table, sorted(set(data.items)))
    assert spec.names == ["id", "title", "year", "genres", "price"]
    arr = encode(spec, ["i000", "i089", "zzz"], data.item_table)
    assert arr["id"][2, 0] == 0 and arr["id"][1, 0] == 0        # unknown / cold ids embed as zeros
    assert arr["id"][0, 0] > 0 and (arr["genres"][0] > 0).sum() == 1
    assert (arr["title"][2] == 0).all() and arr["price"].shape == (3, 1)
    assert json.loads(json.dumps(spec.to_json()))["fields"][0]["vocab"][0] == "i000"


def test_id_lists_and_recommendations_file(tmp_path, rec):
    p = tmp_path / "c.txt"
    p.write_text("i003\n\ni001\ni003\n")
    assert read_id_list(p) == ["i003", "i001"]
    assert read_id_list(rec / "items.jsonl")[:2] == ["i000", "i001"]
    r = tmp_path / "r.jsonl"
    r.write_text('{"user": "u1", "items": [{"item": "a", "score": 1}]}\n{"user": "u1", "items": []}\n')
    with pytest.raises(InputError, match="r.jsonl:2: field 'user': user 'u1' appears twice"):
        read_recommendations(r)


def test_large_catalogues_rank_through_faiss(monkeypatch):
    """Above EXACT_MAX items the top k come from an HNSW index: the same lists as exact search on
    a small set, seen items still excluded, candidates still respected."""
    import numpy as np

    from cl_toolkit.index import rank as recrank

    rng = np.random.default_rng(0)
    u = rng.normal(size=(20, 16)).astype(np.float32)
    v = rng.normal(size=(300, 16)).astype(np.float32)
    users, items = [f"u{i}" for i in range(20)], [f"i{j}" for j in range(300)]
    seen = {"u0": {"i1", "i2"}, "u3": {f"i{j}" for j in range(50)}}
    exact = list(recrank.rank_vectors(u, v, users, items, seen, k=10))
    monkeypatch.setattr(recrank, "EXACT_MAX", 100)
    approx = list(recrank.rank_vectors(u, v, users, items, seen, k=10))
    same = np.mean([len({x["item"] for x in a["items"]} & {x["item"] for x in b["items"]}) / 10
                    for a, b in zip(exact, approx)])
    assert same >= 0.95
    assert all(not {x["item"] for x in r["items"]} & seen.get(r["user"], set()) and len(r["items"]) == 10
               for r in approx)
    cands = [f"i{j}" for j in range(0, 300, 2)]
    assert all({x["item"] for x in r["items"]} <= set(cands)
               for r in recrank.rank_vectors(u, v, users, items, seen, k=5, candidates=cands))

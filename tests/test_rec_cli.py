"""The recommendation flow from the command line on data_samples/rec: split -> pretrain ->
recommend -> eval rec, and bad input as one line with exit 2."""

import json

from conftest import one_line_error


def test_cli_split_pretrain_recommend_eval(cli, samples, tmp_path):
    r = cli("split", samples / "rec" / "interactions.jsonl", "--items", samples / "rec" / "items.jsonl",
            "--out", tmp_path / "loo", "--protocol", "loo")
    assert r.returncode == 0, r.stderr
    files = json.loads(r.stdout)["files"]
    assert sorted(files) == ["items", "test", "train", "valid"]
    r = cli("pretrain", "--method", "featmask", "--data", files["train"], "--items", files["items"],
            "--out", tmp_path / "run", "--epochs", "3", "--batch-size", "64", "--threads", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["complete"]
    users = sorted({json.loads(x)["user"] for x in (tmp_path / "loo" / "train.jsonl").read_text().splitlines()})
    r = cli("recommend", tmp_path / "run", "--users", "-", "--k", "100", "--out", tmp_path / "recs.jsonl",
            input="\n".join(users) + "\n")            # the user list from stdin
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in (tmp_path / "recs.jsonl").read_text().splitlines()]
    seen = {}
    for line in (tmp_path / "loo" / "train.jsonl").read_text().splitlines():
        x = json.loads(line)
        seen.setdefault(x["user"], set()).add(x["item"])
    assert len(recs) == 60    # --k 100 > catalogue: every item the user has not seen, best first
    assert all(len(x["items"]) == 90 - len(seen[x["user"]]) for x in recs)
    r = cli("eval", "rec", "--pred", tmp_path / "recs.jsonl", "--test", files["test"], "--train", files["train"],
            "--k", "10,20")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["users"] == 60 and m["ranking"] == "full" and 0 <= m["ndcg@10"] <= m["hr@10"] <= 1
    assert m["seen_items_dropped"] == 0 and "coverage@10" in m
    r = cli("embed", tmp_path / "run", "--field", "item", "--out", tmp_path / "emb")
    assert r.returncode == 0 and json.loads(r.stdout)["count"] == 90, r.stderr


def test_cli_bad_interactions_one_line(cli, tmp_path):
    bad = tmp_path / "bad.inter"
    bad.write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t10\nu1\ti2\tlater\n")
    one_line_error(cli("split", bad, "--out", tmp_path / "s"), "bad.inter:3", "timestamp")
    j = tmp_path / "bad.jsonl"
    j.write_text('{"user": "u1", "item": "i1"}\n{"user": "u2"}\n')
    one_line_error(cli("eval", "rec", "--pred", j, "--test", j), "bad.jsonl:1", "'items'")
    assert not (tmp_path / "s").exists()


def _loo(samples, out):
    from cl_toolkit.io.interactions import read_interactions
    from cl_toolkit.recdata import split, write_split

    return write_split(split(read_interactions(samples / "rec" / "sample.inter"), "loo"), out)["files"]


def test_cli_sequence_pretrain_recommend_new_session_eval(cli, samples, tmp_path):
    files = _loo(samples, tmp_path / "loo")
    r = cli("pretrain", "--method", "cl4srec", "--data", files["train"], "--out", tmp_path / "run", "--epochs", "2",
            "--batch-size", "32", "--threads", "1", "--quiet", "--set", "max_length=20", "--set", "dim=32")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["complete"] and (tmp_path / "run" / "encoder" / "sequence" / "sequence.json").is_file()
    session = tmp_path / "session.jsonl"
    session.write_text('{"user": "visitor", "item": "i003", "ts": 1}\n{"user": "visitor", "item": "i009", "ts": 2}\n')
    r = cli("recommend", tmp_path / "run", "--k", "5", "--history", session, "--out", tmp_path / "recs.jsonl")
    assert r.returncode == 0, r.stderr
    recs = {x["user"]: x["items"] for x in map(json.loads, (tmp_path / "recs.jsonl").read_text().splitlines())}
    assert len(recs) == 61 and len(recs["visitor"]) == 5                   # 60 users + the new session
    assert not {"i003", "i009"} & {x["item"] for x in recs["visitor"]}
    r = cli("eval", "rec", "--pred", tmp_path / "recs.jsonl", "--test", files["test"], "--train", files["train"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["users"] == 60


def test_cli_graph_pretrain_recommend_eval(cli, samples, tmp_path):
    files = _loo(samples, tmp_path / "loo")
    r = cli("pretrain", "--method", "simgcl", "--data", files["train"], "--out", tmp_path / "run", "--epochs", "3",
            "--batch-size", "256", "--threads", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["complete"] and (tmp_path / "run" / "encoder" / "graph" / "graph.json").is_file()
    r = cli("recommend", tmp_path / "run", "--k", "100")                    # more than the catalogue: every unseen item
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    scores = [x["score"] for x in recs[0]["items"]]
    assert len(recs) == 60 and scores == sorted(scores, reverse=True)
    r = cli("eval", "rec", "--pred", "-", "--test", files["test"], "--train", files["train"], input=r.stdout)
    assert r.returncode == 0, r.stderr
    assert 0 < json.loads(r.stdout)["hr@10"] <= 1

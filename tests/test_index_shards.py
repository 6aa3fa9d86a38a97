"""Sharded IVF builds (cltk build-index --shards K / --shard I/K / --merge): the merged index is the
unsharded one, cltk match searches it unchanged, and bad usage is one line and exit 2."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
import pytest
from conftest import one_line_error

from cl_toolkit import cli
from cl_toolkit import index as ix
from cl_toolkit.io import InputError, write_embeddings


def clustered(n: int, d: int, seed: int = 0, clusters: int = 30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return (centres[rng.integers(0, clusters, n)] + 0.7 * rng.normal(size=(n, d))).astype(np.float32)


def emb_folder(path: Path, x: np.ndarray, prefix: str = "v") -> Path:
    write_embeddings(path, x, [{"id": f"{prefix}{i}", "n": i} for i in range(len(x))], {"model": "runs/m"})
    return path


def run(monkeypatch, capsys, *args) -> SimpleNamespace:
    """``cltk ARGS`` in this process, through ``cli.main`` (exit codes, one-line errors)."""
    monkeypatch.setattr(sys, "argv", ["cltk", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=e.value.code, stdout=out, stderr=err)


@pytest.mark.parametrize("factory,metric", [("IVF32,Flat", "ip"), ("IVF32,SQ8", "l2")])
def test_sharded_build_is_the_unsharded_index(tmp_path, factory, metric):
    x = clustered(4000, 24)
    meta = [{"id": f"v{i}", "n": i} for i in range(len(x))]
    a = ix.build(x, meta, tmp_path / "a", kind=factory, metric=metric, target_recall=0.9, seed=3)

    work = tmp_path / "b"
    plan = ix.train_shared(x, meta, work, shards=4, kind=factory, metric=metric, seed=3)
    assert plan["factory"] == factory and plan["ranges"][0][0] == 0 and plan["ranges"][-1][1] == 4000
    for i in (3, 1, 0, 2):                                   # shards may finish in any order
        rec = ix.build_shard(work, x, i)
        assert (work / "shards" / f"shard-{i:04d}.faiss").is_file() and rec["rows"] == plan["ranges"][i]
    b = ix.merge_shards(work, x, meta, target_recall=0.9)
    assert {p.name for p in work.iterdir()} == {"index.faiss", "meta.jsonl", "info.json"}
    ids = [r["ids"] for r in b["sharding"]["per_shard"]]
    assert ids[0][0] == 0 and all(p[1] == q[0] for p, q in zip(ids, ids[1:])) and ids[-1][1] == 4000 - 400

    # the same trained quantizer, the same rows in the same lists: the same index, byte for byte
    assert (tmp_path / "a" / "index.faiss").read_bytes() == (work / "index.faiss").read_bytes()
    assert (tmp_path / "a" / "meta.jsonl").read_text() == (work / "meta.jsonl").read_text()
    assert b["recall_at_10"] == a["recall_at_10"] and b["search_params"] == a["search_params"]
    assert b["count"] == 4000 and b["train_size"] == a["train_size"] and b["sharding"]["shards"] == 4
    ia, _, _ = ix.load(tmp_path / "a")
    ib, _, _ = ix.load(work)
    q = clustered(200, 24, seed=7)
    for nprobe in (1, 4, 32):
        ix.set_params(ia, {"nprobe": nprobe})
        ix.set_params(ib, {"nprobe": nprobe})
        sa, ra = ix.search(ia, q, 10, normalize=metric == "ip")
        sb, rb = ix.search(ib, q, 10, normalize=metric == "ip")
        assert np.array_equal(ra, rb) and np.array_equal(sa, sb)


def test_cli_shards_then_match_and_the_multi_machine_steps(tmp_path, monkeypatch, capsys):
    x = clustered(3000, 16, clusters=20)
    emb = emb_folder(tmp_path / "emb", x)
    q = emb_folder(tmp_path / "q", x[:20] + 0.05, "q")
    r = run(monkeypatch, capsys, "build-index", emb, "--out", tmp_path / "idx", "--shards", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    factory = summary["factory"]
    assert factory == f"IVF{ix.choose._nlist(3000)},Flat" and summary["shards"] == 2 and summary["count"] == 3000
    assert {p.name for p in tmp_path.iterdir()} == {"emb", "q", "idx"}      # no work folder left behind

    r = run(monkeypatch, capsys, "match", q, "--index", tmp_path / "idx", "--k", "5")
    assert r.returncode == 0, r.stderr
    matched = r.stdout
    assert len(matched.splitlines()) == 20 and len(json.loads(matched.splitlines()[0])["neighbors"]) == 5
    ix.build(x, [{"id": f"v{i}", "n": i} for i in range(3000)], tmp_path / "plain", kind=factory,
             emb_info={"model": "runs/m"})                  # unsharded, same parameters: the same answers
    assert run(monkeypatch, capsys, "match", q, "--index", tmp_path / "plain", "--k", "5").stdout == matched

    # the same build in steps, as on several machines: train once, shards anywhere, merge
    steps = tmp_path / "steps"
    r = run(monkeypatch, capsys, "build-index", emb, "--out", steps, "--shards", "2", "--train-only")
    assert r.returncode == 0 and json.loads(r.stdout)["ranges"] == [[0, 1500], [1500, 3000]], r.stderr
    assert run(monkeypatch, capsys, "build-index", emb, "--out", steps, "--shard", "1/2").returncode == 0
    one_line_error(run(monkeypatch, capsys, "build-index", emb, "--out", steps, "--merge"), "missing shard(s) 0 of 2")
    one_line_error(run(monkeypatch, capsys, "build-index", emb, "--out", steps, "--shard", "1/2"), "already exists")
    one_line_error(run(monkeypatch, capsys, "build-index", emb, "--out", steps, "--shard", "0/3"), "has 2 shards")
    other = emb_folder(tmp_path / "other", np.where(np.arange(3000)[:, None] == 10, 0.5, x).astype(np.float32))
    one_line_error(run(monkeypatch, capsys, "build-index", other, "--out", steps, "--shard", "0/2"), "rows 0..1500",
                   "differ")
    assert not (steps / "shards" / "shard-0000.faiss").exists()
    trained = (steps / "trained.faiss").read_bytes()
    (steps / "trained.faiss").write_bytes(trained[:-100])                   # an incomplete copy
    one_line_error(run(monkeypatch, capsys, "build-index", emb, "--out", steps, "--shard", "0/2"), "trained.faiss")
    (steps / "trained.faiss").write_bytes(trained)
    assert run(monkeypatch, capsys, "build-index", emb, "--out", steps, "--shard", "0/2").returncode == 0
    r = run(monkeypatch, capsys, "build-index", emb, "--out", steps, "--merge", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (steps / "index.faiss").read_bytes() == (tmp_path / "idx" / "index.faiss").read_bytes()
    assert run(monkeypatch, capsys, "match", q, "--index", steps, "--k", "5").stdout == matched
    one_line_error(run(monkeypatch, capsys, "build-index", emb, "--out", steps, "--merge"), "not a sharded build")


def test_bad_sharding_options_give_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    emb = emb_folder(tmp_path / "emb", clustered(600, 8))
    out = tmp_path / "idx"
    cases = [
        (["--shards", "0"], "--shards"),
        (["--shards", "2", "--kind", "HNSW32"], "needs an IVF index"),
        (["--shards", "2", "--kind", "Flat"], "needs an IVF index"),
        (["--shards", "2", "--kind", "IVF8,Flat,Refine(Flat)"], "needs an IVF index"),
        (["--train-only"], "--train-only needs --shards"),
        (["--shards", "2", "--append"], "--append"),
        (["--shards", "2", "--merge"], "give one of"),
        (["--shard", "2/2"], "0 <= I < K"),
        (["--shard", "one"], "I/K"),
        (["--shard", "0/2"], "not a sharded build"),
        (["--merge", "--kind", "IVF8,Flat"], "training step"),
        (["--shards", "2", "--target-recall", "2"], "--target-recall"),
    ]
    for args, words in cases:
        one_line_error(run(monkeypatch, capsys, "build-index", emb, "--out", out, *args), words)
        assert not out.exists(), args
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temporary folders left
    assert run(monkeypatch, capsys, "build-index", emb, "--out", out, "--shards", "2").returncode == 0
    one_line_error(run(monkeypatch, capsys, "build-index", emb, "--out", out, "--shards", "2"), "already exists")
    x = clustered(600, 8)
    ix.train_shared(x, [{"id": f"v{i}"} for i in range(600)], tmp_path / "w", shards=2)
    with pytest.raises(InputError, match="plan was made from"):
        ix.merge_shards(tmp_path / "w", x, [{"id": f"u{i}"} for i in range(600)])
    index = faiss.read_index(str(out / "index.faiss"))
    assert faiss.extract_index_ivf(index).ntotal == 600

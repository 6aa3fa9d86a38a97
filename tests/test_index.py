"""cl_toolkit.index and the build-index / eval retrieval commands, checked against brute force."""

import hashlib
import importlib
import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import one_line_error

from cl_toolkit import index as ix
from cl_toolkit.eval import read_pairs, retrieval_eval
from cl_toolkit.io import InputError, read_embeddings, write_embeddings


def clustered(n: int, d: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return (centres[rng.integers(0, clusters, n)] + 0.7 * rng.normal(size=(n, d))).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Brute-force ranking in numpy: the k best columns per row, best first."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def emb_folder(path: Path, x: np.ndarray, prefix: str = "v", model: str = "runs/m", **fields) -> Path:
    recs = [{"id": f"{prefix}{i}", **{k: v[i] for k, v in fields.items()}} for i in range(len(x))]
    write_embeddings(path, x, recs, {"model": model, "dim": x.shape[1]})
    return path


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------- exact search

@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_exact_index_returns_the_brute_force_answer(tmp_path, metric):
    x = clustered(3000, 24)
    meta = [{"id": f"v{i}", "n": i} for i in range(len(x))]
    info = ix.build(x, meta, tmp_path / "idx", metric=metric)
    assert info["factory"] == "Flat" and info["recall_at_10"] == 1.0 and info["normalized"] == (metric == "ip")
    index, imeta, _ = ix.load(tmp_path / "idx")
    assert sorted(r["id"] for r in imeta) == sorted(r["id"] for r in meta)
    q = clustered(40, 24, seed=1)
    scores, rows = ix.search(index, q, 10, normalize=metric == "ip")
    if metric == "ip":
        sims = unit(q) @ unit(x).T
    else:
        sims = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    want = top_k(sims, 10)
    got = np.array([[int(imeta[j]["id"][1:]) for j in row] for row in rows])
    assert (got == want).all()
    want_scores = np.take_along_axis(sims, want, 1)
    assert np.allclose(scores, want_scores if metric == "ip" else -want_scores, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- measured recall

@pytest.mark.parametrize("kind", ["IVF64,Flat", "HNSW16"])
def test_recall_in_info_agrees_with_an_independent_recount(tmp_path, kind):
    x = clustered(12000, 32, clusters=30)
    meta = [{"id": f"v{i}"} for i in range(len(x))]
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)                           # a single-threaded HNSW build is deterministic
    try:
        info = ix.build(x, meta, tmp_path / "idx", kind=kind, target_recall=0.9, seed=3)
    finally:
        faiss.omp_set_num_threads(threads)
    rec = info["recall"]
    assert info["factory"] == kind and rec["queries"] == 1000 and rec["k"] == 10 and rec["target_met"]

    # recount without cltk: raw faiss index, numpy brute force, the held-out rows are the last ones
    index = faiss.read_index(str(tmp_path / "idx" / "index.faiss"))
    order = [int(json.loads(line)["id"][1:]) for line in (tmp_path / "idx" / "meta.jsonl").read_text().splitlines()]
    v = unit(x[order])
    n, nq = len(v), rec["queries"]
    truth = top_k(v[n - nq:] @ v[:n - nq].T, 10)
    keep = faiss.IDSelectorRange(0, n - nq)            # search as if the held-out rows were not added yet

    if kind.startswith("HNSW"):                            # a graph without the held-out rows, as when measured
        faiss.omp_set_num_threads(1)
        try:
            graph = faiss.index_factory(32, kind, faiss.METRIC_INNER_PRODUCT)
            graph.add(v[:n - nq])
        finally:
            faiss.omp_set_num_threads(threads)

    def recall(value: int) -> np.ndarray:
        if kind.startswith("IVF"):
            _, found = index.search(v[n - nq:], 10, params=faiss.SearchParametersIVF(sel=keep, nprobe=value))
        else:
            _, found = graph.search(v[n - nq:], 10, params=faiss.SearchParametersHNSW(efSearch=value))
        return np.array([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])

    def passes(value: int) -> bool:                         # mean - 2 standard errors >= target
        r = recall(value)
        return r.mean() - 2 * r.std(ddof=1) / np.sqrt(len(r)) >= 0.9

    knob = "nprobe" if kind.startswith("IVF") else "efSearch"
    value = info["search_params"][knob]
    assert recall(value).mean() == pytest.approx(info["recall_at_10"], abs=2e-3)
    assert passes(value) and info["recall_at_10"] >= 0.9
    lowest = 1 if kind.startswith("IVF") else 16
    assert value == lowest or not passes(value - 1)          # the smallest setting that reaches the target
    assert info["qps"] > 0 and info["flat_qps"] > 0 and info["index_bytes"] > 0
    # load() applies the tuned setting
    loaded, _, _ = ix.load(tmp_path / "idx")
    applied = faiss.extract_index_ivf(loaded).nprobe if kind.startswith("IVF") else loaded.hnsw.efSearch
    assert applied == value


def test_tune_reports_a_missed_target():
    x = unit(clustered(2500, 16))
    index = ix.make_index("IVF32,PQ2x4", 16, "ip")
    index.train(x)
    index.add(x[:2000])
    truth = top_k(x[2000:] @ x[:2000].T, 10)
    res = ix.tune(index, x[2000:], truth, target=0.99)
    assert not res["target_met"] and res["recall"] < 0.99 and res["params"]["nprobe"] == 32


def test_fill_trains_on_a_seeded_sample_and_adds_every_row(monkeypatch):
    x = unit(clustered(32_000, 16))                             # above the 30,000-row training sample

    def filled(seed: int) -> bytes:
        index = ix.make_index("IVF16,Flat", 16, "ip")
        ix.fill(index, x, seed=seed)
        assert index.is_trained and index.ntotal == len(x)
        return faiss.serialize_index(index).tobytes()

    assert filled(0) == filled(0) != filled(1)                  # the training sample is the seed's

    monkeypatch.setattr(importlib.import_module("cl_toolkit.index.build"), "ADD_BATCH", 1000)
    calls = []
    ix.fill(ix.make_index("Flat", 16, "ip"), x[:3000], progress=calls.append)
    assert calls == [1000, 1000, 1000]                          # in build's batches
    calls.clear()
    ix.fill(ix.make_index("HNSW8", 16, "ip"), x[:3000], progress=calls.append)
    assert calls == [3000]                                      # HNSW: one add call


# ---------------------------------------------------------------- auto choice

def test_choose_factory_follows_size_and_memory():
    assert ix.choose_factory(10_000, 384) == "Flat"
    assert ix.choose_factory(300_000, 384, max_memory=8 << 30) == "HNSW32"
    raw = 300_000 * 384 * 4
    assert ix.choose_factory(300_000, 384, max_memory=raw + (20 << 20)) == "IVF2048,Flat"
    assert ix.choose_factory(5_000_000, 384, max_memory=64 << 30).endswith(",Flat")
    f = ix.choose_factory(1_000_000, 384, max_memory=ix.parse_memory("512M"))
    assert f == "IVF4096,SQ8"
    f = ix.choose_factory(1_000_000, 384, max_memory=ix.parse_memory("64M"))
    assert f.startswith("OPQ") and ix.estimate_memory(f, 1_000_000, 384) <= 64 << 20
    ix.make_index(f, 384, "ip")                             # a valid factory string
    assert ix.parse_memory("1.5G") == 3 << 29 and ix.parse_memory("300MiB") == 300 << 20
    with pytest.raises(InputError, match="max-memory"):
        ix.parse_memory("lots")


def test_compressed_auto_index_stays_within_budget(tmp_path):
    x = clustered(60_000, 32, clusters=50)
    meta = [{"id": str(i)} for i in range(len(x))]
    budget = 60_000 * 32 * 4 // 3                        # the raw vectors do not fit
    info = ix.build(x, meta, tmp_path / "idx", max_memory=budget, target_recall=0.9)
    assert info["factory"].endswith(",SQ8") and info["index_bytes"] <= budget
    assert info["recall_at_10"] >= 0.9 and info["count"] == 60_000


# ---------------------------------------------------------------- CLI: build, append, errors

def test_build_index_cli_append_and_refusals(tmp_path, cli):
    x = clustered(1500, 16)
    a = emb_folder(tmp_path / "a", x[:1000], "a")
    b = emb_folder(tmp_path / "b", x[1000:], "b")
    idx = tmp_path / "idx"
    r = cli("build-index", a, "--out", idx, "--quiet")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["factory"] == "Flat" and summary["count"] == 1000 and summary["recall_at_10"] == 1.0
    info = json.loads((idx / "info.json").read_text())
    assert info["model"] == "runs/m" and info["metric"] == "ip" and info["dim"] == 16
    assert {"index.faiss", "meta.jsonl", "info.json"} == {p.name for p in idx.iterdir()}

    r = cli("build-index", b, "--out", idx, "--append")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["count"] == 1500
    index, meta, info = ix.load(idx)
    assert index.ntotal == 1500 and len(meta) == 1500 and len(info["appends"]) == 1
    _, rows = ix.search(index, x[1200:1201], 1, normalize=True)
    assert meta[rows[0, 0]]["id"] == "b200"

    before = digest(idx)
    r = cli("build-index", emb_folder(tmp_path / "c", clustered(50, 8), "c"), "--out", idx, "--append")
    one_line_error(r, "dimension 16", "8")
    assert digest(idx) == before                         # the refused append left the index untouched
    cases = [
        (clustered(50, 16), "runs/other", {}, "model"),
        (x[1000:1050], "runs/m", {}, "already in the index"),
        (clustered(50, 16), "runs/m", {"metric": "l2"}, "metric"),
    ]
    for vecs, model, kw, words in cases:
        meta = [{"id": f"b{i}"} for i in range(len(vecs))] if "already" in words else \
            [{"id": f"n{i}"} for i in range(len(vecs))]
        with pytest.raises(InputError, match=words):
            ix.build(vecs, meta, idx, append=True, emb_info={"model": model}, **kw)
        assert digest(idx) == before


def test_append_remeasures_recall_of_an_ivf_index(tmp_path):
    x = clustered(8000, 16)
    ids = [{"id": str(i)} for i in range(8000)]
    ix.build(x[:5000], ids[:5000], tmp_path / "idx", kind="IVF32,Flat", target_recall=0.9)
    info = ix.build(x[5000:], ids[5000:], tmp_path / "idx", append=True, target_recall=0.9)
    assert info["count"] == 8000 and info["recall"]["queries"] > 0 and info["recall_at_10"] >= 0.9
    assert "stale" not in info["recall"]


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, cli):
    good = clustered(100, 8)
    nan = good.copy()
    nan[7, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    one_line_error(cli("build-index", tmp_path / "nan.npy", "--out", tmp_path / "i1"), "NaN", "row 7")
    ok = emb_folder(tmp_path / "ok", good)
    one_line_error(cli("build-index", ok, "--out", tmp_path / "i1", "--kind", "IVF12,Bogus"), "factory", "IVF12,Bogus")
    assert not (tmp_path / "i1").exists()
    ids = [{"id": f"v{i}"} for i in range(100)]
    library_cases = [
        (lambda: ix.build(np.where(np.arange(100)[:, None] == 3, np.inf, good), ids, tmp_path / "i1"), "id 'v3'"),
        (lambda: ix.build(np.zeros((0, 8), np.float32), [], tmp_path / "i1"), "non-empty"),
        (lambda: ix.build(good, ids[:99], tmp_path / "i1"), "99 ids for 100 vectors"),
        (lambda: ix.build(good, ids, tmp_path / "i1", kind="IVF4096,Flat"), "cannot train"),
        (lambda: ix.load(tmp_path / "nothing"), "not an index folder"),
    ]
    for call, words in library_cases:
        with pytest.raises(InputError, match=words):
            call()
    assert not (tmp_path / "i1").exists()
    short = emb_folder(tmp_path / "short", good)
    lines = (short / "meta.jsonl").read_text().splitlines()
    (short / "meta.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(InputError, match="99 ids for 100 vectors"):
        read_embeddings(short)
    assert cli("build-index", ok, "--out", tmp_path / "i1").returncode == 0
    one_line_error(cli("build-index", ok, "--out", tmp_path / "i1"), "already exists")
    (tmp_path / "i1" / "index.faiss").write_bytes(b"\x00garbage" * 10)
    one_line_error(cli("match", ok, "--index", tmp_path / "i1"), "corrupt")
    with pytest.raises(InputError, match="corrupt"):
        ix.build(good, [{"id": f"n{i}"} for i in range(100)], tmp_path / "i1", append=True)


# ---------------------------------------------------------------- eval retrieval

def test_eval_retrieval_matches_a_numpy_count(tmp_path, cli):
    rng = np.random.default_rng(5)
    targets = clustered(400, 16, seed=2)
    queries = targets + 0.9 * rng.normal(size=targets.shape).astype(np.float32)
    labels = [str(i % 4) for i in range(400)]
    tq = emb_folder(tmp_path / "q", queries, "x", label=labels)
    tt = emb_folder(tmp_path / "t", targets, "x", label=labels)
    ranks = np.argsort(-(unit(queries) @ unit(targets).T), axis=1, kind="stable")
    first = np.argmax(ranks == np.arange(400)[:, None], axis=1)          # 0-based rank of the own target
    want = {f"recall@{k}": round(float((first < k).mean()), 4) for k in (1, 5, 10)}
    want["mrr"] = round(float(np.where(first < 100, 1 / (first + 1), 0).mean()), 4)

    r = cli("eval", "retrieval", "--queries", tq, "--targets", tt)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert {k: res[k] for k in want} == want and res["n_query"] == 400 and want["recall@1"] < 1

    idx = tmp_path / "idx"
    tmeta = [{"id": f"x{i}", "label": labels[i]} for i in range(400)]
    ix.build(targets, tmeta, idx, kind="Flat")
    res_idx = retrieval_eval(queries, tmeta, index_dir=str(idx))
    assert {k: res_idx[k] for k in want} == want

    # same label = relevant
    same = np.array(labels)[ranks] == np.array(labels)[:, None]
    r = retrieval_eval(queries, tmeta, targets, tmeta, match_field="label")
    assert r["recall@1"] == round(float(same[:, 0].mean()), 4)
    r = retrieval_eval(queries, tmeta, targets, tmeta, match_field="label", exclude_self=True)
    first_other = [next(j for j in ranks[i] if j != i) for i in range(400)]
    assert r["recall@1"] == round(float(np.mean([labels[j] == labels[i] for i, j in enumerate(first_other)])), 4)

    # explicit pairs: query x<i> -> target x<(i+1) % 400>; queries without a pair are left out
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"x{i}", "target": f"x{(i + 1) % 400}"}) + "\n"
                             for i in range(0, 400, 2)))
    r = retrieval_eval(queries, tmeta, targets, tmeta, pairs=read_pairs(str(pairs)))
    pos = np.argmax(ranks[::2] == ((np.arange(0, 400, 2) + 1) % 400)[:, None], axis=1)
    assert r["n_query"] == 200 and r["n_without_relevant"] == 200
    assert r["recall@10"] == round(float((pos < 10).mean()), 4)

    one_line_error(cli("eval", "retrieval", "--queries", tq), "--targets")

"""cltk match: output format, exclude-self, stdin/stdout, embedding on the fly with --model, refusals."""

import json
from pathlib import Path

import numpy as np
import pytest

from cl_toolkit import index as ix
from cl_toolkit.embed import embed
from cl_toolkit.io import InputError, write_embeddings
from cl_toolkit.match import read_queries


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    """A target embeddings folder with an extra field, its index, and a query folder."""
    root = tmp_path_factory.mktemp("match")
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(10, 12))[rng.integers(0, 10, 500)] + 0.5 * rng.normal(size=(500, 12))).astype(np.float32)
    targets = [{"id": f"t{i}", "label": i % 3} for i in range(500)]
    write_embeddings(root / "t", x, targets, {"model": "runs/m", "dim": 12})
    q = x[:20] + 0.3 * rng.normal(size=(20, 12)).astype(np.float32)
    write_embeddings(root / "q", q, [{"id": f"t{i}", "caption": f"c{i}"} for i in range(20)], {"model": "runs/m"})
    ix.build(x, targets, root / "idx", emb_info={"model": "runs/m"})
    return root, x, q


def test_match_output_is_the_brute_force_top_k_with_fields(vectors, cli):
    root, x, q = vectors
    r = cli("match", root / "q", "--index", root / "idx", "--k", "4")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(s) for s in r.stdout.splitlines()]
    want = np.argsort(-(unit(q) @ unit(x).T), axis=1)[:, :4]
    sims = unit(q) @ unit(x).T
    assert len(lines) == 20
    for i, rec in enumerate(lines):
        assert list(rec) == ["id", "caption", "neighbors"] and rec["id"] == f"t{i}" and rec["caption"] == f"c{i}"
        assert [n["id"] for n in rec["neighbors"]] == [f"t{j}" for j in want[i]]
        assert [n["label"] for n in rec["neighbors"]] == [int(j) % 3 for j in want[i]]
        assert np.allclose([n["score"] for n in rec["neighbors"]], sims[i, want[i]], atol=1e-5)

    # --exclude-self drops the target with the query's id (and still returns k)
    r = cli("match", root / "q", "--index", root / "idx", "--k", "4", "--exclude-self", "--out", root / "out.jsonl")
    assert r.returncode == 0 and r.stdout == "", r.stderr
    lines = [json.loads(s) for s in (root / "out.jsonl").read_text().splitlines()]
    for i, rec in enumerate(lines):
        ranked = [f"t{j}" for j in np.argsort(-sims[i]) if j != i][:4]
        assert [n["id"] for n in rec["neighbors"]] == ranked
    r = cli("match", root / "q", "--index", root / "idx", "--out", root / "out.jsonl")
    assert r.returncode == 2 and "already exists" in r.stderr


def test_match_reads_embedding_lines_from_stdin(vectors, cli):
    root, x, q = vectors
    text = "".join(json.dumps({"id": f"q{i}", "embedding": [float(v) for v in row]}) + "\n" for i, row in enumerate(q))
    r = cli("match", "-", "--index", root / "idx", "--k", "2", input=text)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(s) for s in r.stdout.splitlines()]
    want = np.argsort(-(unit(q) @ unit(x).T), axis=1)[:, :2]
    assert [[n["id"] for n in rec["neighbors"]] for rec in lines] == [[f"t{j}" for j in w] for w in want]
    assert "embedding" not in lines[0]

    bad = text.replace('"embedding": [', '"embedding": [1.0, ', 1)
    r = cli("match", "-", "--index", root / "idx", input=bad)
    assert r.returncode == 2 and "<stdin>:2: field 'embedding'" in r.stderr and len(r.stderr.splitlines()) == 1


def test_match_refuses_other_dimensions_and_models(vectors, tmp_path):
    root, x, q = vectors
    index, meta, info = ix.load(root / "idx")
    with pytest.raises(InputError, match="dimension 7 but the index has 12"):
        ix.check_compatible(info, 7, None)
    with pytest.raises(InputError, match="model"):
        ix.check_compatible(info, 12, "runs/other")
    ix.check_compatible(info, 12, "runs/m")
    ix.check_compatible(info, 12, str(Path.cwd() / "runs" / "m"))   # the same run given as an absolute path
    with pytest.raises(InputError, match="pass --model"):
        read_queries(str(root / "q" / "meta.jsonl"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run dir (1 epoch on the 50 sample images)."""
    from cl_toolkit.config import resolve_config
    from cl_toolkit.data import load_images
    from cl_toolkit.pipeline import pretrain

    root = tmp_path_factory.mktemp("run")
    samples = Path(__file__).resolve().parents[1] / "data_samples"
    cfg = resolve_config(dict(method="simclr", data=str(samples / "fashion"), out=str(root / "run"),
                              encoder="convnet-tiny", epochs=1, batch_size=16, threads=2))
    pretrain(cfg, data=load_images(str(samples / "fashion")), quiet=True)
    return root / "run"


def test_match_embeds_image_records_with_the_model(run, samples, tmp_path, cli):
    emb, records, _ = embed(str(run), str(samples / "images.jsonl"), out=str(tmp_path / "emb"))
    r = cli("build-index", tmp_path / "emb", "--out", tmp_path / "idx")
    assert r.returncode == 0, r.stderr
    r = cli("match", samples / "images.jsonl", "--model", run, "--index", tmp_path / "idx", "--k", "3")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(s) for s in r.stdout.splitlines()]
    assert len(lines) == 50
    for rec in lines:                                   # every image finds itself first
        assert rec["neighbors"][0]["id"] == rec["id"] and rec["neighbors"][0]["score"] > 0.999
        assert rec["label"] == rec["neighbors"][0]["label"] and len(rec["neighbors"]) == 3

    # stdin records resolve image paths from the working directory
    r = cli("match", "-", "--model", run / "encoder", "--index", tmp_path / "idx", "--k", "1", "--exclude-self",
            input=(samples / "images.jsonl").read_text(), cwd=samples)
    assert r.returncode == 0, r.stderr
    assert all(json.loads(s)["neighbors"][0]["id"] != json.loads(s)["id"] for s in r.stdout.splitlines())

    # an index of another dimension, or of another model's vectors, is refused with one line
    ix.build(np.ones((20, 7), np.float32), [{"id": str(i)} for i in range(20)], tmp_path / "idx7")
    r = cli("match", samples / "images.jsonl", "--model", run, "--index", tmp_path / "idx7")
    assert r.returncode == 2 and "dimension" in r.stderr and len(r.stderr.splitlines()) == 1
    ix.build(emb, [{"id": r["id"]} for r in records], tmp_path / "idxo", emb_info={"model": "runs/elsewhere"})
    r = cli("match", samples / "images.jsonl", "--model", run, "--index", tmp_path / "idxo")
    assert r.returncode == 2 and "model" in r.stderr and len(r.stderr.splitlines()) == 1

"""The whole slice through the CLI: pretrain -> kill -> resume -> embed -> eval knn."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest


def test_pretrain_kill_resume_embed_eval(tmp_path, cli, samples):
    run = tmp_path / "run"
    args = ["pretrain", "--method", "simclr", "--data", samples / "fashion", "--out", run, "--encoder",
            "convnet-tiny", "--epochs", "60", "--batch-size", "16", "--checkpoint-every", "2", "--quiet",
            "--seed", "3", "--set", "log_every=1"]
    proc = subprocess.Popen([sys.executable, "-m", "cl_toolkit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ckpt = run / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (run / "encoder").exists()

    r = cli("pretrain", "--out", run, "--resume", "--quiet")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["complete"] and summary["steps"] == 60 * (50 // 16)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, summary["steps"] + 1))

    emb = tmp_path / "emb"
    r = cli("embed", run, "--input", samples / "images.jsonl", "--out", emb, "--quiet")
    assert r.returncode == 0, r.stderr
    vecs = np.load(emb / "embeddings.npy")
    meta = [json.loads(x) for x in (emb / "meta.jsonl").read_text().splitlines()]
    info = json.loads((emb / "info.json").read_text())
    assert vecs.shape == (50, info["dim"]) and vecs.dtype == np.float32 and len(meta) == 50
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert meta[0]["id"] == "fmnist-test-00040" and meta[0]["label"] == "shirt" and "image" in meta[0]

    r = cli("embed", run, "--input", samples / "images.jsonl", "--out", emb)
    assert r.returncode == 2 and "already exists" in r.stderr

    # kNN: the first 30 images as the bank, the other 20 as queries, against a hand computation
    from cl_toolkit.io import write_embeddings

    write_embeddings(tmp_path / "bank", vecs[:30], meta[:30], info)
    write_embeddings(tmp_path / "query", vecs[30:], meta[30:], info)
    r = cli("eval", "knn", "--bank", tmp_path / "bank", "--query", tmp_path / "query", "--k", "5")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    classes = sorted({m["label"] for m in meta[:30]})
    sims = vecs[30:] @ vecs[:30].T
    hits = 0
    for q, row in zip(meta[30:], sims):
        votes = {}
        for j in np.argsort(-row)[:5]:
            votes[meta[j]["label"]] = votes.get(meta[j]["label"], 0.0) + np.exp(row[j] / 0.07)
        best = max(classes, key=lambda c: votes.get(c, 0.0))
        hits += best == q["label"]
    assert res["n_query"] == 20 and res["knn_top1"] == pytest.approx(hits / 20, abs=1e-4)

    r = cli("eval", "knn", "--model", run, "--bank", samples / "fashion", "--query", samples / "images.jsonl",
            "--k", "5")
    assert r.returncode == 0, r.stderr
    full = json.loads(r.stdout)
    assert full["n_bank"] == full["n_query"] == 50 and 0.5 < full["knn_top1"] <= 1   # queries in the bank

    # JSONL on stdout, ready for pipes
    r = cli("embed", run / "encoder", "--input", "-", "--out", "-",
            input=(samples / "images.jsonl").read_text().replace('"fashion/', f'"{samples}/fashion/'))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 50 and np.allclose(lines[3]["embedding"], vecs[3], atol=1e-5)


def test_help_and_listings(cli):
    r = cli("--help")
    assert r.returncode == 0 and "pretrain" in r.stdout and "Example" in r.stdout
    for cmd in (["pretrain"], ["embed"], ["eval", "knn"]):
        r = cli(*cmd, "--help")
        assert r.returncode == 0 and "Example" in r.stdout, cmd
    r = cli("methods", "--json")
    assert {m["name"] for m in json.loads(r.stdout)} >= {"byol", "simclr"}
    r = cli("encoders", "--json")
    assert "convnet-small" in {e["name"] for e in json.loads(r.stdout)}


def test_usage_errors_exit_2(cli, tmp_path):
    r = cli("pretrain", "--out", tmp_path / "r")
    assert r.returncode == 2 and "--data is required" in r.stderr
    r = cli("pretrain", "--data", "x", "--method", "nope", "--out", tmp_path / "r")
    assert r.returncode == 2 and "unknown method 'nope'" in r.stderr
    r = cli("pretrain", "--bogus")
    assert r.returncode == 2
    r = cli("pretrain", "--out", tmp_path / "r", "--resume")
    assert r.returncode == 2 and "nothing to resume" in r.stderr

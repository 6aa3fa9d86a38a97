"""Data-parallel training: 2 gloo ranks launched by torchrun against one process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cl_toolkit.config import resolve_config
from cl_toolkit.gradcache import grad_cache_step
from cl_toolkit.pipeline import pretrain

WORKER = Path(__file__).with_name("dist_worker.py")


def torchrun(case: str, out: Path, args: dict | None = None, ranks: int = 2) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
           str(WORKER), case, str(out)] + ([json.dumps(args)] if args is not None else [])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = [json.loads((out / f"{case}.rank{r}.json").read_text()) for r in range(ranks)]
    for r in res:
        # dist.finish joined gloo's threads: none may live on into interpreter shutdown, where
        # one aborted the process now and then (docs/scaling.md)
        assert not [t for t in r["threads_after_finish"] if "gloo" in t], r["threads_after_finish"]
    return res


def test_gathered_losses_and_gradients_equal_the_global_batch(tmp_path):
    for res in torchrun("losses", tmp_path):
        assert res["world_size"] == 2
        for name in ("nt_xent", "info_nce", "clip", "cdtom"):
            r = res[name]
            assert r["loss"] == pytest.approx(r["ref_loss"], abs=1e-5), name
            assert r["grad_err"] < 1e-5, name


def _run_args(samples, out, **kw) -> dict:
    return {"method": "simclr", "data": str(samples / "images.jsonl"), "out": str(out), "encoder": "convnet-tiny",
            "epochs": 2, "batch_size": 16, "precision": "fp32", "threads": 1, "log_every": 1, **kw}


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]


def _noise_images(folder: Path, n: int = 32) -> Path:
    """Uniform-noise images: no ties for max-pooling to break differently under float
    rounding (photos have flat backgrounds, where 1e-7 differences reroute gradients)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(n):
        pixels = torch.randint(0, 256, (16, 16), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
        lines.append(json.dumps({"id": str(i), "image": f"{i}.png"}))
    (folder / "noise.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "noise.jsonl"


def test_two_ranks_train_the_same_weights_as_one_process_with_the_global_batch(samples, tmp_path):
    """SimCLR with gathered negatives and synchronised batch norm on 2 x 8 = one process on 16."""
    args = _run_args(samples, tmp_path / "two", data=str(_noise_images(tmp_path)), augment="none", sync_bn=True,
                     optimizer="sgd", lr=0.05)
    res = torchrun("train", tmp_path, args)
    assert res[0]["world_size"] == 2 and res[0]["steps"] == res[1]["steps"] > 2
    # every rank ends with the same weights (parameters and synchronised batch-norm statistics),
    # and rank 0's are the ones it saved
    ranks = [torch.load(tmp_path / "two" / f"weights.rank{r}.pt") for r in range(2)]
    saved = _weights(tmp_path / "two")
    assert ranks[0].keys() == ranks[1].keys() == saved.keys()
    for k in saved:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
        assert torch.equal(ranks[0][k], saved[k]), k
    torch.manual_seed(0)
    one = pretrain(resolve_config({**args, "out": str(tmp_path / "one")}), quiet=True)
    assert one["steps"] == res[0]["steps"]
    a, b = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    assert a.keys() == b.keys()
    moved = max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point())
    assert moved < 1e-5
    m2 = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    m1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in m2] == pytest.approx([m["loss"] for m in m1], abs=2e-5)
    assert json.loads((tmp_path / "two" / "env.json").read_text())["world_size"] == 2
    assert (tmp_path / "two" / "encoder" / "model.safetensors").is_file()


def test_two_rank_run_resumes_exactly(samples, tmp_path):
    res = torchrun("resume", tmp_path, _run_args(samples, tmp_path, method="byol", epochs=3))
    assert res[0]["first_steps"] == 3 and res[0]["steps"] > 3
    assert res[0]["max_weight_diff"] == 0.0


def test_every_method_trains_on_two_ranks(samples, tmp_path, tiny_bert):
    data = {k: str(samples / f"{k}.jsonl") for k in ("images", "posts", "pairs")}
    res = torchrun("every_method", tmp_path, {**data, "rec": str(samples / "rec"), "text_model": str(tiny_bert),
                                              "out": str(tmp_path)})
    steps = res[0]["steps"]
    assert len(steps) == 21 and all(n > 0 for n in steps.values()), steps
    assert res[1]["steps"] == steps
    assert all((tmp_path / m / "encoder").is_dir() for m in steps)


def test_torchrun_cli_prints_one_summary_and_resumes(samples, tmp_path):
    run = tmp_path / "run"
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "cl_toolkit",
            "pretrain", "--out", str(run), "--quiet", "--threads", "1"]
    first = subprocess.run([*base, "--epochs", "2", "--method", "simclr", "--data", str(samples / "images.jsonl"),
                            "--encoder", "convnet-tiny", "--batch-size", "16"], capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads(first.stdout)            # one JSON document: rank 0 alone prints
    assert summary["world_size"] == 2 and summary["steps"] == 6
    again = subprocess.run([*base, "--resume", "--epochs", "3"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["steps"] == 9
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [6, 9]     # logged at the end of each part (log_every 20)


def test_ranks_that_disagree_on_the_config_stop_with_a_clear_error(samples, tmp_path):
    res = torchrun("mismatch", tmp_path, _run_args(samples, tmp_path / "m"))
    for r in res:
        assert r["error"] and "ranks disagree on the config: lr" in r["error"]
    assert not (tmp_path / "m").exists()


def _simclr_eval_mode(samples, tmp_path):
    from cl_toolkit.methods import get_method
    from cl_toolkit.tasks.images import ImageTask

    cfg = resolve_config(_run_args(samples, tmp_path))
    torch.manual_seed(0)
    task = ImageTask(cfg, get_method("simclr").cls, torch.device("cpu"))
    task.model.float().to(memory_format=torch.contiguous_format)
    return task


class _Scaler:
    def scale(self, x):
        return x


def test_grad_cache_gives_the_full_batch_gradient(samples, tmp_path):
    import contextlib

    task = _simclr_eval_mode(samples, tmp_path)
    model = task.model.eval()    # batch norm on running statistics: per-sample, so chunking is exact
    batch = task.batch(torch.arange(16))
    model.zero_grad()
    model(batch, 0.5).loss.backward()
    full = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    out = grad_cache_step(model, batch, 0.5, 5, contextlib.nullcontext(), _Scaler())
    assert out.loss.item() == pytest.approx(model(batch, 0.5).loss.item(), abs=1e-6)
    for k, g in full.items():
        assert torch.allclose(model.get_parameter(k).grad, g, atol=1e-6), k


def test_grad_cache_replays_dropout_exactly(tiny_bert, tmp_path, samples):
    """SimCSE: dropout is the augmentation; the replayed chunks must draw the masks of the cached
    pass, so the gradient equals back-propagating through all chunks at once with those masks."""
    import contextlib

    from cl_toolkit.gradcache import _split
    from cl_toolkit.methods import get_method
    from cl_toolkit.tasks.text import TextTask

    cfg = resolve_config({"method": "simcse", "data": str(samples / "posts.jsonl"), "out": str(tmp_path / "s"),
                          "encoder": str(tiny_bert)})
    task = TextTask(cfg, get_method("simcse").cls, torch.device("cpu"))
    model = task.model.train()
    batch = task.batch(torch.arange(12))
    torch.manual_seed(1)
    reps = [model.represent(_split(batch, s, s + 4, 12), 0.5) for s in (0, 4, 8)]
    ref = model.objective([torch.cat(r) for r in zip(*reps)], batch, 0.5).loss
    model.zero_grad()
    ref.backward()
    full = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.manual_seed(1)
    out = grad_cache_step(model, batch, 0.5, 4, contextlib.nullcontext(), _Scaler())
    assert out.loss.item() == pytest.approx(ref.item(), abs=1e-6)
    assert len(full) > 10
    for k, g in full.items():
        assert torch.allclose(model.get_parameter(k).grad, g, atol=1e-6), k


def test_chunk_size_trains_from_the_cli(cli, samples, tmp_path):
    run = tmp_path / "run"
    p = cli("pretrain", "--method", "simclr", "--data", samples / "images.jsonl", "--out", run, "--encoder",
            "convnet-tiny", "--epochs", "1", "--batch-size", "16", "--set", "chunk_size=4", "--quiet")
    assert p.returncode == 0, p.stderr
    assert json.loads((run / "config.json").read_text())["chunk_size"] == 4
    bad = cli("pretrain", "--method", "byol", "--data", samples / "images.jsonl", "--out", tmp_path / "b",
              "--epochs", "1", "--set", "chunk_size=4", "--quiet")
    assert bad.returncode == 2 and "gradient caching" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_queues_enqueue_every_ranks_keys(samples, tmp_path, tiny_bert):
    """CLIP's, ESimCSE's and CD-TOM's queues after one step on 2 ranks of 6 records each: both
    ranks hold the same keys, those of the whole global batch in rank order (CD-TOM: each distinct
    tag of the global batch once), each rank's slice the keys it computed itself."""
    res = torchrun("queues", tmp_path, {"pairs": str(samples / "pairs.jsonl"), "posts": str(samples / "posts.jsonl"),
                                        "text_model": str(tiny_bert), "out": str(tmp_path)})
    for name in ("clip", "simcse"):
        a, b = res[0][name], res[1][name]
        assert a["ids"] == b["ids"] == a["own_ids"] + b["own_ids"], name
        assert a["keys_sum"] == pytest.approx(b["keys_sum"], abs=1e-9) and a["own_err"] < 1e-5 > b["own_err"], name
    assert res[0]["clip"]["image_ids"] == res[1]["clip"]["image_ids"] == res[0]["clip"]["ids"]
    a, b = res[0]["cdtom"], res[1]["cdtom"]
    assert sorted(a["ids"]) == sorted(b["ids"]) == sorted(set(a["own_ids"]) | set(b["own_ids"]))
    assert len(a["ids"]) == len(set(a["ids"])) and a["keys_sum"] == pytest.approx(b["keys_sum"], abs=1e-9)
    assert a["own_err"] < 1e-5 and b["own_err"] < 1e-5

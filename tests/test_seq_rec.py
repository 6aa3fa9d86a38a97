"""Sequential recommendation: the augmentations on hand-made sequences, causal attention, the
windows and views of the sequence tasks, and sasrec / cl4srec / duorec through the one trainer on
a self-made chain data set (each user walks c00 -> c01 -> ...), then `recommend` from stored and
new-session histories (library calls; the CLI is tested in test_rec_cli.py)."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from cl_toolkit.config import TrainConfig, resolve_config
from cl_toolkit.encoders.sequence import SASRec, causal_mask, left_pad
from cl_toolkit.io import InputError
from cl_toolkit.io.interactions import read_interactions
from cl_toolkit.pipeline import pretrain
from cl_toolkit.recommend import embed_field, recommend
from cl_toolkit.tasks.sequences import augment, item_crop, item_mask, item_reorder, two_kinds, windows

ROW = torch.tensor([[0, 0, 0, 5, 6, 7, 8, 9]])        # 5 items, left-padded to 8


def _items(row):
    return [int(x) for x in row if x > 0]


def test_item_crop_keeps_a_contiguous_run_left_padded():
    starts = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out = item_crop(ROW, 0.6)[0]
        kept = _items(out)
        assert len(kept) == 3 and (out[:5] == 0).all()                 # floor(0.6 * 5) = 3, at the right
        assert kept in ([5, 6, 7], [6, 7, 8], [7, 8, 9])
        starts.add(kept[0])
    assert starts == {5, 6, 7}                                         # every start is drawn
    assert _items(item_crop(torch.tensor([[0, 0, 4, 2]]), 0.1)[0]) in ([4], [2])   # at least one item


def test_item_mask_replaces_gamma_of_the_items_only():
    for seed in range(20):
        torch.manual_seed(seed)
        out = item_mask(ROW, 0.4, 99)[0]
        assert (out[:3] == 0).all() and (out == 99).sum() == 2           # floor(0.4 * 5) = 2, never padding
        assert [int(a) for a, b in zip(out, ROW[0]) if a != 99] == [int(b) for a, b in zip(out, ROW[0]) if a != 99]


def test_item_reorder_shuffles_one_run_and_keeps_the_rest():
    shuffled = False
    for seed in range(40):
        torch.manual_seed(seed)
        out = item_reorder(ROW, 0.6)[0].tolist()
        assert out[:3] == [0, 0, 0] and sorted(out[3:]) == [5, 6, 7, 8, 9]
        moved = [p for p in range(8) if out[p] != ROW[0, p]]
        if moved:
            shuffled = True
            assert max(moved) - min(moved) < 3                          # within one run of floor(0.6 * 5) = 3
    assert shuffled


def test_augment_two_different_kinds_and_short_rows_unchanged():
    torch.manual_seed(0)
    a, b = two_kinds(1000)
    assert (a != b).all() and set(a.tolist()) == set(b.tolist()) == {0, 1, 2}
    one = torch.tensor([[0, 0, 0, 3]])
    for k in range(3):
        assert torch.equal(augment(one, torch.tensor([k]), 0.6, 0.3, 0.6, 99), one)


def test_windows_cover_every_target_once_and_inputs_precede_targets():
    seqs = [np.arange(1, 13), np.array([7]), np.array([3, 4])]
    inp, tgt, keys = windows(seqs, 5)
    assert keys.tolist() == [[0, 11], [0, 6], [0, 1], [2, 1]]
    assert sorted(int(t) for t in tgt.ravel() if t) == sorted(list(range(2, 13)) + [4])   # each target once
    assert inp[0].tolist() == [7, 8, 9, 10, 11] and tgt[0].tolist() == [8, 9, 10, 11, 12]
    assert inp[2].tolist() == [0, 0, 0, 0, 1] and tgt[2].tolist() == [0, 0, 0, 0, 2]
    assert left_pad([[1, 2, 3]], 2).tolist() == [[2, 3]]


def test_attention_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    m = SASRec(20, max_length=6, dim=16, layers=2, heads=2, inner=32, dropout=0.0, attn_dropout=0.0).eval()
    a = torch.tensor([[0, 3, 4, 5, 6, 7]])
    b = torch.tensor([[0, 3, 4, 9, 1, 2]])                # differs from position 3 on
    ha, hb = m(a), m(b)
    assert torch.allclose(ha[:, :3], hb[:, :3], atol=1e-6)          # earlier positions never see later items
    assert not torch.allclose(ha[:, 3:], hb[:, 3:], atol=1e-4)
    c = torch.tensor([[0, 0, 3, 4, 5, 6]])                # the same last items, one more padding in front
    assert torch.allclose(m(torch.tensor([[3, 4, 5, 6]]))[:, -1], m(c)[:, -1], atol=1e-5)
    mask = causal_mask(torch.tensor([[0, 2, 3]]))[0]
    assert mask.tolist() == [[True, False, False], [False, True, False], [False, True, True]]


def write_chains(path, users=30, items=20, seed=0):
    """Each user walks the chain c00 -> c01 -> ... (mod ``items``) from a random start: the next
    item is always the last one's successor."""
    rng = np.random.default_rng(seed)
    lines, t = [], 0
    for u in range(users):
        start, n = int(rng.integers(items)), int(rng.integers(8, 15))
        for k in range(n):
            t += 1
            lines.append(json.dumps({"user": f"u{u:02d}", "item": f"c{(start + k) % items:02d}", "ts": t}))
    path.write_text("\n".join(lines) + "\n")
    return path


def train(method, data, out, epochs=150, **mc):
    cfg = resolve_config({"method": method, "data": str(data), "out": str(out), "epochs": epochs, "batch_size": 32,
                          "lr": 5e-3, "threads": 1, "checkpoint_every": 10000, "log_every": 10,
                          "method_config": {"max_length": 8, "dim": 32, "layers": 1, "heads": 1, "inner": 64,
                                            "dropout": 0.0, "attn_dropout": 0.0, **mc}})
    return pretrain(cfg, force=True, quiet=True)


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    return write_chains(tmp_path_factory.mktemp("seq") / "chains.jsonl")


@pytest.fixture(scope="module")
def sasrec_run(chains, tmp_path_factory):
    run = tmp_path_factory.mktemp("sasrec") / "run"
    s = train("sasrec", chains, run)
    assert s["complete"]
    return run


def test_sasrec_learns_the_next_item_and_recommends_from_new_sessions(sasrec_run, chains, tmp_path):
    data = read_interactions(chains)
    last = {}
    for u, i in zip(data.users, data.items):
        last[u] = i
    recs = list(recommend(sasrec_run, k=1))
    right = sum(r["items"][0]["item"] == f"c{(int(last[r['user']][1:]) + 1) % 20:02d}" for r in recs)
    assert len(recs) == 30 and right >= 27                      # the successor of each user's last item
    session = tmp_path / "session.jsonl"
    session.write_text("".join(json.dumps({"user": "new", "item": f"c{k:02d}", "ts": k}) + "\n" for k in (3, 4, 5)))
    recs = list(recommend(sasrec_run, users=["new"], k=3, history=str(session)))
    assert recs[0]["items"][0]["item"] == "c06"               # a session the model never saw
    assert not {"c03", "c04", "c05"} & {x["item"] for x in recs[0]["items"]}
    default = list(recommend(sasrec_run, k=1, history=str(session)))
    assert len(default) == 31 and "new" in {r["user"] for r in default}   # history users too, by default
    metrics = [json.loads(x) for x in (sasrec_run / "metrics.jsonl").read_text().splitlines()]
    assert "effective_rank" in metrics[-1] and metrics[-1]["loss"] < metrics[0]["loss"] / 2


def test_sequence_runs_embed_users_and_items_by_dot_product(sasrec_run):
    items, meta, info = embed_field(sasrec_run, "item")
    users, umeta, uinfo = embed_field(sasrec_run, "user")
    assert items.shape == (20, 32) and users.shape == (30, 32) and not info["normalized"]
    recs = list(recommend(sasrec_run, users=[umeta[0]["id"]], k=5, include_seen=True))
    ids = [m["id"] for m in meta]
    scores = items[[ids.index(x["item"]) for x in recs[0]["items"]]] @ users[0]
    assert np.allclose(scores, [x["score"] for x in recs[0]["items"]], atol=1e-4)
    with pytest.raises(InputError, match="ranks only the items it was trained on"):
        list(recommend(sasrec_run, candidates=["c01", "nope"]))


@pytest.mark.parametrize("method", ["cl4srec", "duorec"])
def test_contrastive_sequence_methods_train_and_resume_exactly(method, chains, tmp_path):
    full = train(method, chains, tmp_path / "full", epochs=6)
    assert full["complete"]
    cfg = resolve_config({"method": method, "data": str(chains), "out": str(tmp_path / "cut"), "epochs": 6,
                          "batch_size": 32, "lr": 5e-3, "threads": 1, "checkpoint_every": 10000,
                          "method_config": {"max_length": 8, "dim": 32, "layers": 1, "heads": 1, "inner": 64,
                                            "dropout": 0.0, "attn_dropout": 0.0}})
    assert not pretrain(cfg, quiet=True, stop_at_step=3)["complete"]
    again = pretrain(TrainConfig(out=str(tmp_path / "cut")), resume=True, quiet=True)
    assert again["complete"] and again["steps"] == full["steps"] == 6
    a = load_file(str(tmp_path / "full" / "encoder" / "sequence" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "encoder" / "sequence" / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)        # the views are replayed from the restored RNG


def test_cl4srec_views_come_from_the_input_only(chains):
    from cl_toolkit.methods import get_method

    torch.manual_seed(0)
    cfg = resolve_config({"method": "cl4srec", "data": str(chains), "out": "unused", "epochs": 1,
                          "method_config": {"max_length": 8, "mask_ratio": 0.5}})
    entry = get_method("cl4srec")
    task = entry.cls.task(cfg, entry.cls, torch.device("cpu"))
    b = task.batch(torch.arange(task.n))
    token = task.model.encoder.mask_token
    for r in range(task.n):
        allowed = set(_items(b["seq"][r])) | {token}
        nxt = int(b["target"][r, -1])                           # the item the window predicts last
        for v in ("aug1", "aug2"):
            got = set(_items(b[v][r]))
            assert got <= allowed and nxt not in got             # the chains never repeat an item within a window
    assert (b["aug1"] != b["seq"]).any() and (b["aug1"] != b["aug2"]).any()


def test_duorec_positives_share_the_next_item_and_stop_before_it(chains):
    from cl_toolkit.methods import get_method

    torch.manual_seed(0)
    cfg = resolve_config({"method": "duorec", "data": str(chains), "out": "unused", "epochs": 1,
                          "method_config": {"max_length": 8}})
    entry = get_method("duorec")
    task = entry.cls.task(cfg, entry.cls, torch.device("cpu"))
    b = task.batch(torch.arange(task.n))
    assert torch.equal(b["last"], b["target"][:, -1])
    others = 0
    for r in range(task.n):
        sem, y = _items(b["sem"][r]), int(b["last"][r])
        assert sem and sem[-1] == (y - 2) % 20 + 1 and y not in sem   # the chain: the prefix ends just before y
        others += sem != _items(b["seq"][r])
    assert others > task.n // 2                                  # mostly other users' prefixes


def test_sequence_task_refuses_data_without_a_next_item(tmp_path):
    p = tmp_path / "single.jsonl"
    p.write_text('{"user": "a", "item": "x"}\n{"user": "b", "item": "y"}\n')
    with pytest.raises(InputError, match="no user has two interactions"):
        train("sasrec", p, tmp_path / "run", epochs=1)


@pytest.mark.parametrize("setting, words", [({"heads": 3}, "multiple of heads"), ({"layers": 0}, "layers must be >= 1"),
                                            ({"dropout": 1.5}, "dropout must be >= 0 and <= 1")])
def test_bad_sequence_settings_are_one_error(chains, tmp_path, setting, words):
    with pytest.raises(InputError, match=words):
        cfg = resolve_config({"method": "sasrec", "data": str(chains), "out": str(tmp_path / "r"), "epochs": 1,
                              "method_config": setting})
        pretrain(cfg, quiet=True)
    assert not (tmp_path / "r").exists()

"""What each rank runs in tests/test_dist.py, launched by ``torchrun --nproc-per-node 2``:

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_worker.py CASE OUT [JSON]

Every rank writes ``OUT/CASE.rank<R>.json``; the test reads and checks them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cl_toolkit import dist  # noqa: E402
from cl_toolkit.config import resolve_config
from cl_toolkit.io import InputError  # noqa: E402
from cl_toolkit.losses import clip_loss, info_nce, nt_xent  # noqa: E402
from cl_toolkit.pipeline import pretrain  # noqa: E402


def losses() -> dict:
    """Gathered losses on 2 ranks x B rows against the single-process loss on all 2B rows."""
    w, r = dist.world(), dist.rank()
    b, d, t = 6, 8, 0.2
    g = torch.Generator().manual_seed(0)
    full = [F.normalize(torch.randn(w * b, d, generator=g), dim=-1) for _ in range(2)]
    ids = torch.tensor([0, 1, 2, 3, 1, 5, 6, 7, 8, 9, 3, 11])[: w * b]   # duplicates across the two ranks
    cases = {
        "nt_xent": lambda a, c, keys, off, m: nt_xent(a, c, t, m, keys, off),
        "info_nce": lambda a, c, keys, off, m: info_nce(a, keys[1], t, m, off),
        "clip": lambda a, c, keys, off, m: clip_loss(a, c, 1 / t, m, keys, off),
    }
    out = {}
    for name, fn in cases.items():
        ref = [x.clone().requires_grad_() for x in full]
        mask_full = ids[:, None] == ids[None, :]
        if name == "nt_xent":
            ref_loss = nt_xent(ref[0], ref[1], t, mask_full)
        elif name == "info_nce":
            ref_loss = info_nce(ref[0], ref[1], t, mask_full)
        else:
            ref_loss = clip_loss(ref[0], ref[1], 1 / t, mask_full)
        ref_loss.backward()
        mine = [x[r * b:(r + 1) * b].clone().requires_grad_() for x in full]
        (k1, off), (k2, _) = dist.gather(mine[0]), dist.gather(mine[1])
        mask = ids[r * b:(r + 1) * b, None] == dist.gather_nograd(ids[r * b:(r + 1) * b])[None, :]
        loss = fn(mine[0], mine[1], (k1, k2), off, mask)
        loss.backward()
        mean = dist.all_reduce_(loss.detach().clone()) / w
        # DDP averages parameter gradients over ranks: the gradient of the mean of the rank losses
        grads = [x.grad / w for x in mine]
        out[name] = {"loss": mean.item(), "ref_loss": ref_loss.item(),
                     "grad_err": max((gr - x.grad[r * b:(r + 1) * b]).abs().max().item() for gr, x in zip(grads, ref))}
    out["cdtom"] = cdtom_tags()
    return out


def cdtom_tags() -> dict:
    """CD-TOM's gathered tag keys: each rank holds the distinct tags of its own posts (tags
    shared by posts on both ranks included); the loss and the gradients of the tag table and
    the posts must equal one process on all posts."""
    from cl_toolkit.losses import multi_positive_info_nce
    from cl_toolkit.methods.cdtom import _global_tags

    w, r = dist.world(), dist.rank()
    g = torch.Generator().manual_seed(1)
    n_tags, b, d = 9, 5, 8
    table = F.normalize(torch.randn(n_tags, d, generator=g), dim=-1)
    posts = F.normalize(torch.randn(w * b, d, generator=g), dim=-1)
    gold = [sorted(set(torch.randint(0, n_tags, (2,), generator=g).tolist())) for _ in range(w * b)]
    prior = torch.randn(n_tags, generator=g)

    def keys(rows, tab):
        tags = sorted({t for i in rows for t in gold[i]})
        pos = torch.tensor([[t in gold[i] for t in tags] for i in rows])
        return tab[tags], pos, prior[tags], torch.tensor(tags)

    tab_ref, p_ref = table.clone().requires_grad_(), posts.clone().requires_grad_()
    t, pos, pr, _ = keys(range(w * b), tab_ref)
    ref = multi_positive_info_nce(p_ref, t, pos, 0.1, pr)
    ref.backward()
    tab, mine = table.clone().requires_grad_(), posts[r * b:(r + 1) * b].clone().requires_grad_()
    t, pos, pr, ids = keys(range(r * b, (r + 1) * b), tab)
    t, pos, pr, weight, _ = _global_tags(t, pos, pr, ids)
    loss = multi_positive_info_nce(mine, t, pos, 0.1, pr) * weight
    loss.backward()
    tab_grad = dist.all_reduce_(tab.grad.clone()) / w        # the shared tag tower: DDP's average
    return {"loss": (dist.all_reduce_(loss.detach().clone()) / w).item(), "ref_loss": ref.item(),
            "grad_err": max((tab_grad - tab_ref.grad).abs().max().item(),
                            (mine.grad / w - p_ref.grad[r * b:(r + 1) * b]).abs().max().item())}


def train(args: dict) -> dict:
    """One run; every rank also saves the weights it ended with (``RUN/weights.rank<R>.pt``)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    wrapped = []

    class Recording(DistributedDataParallel):  # the trainer wraps each rank's model once
        __signature__ = inspect.signature(DistributedDataParallel)   # the trainer reads it

        def __init__(self, module, *a, **kw):
            wrapped.append(module)
            super().__init__(module, *a, **kw)

    import cl_toolkit.train as trainer

    trainer.DistributedDataParallel = Recording      # the name the trainer wraps its model with
    try:
        summary = pretrain(resolve_config(args), quiet=True, force=True)
    finally:
        trainer.DistributedDataParallel = DistributedDataParallel
    assert len(wrapped) == 1, wrapped
    torch.save(wrapped[0].state_dict(), Path(args["out"]) / f"weights.rank{dist.rank()}.pt")
    return summary


def resume(args: dict) -> dict:
    """An uninterrupted 2-rank run and one stopped at step 3 then resumed: same final weights."""
    full = resolve_config({**args, "out": args["out"] + "/full"})
    pretrain(full, quiet=True, force=True)
    part = resolve_config({**args, "out": args["out"] + "/part"})
    first = pretrain(part, quiet=True, force=True, stop_at_step=3)
    second = pretrain(resolve_config({**args, "out": args["out"] + "/part"}), resume=True, quiet=True)
    a = torch.load(args["out"] + "/full/checkpoints/last.pt", weights_only=False)["model"]
    b = torch.load(args["out"] + "/part/checkpoints/last.pt", weights_only=False)["model"]
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].numel())
    return {"first_steps": first["steps"], "steps": second["steps"], "max_weight_diff": diff}


def every_method(args: dict) -> dict:
    """A few steps of every registered method on 2 ranks (DDP, gathered keys, SyncBN, queues)."""
    from cl_toolkit.methods import METHODS, get_method

    get_method("byol")   # loads the registry
    text = {"simcse": {"data": args["posts"], "encoder": args["text_model"]},
            "cdtom": {"data": args["posts"], "encoder": args["text_model"]},
            "clip": {"data": args["pairs"], "method_config": {"text_encoder": args["text_model"], "text_layers": 1}},
            **{m: {"data": args["rec"], "epochs": 0.1} for m in ("twotower", "featmask", "twin", "sasrec", "cl4srec",
                                                                 "duorec", "lightgcn", "sgl", "simgcl")}}
    steps = {}
    for name in sorted(METHODS):
        run = {"method": name, "data": args["images"], "encoder": "convnet-tiny", "epochs": 2, "batch_size": 16,
               "threads": 1, "out": f"{args['out']}/{name}", **text.get(name, {})}
        steps[name] = pretrain(resolve_config(run), quiet=True, force=True)["steps"]
    return {"steps": steps}


def queues(args: dict) -> dict:
    """One step of each queue option, each rank on its own 6 records: what every rank's queue holds
    afterwards (its ids and a checksum of its keys) and how far its own slice is from the keys it
    computed itself."""
    from cl_toolkit.methods import get_method

    r = dist.rank()
    specs = {
        "clip": {"data": args["pairs"], "encoder": "convnet-tiny",
                 "method_config": {"text_encoder": args["text_model"], "queue": 32}},
        "simcse": {"data": args["posts"], "encoder": args["text_model"], "method_config": {"mode": "esimcse",
                                                                                         "queue": 32}},
        "cdtom": {"data": args["posts"], "encoder": args["text_model"], "method_config": {"queue": 128}},
    }
    out = {}
    for name, spec in specs.items():
        cfg = resolve_config({"method": name, "out": f"{args['out']}/{name}", **spec})
        entry = get_method(name)
        torch.manual_seed(0)          # the same weights on both ranks
        out[name] = _one_queue_step(name, entry.cls.task(cfg, entry.cls, torch.device("cpu")), r)
    return out


def _one_queue_step(name: str, task, r: int) -> dict:
    m = task.model.eval()
    b = task.batch(torch.arange(r * 6, (r + 1) * 6))
    m(b, 0.5)
    m.after_step(0.5)
    with torch.no_grad():
        if name == "clip":
            q, own_ids, own = m.text_queue, b["ids"], m._momentum_keys(b)[1]
        elif name == "simcse":
            q, own_ids, own = m.queue, b["ids"], F.normalize(m.momentum_encoder(b["text"]).float(), dim=-1)
        else:
            q, own_ids = m.tag_queue, b["tag_ids"]
            own = F.normalize(m.momentum_tags.from_cache(b["tags"], m.start).float(), dim=-1)
    valid = q.valid()
    res = {"ids": q.ids[valid].tolist(), "own_ids": own_ids.tolist(), "keys_sum": float(q.keys[valid].double().sum())}
    if name == "cdtom":     # each distinct tag once: compare by id
        pos = {i: j for j, i in enumerate(q.ids.tolist())}
        res["own_err"] = max(float((q.keys[pos[i]] - k).abs().max()) for i, k in zip(own_ids.tolist(), own))
    else:
        res["own_err"] = float((q.keys[r * 6:(r + 1) * 6] - own).abs().max())
    if name == "clip":
        res["image_ids"] = m.image_queue.ids[m.image_queue.valid()].tolist()
    return res


def mismatch(args: dict) -> dict:
    try:
        pretrain(resolve_config({**args, "lr": 1e-3 * (1 + dist.rank())}), quiet=True, force=True)
    except InputError as e:
        return {"error": str(e)}
    return {"error": None}


def main() -> None:
    case, out = sys.argv[1], Path(sys.argv[2])
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    dist.init(torch.device("cpu"))
    torch.set_num_threads(1)
    cases = {"losses": losses, "train": train, "resume": resume, "mismatch": mismatch, "every_method": every_method,
             "queues": queues}
    res = cases[case](*([args] if case != "losses" else []))
    res["world_size"] = dist.world()
    rank = dist.rank()
    dist.finish()
    res["threads_after_finish"] = thread_names()
    (out / f"{case}.rank{rank}.json").write_text(json.dumps(res))


def thread_names() -> list[str]:
    """The names of this process's native threads (gloo's are ``gloo_tcp_loop`` and
    ``pt_gloo_runloop``); empty where /proc is missing."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return []
    return sorted((t / "comm").read_text().strip() for t in tasks.iterdir())


if __name__ == "__main__":
    main()

"""Training-step throughput of the CPU presets under each speed option, side by side.

Measures images/s (each image = two views, forward + backward + optimizer step, BYOL with its
target network) for convnet-small at 28 px, batch 256, in fp32 / channels-last / bf16 autocast /
torch.compile combinations, interleaved in rounds so that the CPU's speed swings hit every
variant alike. Ratios to the fp32 baseline are what to read.

    python benchmarks/speed_cpu.py [--rounds 3] [--steps 8]

Writes benchmarks/results/speed_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cl_toolkit.augment import ViewGenerator, preset  # noqa: E402
from cl_toolkit.encoders import create_encoder  # noqa: E402
from cl_toolkit.methods import get_method, make_config  # noqa: E402
from cl_toolkit.runtime import environment  # noqa: E402

VARIANTS = {
    "fp32": dict(cl=False, bf16=False, compile=False),
    "channels_last": dict(cl=True, bf16=False, compile=False),
    "bf16": dict(cl=False, bf16=True, compile=False),
    "channels_last+bf16 (default)": dict(cl=True, bf16=True, compile=False),
    "channels_last+bf16+compile": dict(cl=True, bf16=True, compile=True),
}


def make_step(opts: dict, batch: torch.Tensor):
    torch.manual_seed(0)
    entry = get_method("byol")
    model = entry.cls(create_encoder("convnet-small", 1, 28), make_config(entry.config, {}))
    if opts["cl"]:
        model = model.to(memory_format=torch.channels_last)
    if opts["compile"]:
        model.encoder = torch.compile(model.encoder)
    views = ViewGenerator(preset("byol", 28, 1), 28, 1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step() -> None:
        v = views(batch)
        if opts["cl"]:
            v = [x.contiguous(memory_format=torch.channels_last) for x in v]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts["bf16"]):
            loss = model(v, 0.5).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_step(0.5)

    t0 = time.perf_counter()
    step()
    step()
    return step, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(2)
    batch = torch.randint(0, 256, (args.batch_size, 1, 28, 28), dtype=torch.uint8)
    steps, warm = {}, {}
    for name, opts in VARIANTS.items():
        steps[name], warm[name] = make_step(opts, batch)
    rates: dict[str, list[float]] = {n: [] for n in VARIANTS}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[name].append(args.batch_size * args.steps / (time.perf_counter() - t0))
    base = statistics.median(rates["fp32"])
    result = {"what": "BYOL training step, convnet-small, 28 px, images/s (2 views each)",
              "batch_size": args.batch_size, "rounds": args.rounds, "steps_per_round": args.steps,
              "variants": {n: {"images_per_s_median": round(statistics.median(r), 1),
                               "images_per_s_rounds": [round(x, 1) for x in r],
                               "speedup_vs_fp32": round(statistics.median(r) / base, 2),
                               "warmup_seconds": round(warm[n], 1)} for n, r in rates.items()},
              "env": environment(torch.device("cpu"), "mixed")}
    out = Path(__file__).parent / "results" / "speed_cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["variants"], indent=2))


if __name__ == "__main__":
    main()

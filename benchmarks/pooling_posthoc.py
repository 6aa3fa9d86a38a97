"""How to pool the last feature map, measured on trained weights without retraining.

Takes run dirs of `convnet-small` encoders (trained by `ssl_cpu.py --run-dir`) and, keeping their
weights, swaps the way the last 7x7 feature map becomes the embedding: 2x2 average (the encoder
the runs were trained with), 2x2 max, global average, before or after the last ReLU, square
root, per-cell L2 normalisation; each also standardised per dimension with the bank's own
statistics. Reports cosine kNN on the ssl_cpu.py protocol, so it says which output the next
encoder should be trained with (docs/benchmarks.md, "Pooling the last feature map").

    python benchmarks/ssl_cpu.py --method byol --epochs 25 --set 'encoder_args={"pool_type":"avg","pool":2}' \\
        --run-dir runs/byol_avg2
    python benchmarks/pooling_posthoc.py runs/byol_avg2 [more run dirs] [--untrained]

Writes benchmarks/results/tuning/pooling_posthoc.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cl_toolkit.data import load_images  # noqa: E402
from cl_toolkit.embed import embed_images  # noqa: E402
from cl_toolkit.encoders import create_encoder, load_encoder  # noqa: E402
from cl_toolkit.eval import knn_accuracy  # noqa: E402
from cl_toolkit.runtime import environment  # noqa: E402

TRAIN = "fashion-mnist:train?per_class=1000&seed=0"
TEST = "fashion-mnist:test"


def last_map(enc, images: torch.Tensor) -> torch.Tensor:
    """The last conv-BN's output before its ReLU, [N, C, S, S] (7 x 7 at 28 px): the encoder
    with its last ReLU and its pooling taken out, run by the library's own embedding loop."""
    enc = copy.deepcopy(enc)
    enc.backbone.features[-1][-1] = nn.Identity()     # conv, BN, (ReLU)
    enc.backbone.pool = nn.Identity()
    flat = torch.from_numpy(embed_images(enc, images, batch_size=1000, normalize=False))
    channels = enc.backbone.features[-1][0].out_channels
    side = round((flat.shape[1] // channels) ** 0.5)
    return flat.view(len(images), channels, side, side)


def variants(pre: torch.Tensor) -> dict[str, torch.Tensor]:
    post = F.relu(pre)
    avg2 = F.adaptive_avg_pool2d(post, 2)
    return {
        "avg2": avg2.flatten(1),
        "avg2_before_relu": F.adaptive_avg_pool2d(pre, 2).flatten(1),
        "avg2_sqrt": avg2.sqrt().flatten(1),
        "avg2_cell_l2": F.normalize(avg2, dim=1).flatten(1),
        "avg1": F.adaptive_avg_pool2d(post, 1).flatten(1),
        "max2": F.adaptive_max_pool2d(post, 2).flatten(1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="run dirs (or encoder folders) of 2x2-average-pooled convnet-small")
    ap.add_argument("--untrained", action="store_true", help="also the untrained encoder (seed 0)")
    args = ap.parse_args()
    train = load_images(TRAIN)
    test = load_images(TEST, classes=train.classes)
    encoders = {run: load_encoder(run)[0] for run in args.runs}
    if args.untrained:
        torch.manual_seed(0)
        encoders["untrained"] = create_encoder("convnet-small", 1, 28, pool=2, pool_type="avg").eval()
    result: dict = {"protocol": {"train": TRAIN, "test": TEST, "k": 20, "temperature": 0.07}, "env": environment()}
    for name, enc in encoders.items():
        bank, query = variants(last_map(enc, train.images)), variants(last_map(enc, test.images))
        row = {}
        for v in bank:
            row[v] = knn_accuracy(bank[v], train.labels, query[v], test.labels)["knn_top1"]
            mu, sd = bank[v].mean(0), bank[v].std(0) + 1e-6
            row[v + "_standardised"] = knn_accuracy((bank[v] - mu) / sd, train.labels, (query[v] - mu) / sd,
                                                    test.labels)["knn_top1"]
        result[name] = row
        print(name, json.dumps(row), file=sys.stderr, flush=True)
    out = Path(__file__).parent / "results" / "tuning" / "pooling_posthoc.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"out": str(out)}))


if __name__ == "__main__":
    main()

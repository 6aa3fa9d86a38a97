#!/usr/bin/env bash
# One command from a fresh machine to a result: install (into .venv, see scripts/setup.sh),
# pretrain BYOL on 10,000 unlabelled Fashion-MNIST images for a few minutes on the CPU, then
# weighted-kNN accuracy on the test set.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-5}
RUN=${RUN:-runs/quickstart}

bash scripts/setup.sh
.venv/bin/cltk pretrain --method byol --data "fashion-mnist:train?per_class=1000" \
    --out "$RUN" --minutes "$MINUTES" --force
.venv/bin/cltk eval knn --model "$RUN" --bank "fashion-mnist:train?per_class=1000" \
    --query fashion-mnist:test

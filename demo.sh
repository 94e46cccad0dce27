#!/usr/bin/env bash
# Set up, then train StyleGAN2 on Fashion-MNIST on the CPU and write a grid of generated garments.
# Re-running resumes (or reports the run complete); extra arguments are config overrides.
set -euo pipefail
cd "$(dirname "$0")"
bash .ci/setup.sh
RUN=runs/demo-fashion32
.venv/bin/bigtrain train configs/demo/fashion32.yaml "$@"
.venv/bin/bigtrain generate "$RUN" --seeds 0-63 --trunc 0.7 --out "$RUN/generated.png"
echo "demo: sample grids during training in $RUN/samples/, final grid $RUN/generated.png"
echo "demo: TensorBoard: .venv/bin/tensorboard --logdir runs"

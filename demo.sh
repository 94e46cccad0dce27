#!/usr/bin/env bash
# Set up, then train StyleGAN2 on Fashion-MNIST on the CPU and write a grid of generated garments.
# Re-running resumes (or reports the run complete); extra arguments are config overrides.
set -euo pipefail
cd "$(dirname "$0")"
bash .ci/setup.sh
RUN=runs/demo-fashion32
DATA=data/fashion-mnist-32
# Pack once into WebDataset shards (about 40 s); training streams from them as a production run would.
if [ ! -f "$DATA/dataset.json" ]; then
  .venv/bin/bigtrain pack /usr/share/datasets/fashion-mnist "$DATA" --resolution 32 --fit pad --workers 2
fi
.venv/bin/bigtrain train configs/demo/fashion32.yaml "$@"
# No truncation: at this budget psi < 1 pulls the samples towards one average top-like shape.
.venv/bin/bigtrain generate "$RUN" --seeds 0-63 --out "$RUN/generated.png"
echo "demo: sample grids during training in $RUN/samples/, final grid $RUN/generated.png"
echo "demo: TensorBoard: .venv/bin/tensorboard --logdir runs"

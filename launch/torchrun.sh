#!/usr/bin/env bash
# Multi-node bigtrain under torchrun. Run the same command on every node:
#
#   NNODES=4 NODE_RANK=<0..3> MASTER_ADDR=<node 0's address> launch/torchrun.sh CONFIG.yaml [key=value ...]
#
# Environment (defaults in brackets):
#   NNODES [1]            number of nodes
#   NODE_RANK [0]         this node's index; node 0 hosts the rendezvous
#   NPROC_PER_NODE [auto] processes per node: the GPU count, or 1 on a CPU-only node
#   MASTER_ADDR [127.0.0.1], MASTER_PORT [29500]  node 0's address and a free port on it
#   MAX_RESTARTS [3]      torchrun restarts the job this many times when a rank dies; each
#                         restart resumes from the newest checkpoint in run.dir (--resume auto)
#   PYTHON [python]       the interpreter with bigtrain installed
#
# A static rendezvous (--master_addr/--master_port with --node_rank) keeps global ranks in
# node order, which c10d rendezvous does not guarantee. Set distributed.strategy to ddp or
# deepspeed in the config or as an override.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,17p' "$0" >&2
  exit 2
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
MAX_RESTARTS=${MAX_RESTARTS:-3}
PYTHON=${PYTHON:-python}
if [ -z "${NPROC_PER_NODE:-}" ]; then
  NPROC_PER_NODE=$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))")
fi
# Restarts (--max_restarts) fail to re-form the process group when workers share the
# rendezvous TCP store, torch's default since 2.5 (pytorch/pytorch#135712): keep them apart.
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1}
exec "$PYTHON" -m torch.distributed.run \
  --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC_PER_NODE" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" --max_restarts "$MAX_RESTARTS" \
  -m bigtrain train "$@"

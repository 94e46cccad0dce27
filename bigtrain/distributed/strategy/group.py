"""What every multi-process strategy shares: joining the job's process group, collectives over it
(all-reduce, barrier, all-gather) and cross-replica batch norm. DDP and DeepSpeed build on it;
``bigtrain eval`` on several ranks uses it alone (it trains nothing)."""
from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist

from bigtrain.console import print0
from .base import Strategy

_OPS = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


def init_process_group(env, device: torch.device, timeout_s: float = 1800) -> None:
    """Join the job's process group (gloo on CPU, NCCL on GPU); idempotent."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # torchrun exports these; srun and a plain `python` (one process) do not, and DeepSpeed
    # reads them itself, so export what DistEnv derived (a free port for a lone process).
    if env.launcher == "none" and "MASTER_PORT" not in os.environ:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    for k, v in (("RANK", env.rank), ("LOCAL_RANK", env.local_rank), ("WORLD_SIZE", env.world_size),
                 ("LOCAL_WORLD_SIZE", env.local_world_size), ("MASTER_ADDR", env.master_addr),
                 ("MASTER_PORT", env.master_port)):
        os.environ.setdefault(k, str(v))
    if (int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
            and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"):
        print0("warning: torchrun --max_restarts with the shared rendezvous store cannot re-form the process "
               "group after a failure (pytorch/pytorch#135712); launch with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
               "(launch/torchrun.sh sets it)")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=env.rank, world_size=env.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


class _SumOverRanks(torch.autograd.Function):
    """Differentiable all-reduce (sum): the gradient of a sum over ranks is the sum of the ranks'
    gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def sync_batchnorm(net: torch.nn.Module) -> None:
    """Cross-replica batch norm: modules with an ``all_reduce`` slot (bigtrain's BatchNorm) get a
    differentiable sum over the process group, so their statistics are the global batch's.
    (torch's SyncBatchNorm refuses CPU tensors; this works with gloo and NCCL alike.)"""
    for m in net.modules():
        if hasattr(m, "all_reduce"):
            m.all_reduce = _SumOverRanks.apply


class ProcessGroupStrategy(Strategy):
    """The job's ranks and the collectives between them, which is all that evaluation needs; it
    trains nothing itself (DDP and DeepSpeed add the wrapping)."""
    name = "process-group"

    def wrap(self, name, net, make_optimizer, params=None):
        raise TypeError("ProcessGroupStrategy holds the collectives only and trains nothing; training over "
                        "several ranks takes distributed.strategy ddp or deepspeed")

    def setup(self) -> None:
        init_process_group(self.env, self.device)

    def teardown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def all_reduce(self, t: torch.Tensor, op: str = "mean") -> torch.Tensor:
        comm_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        out = t.detach().to(comm_device, torch.float64 if t.dtype == torch.float64 else torch.float32).clone()
        dist.all_reduce(out, op=_OPS[op])
        if op == "mean":
            out /= self.world_size
        return out.to(t.device, t.dtype)

    def barrier(self) -> None:
        dist.barrier()

    def all_gather_object(self, obj) -> list:
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

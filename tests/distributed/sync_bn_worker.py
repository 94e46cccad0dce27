"""Run by torchrun from test_biggan.py: cross-replica BN over 2 ranks x 4 samples, compared
with one process's BN over the same 8 samples (outputs, input gradients, running statistics)."""
import json
import sys

import torch
import torch.distributed as dist

from bigtrain.distributed.strategy.group import sync_batchnorm
from bigtrain.models.biggan.layers import BatchNorm


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    x_all = torch.randn(8, 3, 4, 4, generator=g) * 2 + 0.5
    w_all = torch.randn(8, 3, 4, 4, generator=g)  # a loss that weights every output differently
    per = 8 // world
    x = x_all[rank * per:(rank + 1) * per].clone().requires_grad_(True)
    bn = BatchNorm(3)
    sync_batchnorm(bn)
    y = bn(x)
    (y * w_all[rank * per:(rank + 1) * per]).sum().backward()
    ys, grads = [torch.zeros_like(y) for _ in range(world)], [torch.zeros_like(x) for _ in range(world)]
    dist.all_gather(ys, y.detach())
    dist.all_gather(grads, x.grad)
    if rank == 0:
        ref_x = x_all.clone().requires_grad_(True)
        ref = BatchNorm(3)
        ref_y = ref(ref_x)
        (ref_y * w_all).sum().backward()
        result = {
            "out": (torch.cat(ys) - ref_y.detach()).abs().max().item(),
            "grad": (torch.cat(grads) - ref_x.grad).abs().max().item(),
            "running_mean": (bn.running_mean - ref.running_mean).abs().max().item(),
            "running_var": (bn.running_var - ref.running_var).abs().max().item(),
            "local_vs_global": (y.detach() - BatchNorm(3)(x.detach())).abs().max().item(),
        }
        with open(out_path, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

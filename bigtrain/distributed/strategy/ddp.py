"""Data parallel: one torch DDP per network, gradients averaged over ranks in backward.

Only the network being trained in a phase is called through its DDP wrapper (the trainer
passes the other one plain: frozen in G phases, a no_grad sampler in D phases), so each
wrapper sees exactly one backward per forward and every one of its parameters gets a
gradient. Accumulation rounds but the last run under ``no_sync``; the last round's
backward all-reduces the summed gradients once.
"""
from __future__ import annotations

import inspect

from torch.nn.parallel import DistributedDataParallel

from .base import Wrapped
from .group import ProcessGroupStrategy, sync_batchnorm

_DDP_PARAMS = inspect.signature(DistributedDataParallel.__init__).parameters


class DDPStrategy(ProcessGroupStrategy):
    name = "ddp"

    def wrap(self, name, net, make_optimizer, params=None):
        net.to(self.device)
        sync_batchnorm(net)
        params = list(net.parameters() if params is None else params)
        w = Wrapped(name=name, module=net, raw=net, optimizer=make_optimizer(net.parameters()), params=params,
                    make_optimizer=make_optimizer)
        return self.rewrap(w, params)

    def rewrap(self, w, params):
        """A new DDP wrapper over exactly ``params``: DDP registers the parameters that require
        grad when it is built, and expects a gradient for each of them in every backward."""
        w = super().rewrap(w, params)
        w.requires_grad_(True)
        # Buffers (w_avg, filters) are not part of the gradient math: they are synced once at init
        # (identical anyway) and not in forward; each rank keeps its own running w_avg and rank 0's is
        # the one checkpointed. Newer torch spells that forward_sync_buffers=False.
        no_sync_kw = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_PARAMS
                      else {"broadcast_buffers": False})
        w.module = DistributedDataParallel(w.raw, device_ids=[self.device] if self.device.type == "cuda" else None,
                                           **no_sync_kw)
        w.requires_grad_(False)
        return w

    def no_sync(self, w: Wrapped):
        return w.module.no_sync()

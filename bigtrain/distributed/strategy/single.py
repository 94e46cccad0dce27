"""One process, one device: plain autograd and the optimizer as given."""
from __future__ import annotations

from .base import Strategy, Wrapped


class SingleStrategy(Strategy):
    name = "single"

    def wrap(self, name, net, make_optimizer):
        net.to(self.device)
        return Wrapped(name=name, module=net, raw=net, optimizer=make_optimizer(net.parameters()))

"""One process, one device: plain autograd and the optimizer as given."""
from __future__ import annotations

from .base import Strategy, Wrapped


class SingleStrategy(Strategy):
    name = "single"

    def wrap(self, name, net, make_optimizer, params=None):
        net.to(self.device)
        return Wrapped(name=name, module=net, raw=net, optimizer=make_optimizer(net.parameters()),
                       params=list(net.parameters() if params is None else params), make_optimizer=make_optimizer)

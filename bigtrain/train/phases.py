"""Phases describe one GAN iteration: which net steps, on which loss terms, how often.

StyleGAN2's lazy R1 every 16 D steps is Phase("Dreg", "D", "reg", interval=16); BigGAN's
two D steps per G step is repeat=2 on the D phase.
"""
from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str  # Gmain | Greg | Gboth | Dmain | Dreg | Dboth
    net: Literal["G", "D"]
    terms: Literal["main", "reg", "both"]
    interval: int = 1  # run on iterations where step % interval == 0
    repeat: int = 1  # optimizer steps per run, each on a fresh real batch

    def lr_ratio(self) -> float:
        """Lazy regularization rescales lr and Adam betas of the net by interval/(interval+1)."""
        return self.interval / (self.interval + 1) if self.terms == "reg" else 1.0


def build_phases(reg_intervals: dict[str, int | None], d_repeat: int = 1) -> list[Phase]:
    """From a loss's per-net regularization interval (None = no regularizer) to phases:
    a lazy regularizer gets its own phase; interval 1 folds it into the main phase."""
    phases = []
    for net in ("G", "D"):
        interval = reg_intervals.get(net)
        rep = d_repeat if net == "D" else 1
        if interval is None:
            phases.append(Phase(f"{net}main", net, "main", repeat=rep))
        elif interval == 1:
            phases.append(Phase(f"{net}both", net, "both", repeat=rep))
        else:
            phases.append(Phase(f"{net}main", net, "main", repeat=rep))
            phases.append(Phase(f"{net}reg", net, "reg", interval=interval))
    return phases


def lazy_ratio(phases: list[Phase], net: str) -> float:
    """The lr/beta ratio for ``net``'s optimizer (1 when it has no lazy phase)."""
    return min([p.lr_ratio() for p in phases if p.net == net] + [1.0])

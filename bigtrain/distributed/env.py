"""Who am I in the job: rank, world size and rendezvous, read from torchrun or Slurm."""
from __future__ import annotations

import dataclasses
import os
import re
import zlib


@dataclasses.dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "none"  # none | torchrun | slurm

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls, environ: dict | None = None) -> "DistEnv":
        """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; srun without torchrun (and so a job from
        `bigtrain submit`) sets SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID, and the rendezvous
        is the allocation's first host at a port derived from the job id unless MASTER_ADDR /
        MASTER_PORT say otherwise. Anything else is a single process."""
        e = os.environ if environ is None else environ
        if "RANK" in e and "WORLD_SIZE" in e:
            return cls(rank=int(e["RANK"]), local_rank=int(e.get("LOCAL_RANK", 0)),
                       world_size=int(e["WORLD_SIZE"]),
                       local_world_size=int(e.get("LOCAL_WORLD_SIZE", 1)),
                       master_addr=e.get("MASTER_ADDR", "127.0.0.1"),
                       master_port=int(e.get("MASTER_PORT", 29500)), launcher="torchrun")
        if "SLURM_PROCID" in e and int(e.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in e:
            return cls(rank=int(e["SLURM_PROCID"]), local_rank=int(e.get("SLURM_LOCALID", 0)),
                       world_size=int(e["SLURM_NTASKS"]),
                       local_world_size=int(e.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0]),
                       master_addr=e.get("MASTER_ADDR") or first_host(e.get("SLURM_STEP_NODELIST")
                                                                     or e.get("SLURM_JOB_NODELIST", "127.0.0.1")),
                       master_port=int(e.get("MASTER_PORT") or slurm_port(e)), launcher="slurm")
        return cls()


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: "gpu[03-05,7],cpu1" -> "gpu03"."""
    m = re.match(r"([^,\[]+)(?:\[([^,\]-]+))?", nodelist.strip())
    if not m:
        raise ValueError(f"cannot read a host from the Slurm node list {nodelist!r}")
    return m.group(1) + (m.group(2) or "")


def slurm_port(environ=None) -> int:
    """A rendezvous port every task of a job derives alike: a hash of the job id and restart
    count into 20000-29999 (below Linux's ephemeral range), so a restart never meets the previous
    attempt's socket and neighbouring job ids do not collide systematically."""
    e = os.environ if environ is None else environ
    key = f"{int(e.get('SLURM_JOB_ID', 0))}.{int(e.get('SLURM_RESTART_COUNT', 0))}"
    return 20000 + zlib.crc32(key.encode()) % 10000

"""Who am I in the job: rank, world size and rendezvous, read from torchrun or Slurm."""
from __future__ import annotations

import dataclasses
import os


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
        """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; srun without torchrun sets SLURM_PROCID,
        SLURM_NTASKS and SLURM_LOCALID. Anything else is a single process."""
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
                       master_addr=e.get("MASTER_ADDR", "127.0.0.1"),
                       master_port=int(e.get("MASTER_PORT", 29500)), launcher="slurm")
        return cls()

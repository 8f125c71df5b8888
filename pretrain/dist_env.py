"""Where am I? Rank, local rank, world size and rendezvous from whatever launcher started us.

One place for every launcher's variables: torchrun / DeepSpeed (RANK, LOCAL_RANK, WORLD_SIZE),
SLURM (SLURM_PROCID ...), Open MPI (OMPI_COMM_WORLD_*), MPICH / Hydra and other PMI (PMI_RANK, PMI_SIZE,
MPI_LOCALRANKID). A pure function of the environment so it is unit-testable.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from collections.abc import Mapping

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun" (also deepspeed), "slurm", "openmpi", "pmi", "single"

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def export(self, environ: dict | None = None) -> None:
        """Write the torch.distributed variables so `init_process_group("env://")` works."""
        env = os.environ if environ is None else environ
        env.update({"RANK": str(self.rank), "LOCAL_RANK": str(self.local_rank),
                    "WORLD_SIZE": str(self.world_size), "LOCAL_WORLD_SIZE": str(self.local_world_size),
                    "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port)})


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM nodelist such as ``gpu[003-005,7],cpu1`` -> ``gpu003``."""
    nodelist = nodelist.strip()
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)
    if not m:
        raise ValueError(f"cannot parse SLURM nodelist {nodelist!r}")
    prefix, _, ranges = m.groups()
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def _int(env: Mapping[str, str], *names: str, default: int | None = None) -> int | None:
    for n in names:
        if env.get(n, "") != "":
            return int(env[n])
    return default


def discover(environ: Mapping[str, str] | None = None) -> DistEnv:
    env = os.environ if environ is None else environ
    port = _int(env, "MASTER_PORT", default=DEFAULT_PORT)
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, deepspeed launcher, or already exported
        ws = int(env["WORLD_SIZE"])
        return DistEnv(int(env["RANK"]), _int(env, "LOCAL_RANK", default=0), ws,
                       _int(env, "LOCAL_WORLD_SIZE", default=ws), env.get("MASTER_ADDR", "127.0.0.1"), port,
                       "torchrun")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        master = env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_STEP_NODELIST")
                                                             or env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        ws = int(env["SLURM_NTASKS"])
        lws = _int(env, "SLURM_NTASKS_PER_NODE", default=None)
        if lws is None:
            tpn = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", str(ws))
            lws = int(re.match(r"\d+", tpn).group(0))
        return DistEnv(int(env["SLURM_PROCID"]), _int(env, "SLURM_LOCALID", default=0), ws, lws, master, port,
                       "slurm")
    if "OMPI_COMM_WORLD_RANK" in env:
        ws = int(env["OMPI_COMM_WORLD_SIZE"])
        return DistEnv(int(env["OMPI_COMM_WORLD_RANK"]), _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", default=0), ws,
                       _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", default=ws), env.get("MASTER_ADDR", "127.0.0.1"),
                       port, "openmpi")
    if "PMI_RANK" in env and "PMI_SIZE" in env:
        ws = int(env["PMI_SIZE"])
        return DistEnv(int(env["PMI_RANK"]), _int(env, "MPI_LOCALRANKID", "PMI_LOCAL_RANK", default=0), ws,
                       _int(env, "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE", default=ws),
                       env.get("MASTER_ADDR", "127.0.0.1"), port, "pmi")
    return DistEnv(0, 0, 1, 1, env.get("MASTER_ADDR", "127.0.0.1"), port, "single")

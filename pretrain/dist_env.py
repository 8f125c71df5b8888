"""Where am I? Rank, local rank, world size and rendezvous from whatever launcher started us.

One place for every launcher's variables: torchrun / DeepSpeed (RANK, LOCAL_RANK, WORLD_SIZE),
SLURM (SLURM_PROCID ...), Open MPI (OMPI_COMM_WORLD_*), MPICH / Hydra and other PMI (PMI_RANK, PMI_SIZE,
MPI_LOCALRANKID). `discover` is a pure function of the environment so it is unit-testable;
`wait_for_master` / `init_process_group` bound the rendezvous so a wrong address fails with a line
naming address and port instead of hanging for half an hour.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pretrain.errors import PretrainError

DEFAULT_PORT = 29500
DEFAULT_RENDEZVOUS_TIMEOUT_S = 300.0


class RendezvousError(PretrainError, RuntimeError):
    """The ranks could not meet: the message names the address and port tried and what to check."""


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

    @property
    def node_rank(self) -> int:
        return self.rank // max(self.local_world_size, 1)

    def export(self, environ: dict | None = None, announce: bool = True, device_index: int | None = None) -> None:
        """Write the torch.distributed variables so `init_process_group("env://")` works.

        ``device_index``: the CUDA device this rank drives (engine.pick_device). DeepSpeed reads
        LOCAL_RANK as a device index (the ``device_id`` its ``init_distributed`` gives NCCL, ZeRO-3's
        ``set_device``), so LOCAL_RANK is exported as that index: under one-GPU-per-task binding the
        launcher's local rank (SLURM_LOCALID 3, say) names a device this process cannot see, while
        its one device is cuda:0. Our own code keeps the launcher's local rank in DistEnv.

        Also points gloo at the interface that routes to the master when the user has not chosen
        one: gloo otherwise binds to whatever the hostname resolves to (often 127.0.0.1 on clusters
        whose /etc/hosts maps the hostname to loopback) and the ranks never meet. Every rank of a
        distributed run says on stderr where it runs and which address it talks from: the first
        thing to look at when a multi-node job hangs.
        """
        env = os.environ if environ is None else environ
        local = self.local_rank if device_index is None else device_index
        env.update({"RANK": str(self.rank), "LOCAL_RANK": str(local),
                    "WORLD_SIZE": str(self.world_size), "LOCAL_WORLD_SIZE": str(self.local_world_size),
                    "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port)})
        if self.is_distributed and not env.get("GLOO_SOCKET_IFNAME"):
            ifname = interface_towards(self.master_addr)
            if ifname:
                env["GLOO_SOCKET_IFNAME"] = ifname
        if self.is_distributed and announce:
            print(f"[dist_env] rank {self.rank}/{self.world_size} (local {self.local_rank}, {self.launcher}) on "
                  f"{socket.gethostname()} addr {address_towards(self.master_addr)} -> master "
                  f"{self.master_addr}:{self.master_port}", file=sys.stderr, flush=True)


def expand_slurm_nodelist(nodelist: str) -> list[str]:
    """All hosts of a SLURM nodelist: ``gpu[003-004,7],cpu1`` -> gpu003 gpu004 gpu7 cpu1 (zero padding kept)."""
    hosts: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?([^,\[]*)", nodelist.strip()):
        prefix, ranges, suffix = m.groups()
        if not ranges:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                hosts.append(prefix + lo + suffix)
                continue
            width = len(lo)
            hosts.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1))
    if not hosts:
        raise ValueError(f"cannot parse SLURM nodelist {nodelist!r}")
    return hosts


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM nodelist such as ``gpu[003-005,7],cpu1`` -> ``gpu003``."""
    return expand_slurm_nodelist(nodelist)[0]


def _int(env: Mapping[str, str], *names: str, default: int | None = None) -> int | None:
    for n in names:
        if env.get(n, "") != "":
            try:
                return int(env[n])
            except ValueError:
                raise ValueError(f"environment variable {n}={env[n]!r} is not an integer") from None
    return default


def _first_count(tasks_per_node: str) -> int:
    """SLURM's compressed per-node task counts ("2(x3),1") -> the first node's count."""
    m = re.match(r"\d+", tasks_per_node)
    if not m:
        raise ValueError(f"cannot parse SLURM tasks-per-node {tasks_per_node!r}")
    return int(m.group(0))


def discover(environ: Mapping[str, str] | None = None) -> DistEnv:
    env = os.environ if environ is None else environ
    port = _int(env, "MASTER_PORT", default=DEFAULT_PORT)
    addr = env.get("MASTER_ADDR") or "127.0.0.1"
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, deepspeed launcher, or already exported
        ws = int(env["WORLD_SIZE"])
        return DistEnv(int(env["RANK"]), _int(env, "LOCAL_RANK", default=0), ws,
                       _int(env, "LOCAL_WORLD_SIZE", "LOCAL_SIZE", default=ws), addr, port, "torchrun")
    # SLURM_PROCID is also set in the batch script itself (one task); only an srun step's tasks
    # carry SLURM_STEP_ID, so a command run straight from the batch script stays single-process.
    if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        ws = _int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", default=1)
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        master = env.get("MASTER_ADDR") or first_slurm_host(nodelist)
        lws = _int(env, "SLURM_NTASKS_PER_NODE", default=None)
        if lws is None:
            lws = _first_count(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
                               or str(ws))
        return DistEnv(int(env["SLURM_PROCID"]), _int(env, "SLURM_LOCALID", default=0), ws, lws, master, port,
                       "slurm")
    if "OMPI_COMM_WORLD_RANK" in env:
        ws = int(env["OMPI_COMM_WORLD_SIZE"])
        return DistEnv(int(env["OMPI_COMM_WORLD_RANK"]), _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", default=0), ws,
                       _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", default=ws), addr, port, "openmpi")
    if "PMI_RANK" in env and "PMI_SIZE" in env:
        ws = int(env["PMI_SIZE"])
        return DistEnv(int(env["PMI_RANK"]), _int(env, "MPI_LOCALRANKID", "PMI_LOCAL_RANK", default=0), ws,
                       _int(env, "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE", default=ws), addr, port, "pmi")
    return DistEnv(0, 0, 1, 1, addr, port, "single")


def address_towards(addr: str) -> str | None:
    """Local IPv4 address the kernel would send from to reach `addr` (None if it does not resolve).

    A connected UDP socket sends nothing; it only asks the routing table for a source address.
    """
    try:
        target = socket.getaddrinfo(addr, None, socket.AF_INET)[0][4][0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((target, 9))
            return s.getsockname()[0]
    except (OSError, IndexError, ValueError):
        return None


def interface_towards(addr: str) -> str | None:
    """Name of the local interface that routes to `addr` (None if unknown or loopback)."""
    local = address_towards(addr)
    if local is None or ipaddress.ip_address(local).is_loopback:
        return None
    import psutil  # listed in requirements; imported here so `discover` stays dependency-free

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == local for a in addrs):
            return name if name != "lo" else None
    return None


def rendezvous_timeout_s(environ: Mapping[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    v = env.get("LINKBERT_RENDEZVOUS_TIMEOUT", "")
    try:
        return float(v) if v else DEFAULT_RENDEZVOUS_TIMEOUT_S
    except ValueError:
        raise ValueError(f"LINKBERT_RENDEZVOUS_TIMEOUT={v!r} is not a number of seconds") from None


def _hint(de: DistEnv) -> str:
    return (f"(rank {de.rank}/{de.world_size} from {de.launcher}); check that rank 0 started, that "
            f"{de.master_addr} is the first node's address reachable from this host, and that port "
            f"{de.master_port} is free and not firewalled; set LINKBERT_RENDEZVOUS_TIMEOUT to wait longer")


def wait_for_endpoint(addr: str, port: int, timeout_s: float, hint: str = "", poll_s: float = 0.5) -> None:
    """Wait until something accepts TCP connections at addr:port, or raise RendezvousError naming it."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        try:
            with socket.create_connection((addr, port), timeout=min(5.0, max(timeout_s, 0.1))):
                return
        except OSError as e:  # refused, unreachable, unresolvable: retry until the deadline
            last = e.strerror or str(e)
        if time.monotonic() >= deadline:
            raise RendezvousError(f"rendezvous timed out after {timeout_s:g}s: nothing answered at "
                                  f"{addr}:{port} (last error: {last}) {hint}".rstrip())
        time.sleep(poll_s)


def wait_for_master(de: DistEnv, timeout_s: float | None = None, poll_s: float = 0.5) -> None:
    """Non-zero ranks: wait until something listens at MASTER_ADDR:MASTER_PORT, or raise naming it.

    torch's own store connect retries silently for its full timeout (30 min by default); this turns
    the most common multi-node mistake (wrong or unreachable master) into one clear line.
    """
    if de.rank == 0 or not de.is_distributed:
        return
    timeout_s = rendezvous_timeout_s() if timeout_s is None else timeout_s
    wait_for_endpoint(de.master_addr, de.master_port, timeout_s, _hint(de), poll_s)


def init_process_group(backend: str = "gloo", de: DistEnv | None = None, timeout_s: float | None = None):
    """`torch.distributed.init_process_group` bounded in time, failures naming address and port.

    Exports the discovered variables first so DeepSpeed (which reads them) sees the same ranks.
    """
    import torch.distributed as dist

    de = discover() if de is None else de
    de.export()
    timeout_s = rendezvous_timeout_s() if timeout_s is None else timeout_s
    wait_for_master(de, timeout_s)
    try:
        dist.init_process_group(backend=backend, init_method="env://", rank=de.rank, world_size=de.world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as e:  # torch raises DistStoreError/RuntimeError/ValueError variants by version
        raise RendezvousError(f"rendezvous at {de.master_addr}:{de.master_port} failed: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__} {_hint(de)}") from e
    return de

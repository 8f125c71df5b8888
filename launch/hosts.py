"""Hostfiles (DeepSpeed / Open MPI `host slots=N`, MPICH `host:N`, plain one host a line) and GPU counting.

Every launcher wants its own hostfile dialect; users have one file. We read any of them, check that
every host resolves (a typo otherwise surfaces as a ten-minute ssh/rendezvous hang) and write the
dialect the chosen launcher needs.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from launch.errors import LaunchError


@dataclass(frozen=True)
class Host:
    name: str
    slots: int | None = None  # None: the file did not say


_SLOTS = re.compile(r"^(?P<host>[^\s:#]+)\s+(?:max[-_])?slots\s*=\s*(?P<n>\d+)\s*(?:max[-_]slots\s*=\s*\d+\s*)?$")
_MPICH = re.compile(r"^(?P<host>[^\s:#]+)(?::(?P<n>\d+))?$")


def parse_hostfile(path: str | os.PathLike) -> list[Host]:
    p = Path(path)
    if not p.is_file():
        raise LaunchError(f"hostfile {p} does not exist; write one host a line ('node1 slots=8' or 'node1:8')")
    hosts: list[Host] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(p.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _SLOTS.match(line) or _MPICH.match(line)
        if not m:
            raise LaunchError(f"{p}:{lineno}: cannot read {raw.strip()!r}; expected 'HOST slots=N', 'HOST:N' or 'HOST'")
        name, n = m.group("host"), m.group("n")
        if name in seen:
            raise LaunchError(f"{p}:{lineno}: host {name} is listed twice; list each host once with its slot count")
        seen.add(name)
        hosts.append(Host(name, int(n) if n is not None else None))
    if not hosts:
        raise LaunchError(f"hostfile {p} names no hosts")
    return hosts


def check_resolvable(hosts: list[Host], source: str) -> None:
    """Fail fast, naming the host, when a hostfile entry does not resolve."""
    for h in hosts:
        try:
            socket.getaddrinfo(h.name, None)
        except (OSError, UnicodeError):
            raise LaunchError(f"{source}: host {h.name!r} does not resolve on this machine; fix the name or add it "
                              f"to /etc/hosts / DNS (launchers would otherwise hang at ssh or rendezvous)") from None


def select_hosts(hosts: list[Host], nodes: int, procs_per_node: int, source: str) -> list[Host]:
    """The first `nodes` hosts, each with `procs_per_node` slots (and enough slots if the file says)."""
    if len(hosts) < nodes:
        raise LaunchError(f"{source} lists {len(hosts)} host(s) but --nodes {nodes} was asked; "
                          f"add hosts or lower --nodes")
    out = []
    for h in hosts[:nodes]:
        if h.slots is not None and h.slots < procs_per_node:
            raise LaunchError(f"{source}: host {h.name} has slots={h.slots} but --procs-per-node {procs_per_node}"
                              f" was asked; raise its slots or lower --procs-per-node")
        out.append(Host(h.name, procs_per_node))
    return out


def format_hostfile(hosts: list[Host], dialect: str) -> str:
    """`slots` (DeepSpeed, Open MPI) or `mpich` (Hydra's host:N)."""
    if dialect == "slots":
        return "".join(f"{h.name} slots={h.slots}\n" for h in hosts)
    if dialect == "mpich":
        return "".join(f"{h.name}:{h.slots}\n" for h in hosts)
    raise ValueError(dialect)


def local_gpu_count(environ: dict | None = None) -> int:
    """GPUs usable here: CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`, else the driver's /proc entry.

    Deliberately avoids importing torch (seconds of start-up for a launcher that only spawns commands).
    """
    env = os.environ if environ is None else environ
    vis = env.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        vis = vis.strip()
        return 0 if vis in ("", "-1", "NoDevFiles") else len([v for v in vis.split(",") if v.strip()])
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            pass
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0

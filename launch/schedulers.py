"""Plans for the launchers that start ranks directly: local, torchrun, DeepSpeed (pdsh), MPI.

Each function maps a `LaunchRequest` to a `Plan` (argv + files + env) without side effects beyond
reading the hostfile, asking which `mpirun` this is, and looking tools up on PATH.
"""
from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from launch.errors import LaunchError
from launch.hosts import (
    Host,
    check_resolvable,
    format_hostfile,
    local_gpu_count,
    parse_hostfile,
    select_hosts,
)
from launch.request import LaunchRequest, Plan, default_gpus, forwarded_env, resolve_command

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _gpu_env(gpus: int, environ: dict | None = None) -> dict[str, str]:
    """Limit ranks to G devices when fewer than all are wanted (G=0 on a GPU machine: run on CPU).

    The first G of the devices this process may use: an inherited CUDA_VISIBLE_DEVICES ("4,5,6,7" on a
    shared node, or GPU UUIDs) keeps its entries, never renumbered to 0..G-1 (other jobs' GPUs).
    """
    env = os.environ if environ is None else environ
    available = local_gpu_count(env)
    if available == 0 or gpus >= available:
        return {}
    inherited = env.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None and inherited.strip():
        devices = [v.strip() for v in inherited.split(",") if v.strip()]
    else:
        devices = [str(i) for i in range(available)]
    return {"CUDA_VISIBLE_DEVICES": ",".join(devices[:gpus])}


def _hosts(req: LaunchRequest, need_file: bool) -> list[Host]:
    if req.hostfile:
        hosts = select_hosts(parse_hostfile(req.hostfile), req.nodes, req.procs_per_node, req.hostfile)
        check_resolvable(hosts, req.hostfile)
        return hosts
    if req.nodes > 1 and need_file:
        raise LaunchError(f"--scheduler {req.scheduler} with --nodes {req.nodes} needs --hostfile FILE listing "
                          f"the nodes ('node1 slots={req.procs_per_node}' a line)")
    return [Host("localhost", req.procs_per_node)]


def _run_dir(req: LaunchRequest) -> Path:
    return Path(req.workdir).resolve() / ".linkbert_launch"


def _this_host_names() -> set[str]:
    names = {socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1"}
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            names.update(a.address for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))
    except ImportError:
        pass
    return names


def plan_local(req: LaunchRequest) -> Plan:
    if req.nodes != 1:
        raise LaunchError(f"--scheduler local runs on this machine only; use --nodes 1 (got {req.nodes}) or pick "
                          f"torchrun/deepspeed/mpi/slurm for several nodes")
    gpus = default_gpus(req, local_gpu_count())
    cmd = resolve_command(req.command, req.dry_run)
    env = {**_gpu_env(gpus), **req.env}
    if req.procs_per_node == 1:
        return Plan(cmd, env=env)
    # torchrun --standalone picks a free port itself, so concurrent local runs do not collide.
    return Plan(TORCHRUN + ["--standalone", "--nnodes", "1", "--nproc-per-node", str(req.procs_per_node),
                            "--max-restarts", "0", "--no-python"] + cmd, env=env)


def _torchrun_argv(req: LaunchRequest, node_rank: int, master: str, cmd: list[str]) -> list[str]:
    return TORCHRUN + ["--nnodes", str(req.nodes), "--node-rank", str(node_rank), "--nproc-per-node",
                       str(req.procs_per_node), "--master-addr", master, "--master-port", str(req.port),
                       "--max-restarts", "0", "--no-python"] + cmd


def plan_torchrun(req: LaunchRequest) -> Plan:
    """One torchrun per node; this call runs this node's. Node rank: --node-rank or our place in the hostfile."""
    hosts = _hosts(req, need_file=False) if req.hostfile else None
    master = req.master_addr or (hosts[0].name if hosts else None)
    if req.nodes == 1:
        master = master or "127.0.0.1"
    if master is None:
        raise LaunchError(f"--scheduler torchrun with --nodes {req.nodes} needs --master-addr (node 0's address) "
                          f"or --hostfile (its first host is the master)")
    node_rank = req.node_rank
    if node_rank is None and req.nodes == 1:
        node_rank = 0
    if node_rank is None and hosts:
        mine = _this_host_names()
        matches = [i for i, h in enumerate(hosts) if h.name in mine]
        if len(matches) == 1:
            node_rank = matches[0]
    cmd = resolve_command(req.command, req.dry_run)
    gpus = default_gpus(req, local_gpu_count())
    per_node = [shlex.join(["linkbert-launch", "--scheduler", "torchrun", "--nodes", str(req.nodes),
                            "--procs-per-node", str(req.procs_per_node), "--master-addr", master,
                            "--master-port", str(req.port), "--node-rank", str(r), "--"] + req.command)
                for r in range(req.nodes)]
    notes = ["# run one command per node:"] + [f"#   node {r}: {c}" for r, c in enumerate(per_node)]
    if node_rank is None:
        raise LaunchError(f"cannot tell which of the {req.nodes} nodes this is ({socket.gethostname()}); pass "
                          f"--node-rank R on each node (0 on {master}); --dry-run prints every node's command")
    env = {**_gpu_env(gpus), "MASTER_ADDR": master, "MASTER_PORT": str(req.port),
           "LINKBERT_RENDEZVOUS_TIMEOUT": str(req.rendezvous_timeout), **req.env}
    return Plan(_torchrun_argv(req, node_rank, master, cmd), env=env, notes=notes,
                wait_for=(master, req.port) if node_rank > 0 else None)


def plan_deepspeed(req: LaunchRequest) -> Plan:
    """DeepSpeed's runner over pdsh: a slots hostfile, environment in `.deepspeed_env` (DS_ENV_FILE)."""
    hosts = _hosts(req, need_file=True)
    multi = req.hostfile is not None and (len(hosts) > 1 or hosts[0].name not in _this_host_names())
    if multi and not shutil.which("pdsh"):
        raise LaunchError("pdsh not found on PATH; DeepSpeed starts remote ranks with it "
                          "(apt-get install pdsh, or use --scheduler mpi/slurm/torchrun)")
    gpus = default_gpus(req, local_gpu_count())
    run_dir = _run_dir(req)
    hostfile = run_dir / "hostfile"
    env_file = run_dir / "deepspeed_env"
    master = req.master_addr or (hosts[0].name if multi else "127.0.0.1")
    fwd = forwarded_env(extra={**_gpu_env(gpus), "MASTER_ADDR": master,
                               "LINKBERT_RENDEZVOUS_TIMEOUT": str(req.rendezvous_timeout), **req.env})
    fwd.pop("MASTER_PORT", None)  # the runner sets it per rank from --master_port
    # DeepSpeed double-quotes values with special characters itself when it writes `export K=V;`.
    env_text = "".join(f"{k}={v}\n" for k, v in sorted(fwd.items()) if '"' not in v and "$" not in v)
    argv = [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile), "--num_nodes",
            str(req.nodes), "--master_addr", master, "--master_port", str(req.port), "--launcher", "pdsh",
            "--no_ssh_check", "--no_python", "--no_local_rank"]
    if multi:
        argv.append("--force_multi")  # also with one remote host, so it is reached over ssh
    if req.ssh_port:
        argv += ["--ssh_port", str(req.ssh_port)]
    argv += resolve_command(req.command, req.dry_run)
    return Plan(argv, env={"DS_ENV_FILE": str(env_file), **_gpu_env(gpus), **req.env},
                files={str(hostfile): format_hostfile(hosts, "slots"), str(env_file): env_text})


def mpi_flavor(mpirun: str) -> str:
    """'openmpi' or 'mpich' (MPICH/Hydra, Intel MPI, MVAPICH2 share Hydra's flags), from `mpirun --version`."""
    try:
        out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30)
        text = out.stdout + out.stderr
    except (OSError, subprocess.SubprocessError) as e:
        raise LaunchError(f"cannot run {mpirun} --version ({e}); check the MPI installation") from None
    if "Open MPI" in text or "OpenRTE" in text or "open-mpi" in text:
        return "openmpi"
    if any(s in text for s in ("HYDRA", "MPICH", "Intel(R) MPI", "MVAPICH")):
        return "mpich"
    raise LaunchError(f"{mpirun} is neither Open MPI nor MPICH/Hydra (its --version says "
                      f"{text.strip().splitlines()[:1]}); pass --mpi-flavor openmpi|mpich")


def plan_mpi(req: LaunchRequest, mpirun: str | None = None, flavor: str | None = None) -> Plan:
    mpirun = mpirun or req.mpirun or shutil.which("mpirun") or shutil.which("mpirun", path=str(Path(sys.executable).parent))
    if req.mpirun and not (os.path.isfile(mpirun) or shutil.which(mpirun)):
        raise LaunchError(f"--mpirun {req.mpirun} does not exist; give the path of the MPI's mpirun")
    if not mpirun:
        raise LaunchError("mpirun not found on PATH; install an MPI (pip install mpich, or apt-get install "
                          "openmpi-bin) or activate the environment that has it")
    flavor = flavor or req.mpi_flavor or mpi_flavor(mpirun)
    hosts = _hosts(req, need_file=True)
    gpus = default_gpus(req, local_gpu_count())
    master = req.master_addr or (hosts[0].name if req.hostfile else "127.0.0.1")
    ranks_env = {**_gpu_env(gpus), "MASTER_ADDR": master, "MASTER_PORT": str(req.port),
                 "LINKBERT_RENDEZVOUS_TIMEOUT": str(req.rendezvous_timeout), **req.env}
    hostfile = _run_dir(req) / "hostfile"
    files = {}
    cmd = resolve_command(req.command, req.dry_run)
    if flavor == "openmpi":
        argv = [mpirun, "-np", str(req.world_size), "--map-by", f"ppr:{req.procs_per_node}:node", "--bind-to", "none"]
        if os.geteuid() == 0:
            argv.append("--allow-run-as-root")
        if req.hostfile:
            files[str(hostfile)] = format_hostfile(hosts, "slots")
            argv += ["--hostfile", str(hostfile)]
        if req.ssh_port:
            argv += ["--mca", "plm_rsh_args", f"-p {req.ssh_port}"]
        # Open MPI copies no environment to remote ranks unless told, variable by variable.
        for k, v in sorted(forwarded_env(extra=ranks_env).items()):
            argv += ["-x", f"{k}={v}"]
    elif flavor == "mpich":
        argv = [mpirun, "-n", str(req.world_size), "-ppn", str(req.procs_per_node)]
        if req.hostfile:
            files[str(hostfile)] = format_hostfile(hosts, "mpich")
            argv += ["-f", str(hostfile)]
        if req.ssh_port:
            argv += ["-bootstrap-exec-args", f"-p {req.ssh_port}"]
        # Hydra passes the whole environment by default; -genv sets the rendezvous for every rank.
        for k, v in sorted(ranks_env.items()):
            argv += ["-genv", k, v]
    else:
        raise LaunchError(f"unknown MPI flavor {flavor!r}; use openmpi or mpich")
    return Plan(argv + cmd, files=files)

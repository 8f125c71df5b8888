"""What the user asked for (`LaunchRequest`) and what a scheduler turns it into (`Plan`).

Schedulers are pure functions request -> plan so tests check the generated commands, hostfiles
and scripts without starting anything; `launch.runner` executes a plan.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from launch.errors import LaunchError
from launch.rendezvous import DEFAULT_PORT, DEFAULT_RENDEZVOUS_TIMEOUT_S

SCHEDULERS = ("local", "torchrun", "deepspeed", "mpi", "slurm")

# Forwarded to ranks on other hosts by launchers that do not copy the whole environment
# (Open MPI -x, DeepSpeed's .deepspeed_env). Prefixes, matched with str.startswith.
FORWARD_PREFIXES = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "OMP_", "MKL_", "NCCL_", "GLOO_",
                    "TP_SOCKET", "LINKBERT_", "DS_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "TORCH",
                    "TRITON_", "CUDA_", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class LaunchRequest:
    scheduler: str
    command: list[str]
    nodes: int = 1
    procs_per_node: int = 1
    gpus_per_node: int | None = None  # None: P where GPUs exist, else 0
    hostfile: str | None = None
    master_addr: str | None = None
    master_port: int | None = None  # None: DEFAULT_PORT, or derived from the job id under SLURM
    node_rank: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    rendezvous_timeout: float = DEFAULT_RENDEZVOUS_TIMEOUT_S
    workdir: str = "."
    # slurm
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    job_name: str = "linkbert"
    log_dir: str = "slurm_logs"
    signal: str = "USR1@120"
    requeue: bool = True
    after: str | None = None
    container_image: str | None = None
    container_mounts: str | None = None
    sbatch_args: list[str] = field(default_factory=list)
    ssh_port: int | None = None
    mpi_flavor: str | None = None  # None: detect from `mpirun --version`
    mpirun: str | None = None  # None: the first mpirun on PATH

    def validate(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise LaunchError(f"unknown --scheduler {self.scheduler!r}; pick one of {', '.join(SCHEDULERS)}")
        if not self.command:
            raise LaunchError("no command given; put it after '--', e.g. linkbert-launch ... -- linkbert-pretrain "
                              "--data DIR --output DIR")
        if self.nodes < 1 or self.procs_per_node < 1:
            raise LaunchError(f"--nodes ({self.nodes}) and --procs-per-node ({self.procs_per_node}) must be >= 1")
        if self.gpus_per_node is not None and self.gpus_per_node < 0:
            raise LaunchError(f"--gpus-per-node must be >= 0, got {self.gpus_per_node}")
        if self.node_rank is not None and not 0 <= self.node_rank < self.nodes:
            raise LaunchError(f"--node-rank {self.node_rank} is outside 0..{self.nodes - 1} (--nodes {self.nodes})")
        if self.master_port is not None and not 0 < self.master_port < 65536:
            raise LaunchError(f"--master-port {self.master_port} is not a TCP port")

    dry_run: bool = False

    @property
    def port(self) -> int:
        return DEFAULT_PORT if self.master_port is None else self.master_port

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


@dataclass
class Plan:
    """Commands to run here (in order; all but the last are set-up), files to write first, env to add."""
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # printed with --dry-run (e.g. the other nodes' commands)
    wait_for: tuple[str, int] | None = None  # (addr, port) to reach before starting: non-zero torchrun nodes
    submit: bool = False  # slurm: argv is sbatch and its output is a job id

    def describe(self) -> str:
        import shlex

        if self.submit:  # the sbatch script itself, so `--dry-run > job.sbatch` gives a submittable file
            return next(iter(self.files.values())).rstrip() + f"\n# submit with: sbatch {shlex.quote(self.argv[-1])}"
        out = []
        for path, text in self.files.items():
            out.append(f"# file {path}\n{text.rstrip()}\n# end of {path}")
        if self.env:
            out.append(" ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())))
        out.append(shlex.join(self.argv))
        out.extend(self.notes)
        return "\n".join(out)


def resolve_command(command: list[str], dry_run: bool = False) -> list[str]:
    """Absolute path for the program, so ranks started over ssh/srun with a bare PATH find the same one.

    A dry run (e.g. writing an sbatch script on a laptop) keeps a name it cannot find.
    """
    prog = command[0]
    if os.sep in prog:
        return [os.path.abspath(prog)] + command[1:]
    found = shutil.which(prog) or shutil.which(prog, path=str(Path(sys.executable).parent))
    if not found and dry_run:
        return list(command)
    if not found:
        raise LaunchError(f"command {prog!r} not found on PATH; activate the environment that has it "
                          f"(e.g. source .venv/bin/activate) or give its full path")
    return [found] + command[1:]


def forwarded_env(environ: dict[str, str] | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Variables remote ranks need: the venv on PATH, threads, NCCL/gloo/HF/DeepSpeed settings, user --env."""
    env = dict(os.environ if environ is None else environ)
    venv_bin = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if venv_bin not in path.split(os.pathsep):
        env["PATH"] = venv_bin + (os.pathsep + path if path else "")
    out = {k: v for k, v in env.items() if k.startswith(FORWARD_PREFIXES) and "\n" not in v}
    out.update(extra or {})
    return out


def default_gpus(req: LaunchRequest, available: int) -> int:
    """G: P where GPUs exist, else 0; asking for more than exist is an error."""
    if req.gpus_per_node is None:
        return req.procs_per_node if available > 0 else 0
    if req.gpus_per_node > available:
        raise LaunchError(f"--gpus-per-node {req.gpus_per_node} asked but this machine has {available} GPU(s) "
                          f"(nvidia-smi / CUDA_VISIBLE_DEVICES); drop --gpus-per-node to run on CPU")
    return req.gpus_per_node

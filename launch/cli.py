"""`linkbert-launch`: start a command as N x P ranks with local, torchrun, DeepSpeed, MPI or SLURM.

    linkbert-launch --scheduler slurm --nodes 4 --procs-per-node 8 --partition gpu --time 2-00:00:00 \\
        -- linkbert-pretrain --config base.yaml --data data/ --output runs/base

Everything after `--` is the command each rank runs. The CLI only parses; `launch.runner.launch`
does the work (tests call it directly).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from launch.errors import LaunchError
from launch.rendezvous import DEFAULT_PORT
from launch.request import SCHEDULERS, LaunchRequest
from launch.runner import launch

# argparse defaults come from LaunchRequest: one place for each
DEFAULTS = {f.name: f.default for f in dataclasses.fields(LaunchRequest) if f.default is not dataclasses.MISSING}


def _env_pair(s: str) -> tuple[str, str]:
    k, sep, v = s.partition("=")
    if not sep or not k:
        raise argparse.ArgumentTypeError(f"--env expects KEY=VALUE, got {s!r}")
    return k, v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linkbert-launch", description=__doc__.splitlines()[0],
                                usage="%(prog)s --scheduler S [options] -- COMMAND [ARGS...]")
    p.add_argument("--scheduler", required=True, choices=SCHEDULERS)
    p.add_argument("--nodes", type=int, default=DEFAULTS["nodes"], help="N nodes (default %(default)s)")
    p.add_argument("--procs-per-node", type=int, default=DEFAULTS["procs_per_node"],
                   help="P ranks per node (default %(default)s)")
    p.add_argument("--gpus-per-node", type=int, default=None,
                   help="G GPUs per node; default P where GPUs exist, 0 elsewhere")
    p.add_argument("--hostfile", help="hosts, one a line: 'host slots=N', 'host:N' or 'host' (torchrun/deepspeed/mpi)")
    p.add_argument("--master-addr", help="rendezvous address (default: first host, or the first SLURM node)")
    p.add_argument("--master-port", type=int, default=None,
                   help=f"rendezvous port (default {DEFAULT_PORT}; under SLURM derived from the job id)")
    p.add_argument("--node-rank", type=int, default=None, help="torchrun: this node's rank (default: from hostfile)")
    p.add_argument("--rendezvous-timeout", type=float, default=DEFAULTS["rendezvous_timeout"],
                   help="seconds to wait for the master before failing with its address and port (default %(default)g)")
    p.add_argument("--env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="set in every rank's environment (repeatable)")
    p.add_argument("--ssh-port", type=int, default=None, help="deepspeed/mpi: ssh port of the other hosts")
    p.add_argument("--mpirun", default=None, help="mpi: the mpirun to use (default: the first on PATH)")
    p.add_argument("--mpi-flavor", choices=("openmpi", "mpich"), default=None,
                   help="mpi: override detection from `mpirun --version`")
    p.add_argument("--dry-run", action="store_true", help="print the command / sbatch script, start nothing")
    s = p.add_argument_group("slurm")
    s.add_argument("--partition")
    s.add_argument("--time", help="time limit, e.g. 2-00:00:00")
    s.add_argument("--account")
    s.add_argument("--cpus-per-task", type=int)
    s.add_argument("--mem", help="memory per node, e.g. 400G")
    s.add_argument("--job-name", default=DEFAULTS["job_name"])
    s.add_argument("--log-dir", default=DEFAULTS["log_dir"], help="where the script and %%x-%%j.out logs go")
    s.add_argument("--signal", default=DEFAULTS["signal"],
                   help="SIG@SECONDS before the time limit at which ranks checkpoint and the job requeues")
    s.add_argument("--no-requeue", dest="requeue", action="store_false",
                   help="do not requeue after a time-limit/preemption checkpoint")
    s.add_argument("--after", metavar="JOBID", help="start after JOBID succeeded (or a full dependency spec)")
    s.add_argument("--container-image", help="srun --container-image (pyxis/enroot)")
    s.add_argument("--container-mounts", help="srun --container-mounts")
    s.add_argument("--sbatch-arg", dest="sbatch_args", action="append", default=[],
                   help="extra #SBATCH line, e.g. --sbatch-arg=--qos=high (repeatable)")
    s.add_argument("--parsable", action="store_true", help="print the job id alone on the last line")
    return p


def request_from_args(args: argparse.Namespace, command: list[str]) -> LaunchRequest:
    return LaunchRequest(
        scheduler=args.scheduler, command=command, nodes=args.nodes, procs_per_node=args.procs_per_node,
        gpus_per_node=args.gpus_per_node, hostfile=args.hostfile, master_addr=args.master_addr,
        master_port=args.master_port, node_rank=args.node_rank, env=dict(args.env),
        rendezvous_timeout=args.rendezvous_timeout, partition=args.partition, time=args.time,
        account=args.account, cpus_per_task=args.cpus_per_task, mem=args.mem, job_name=args.job_name,
        log_dir=args.log_dir, signal=args.signal, requeue=args.requeue, after=args.after,
        container_image=args.container_image, container_mounts=args.container_mounts,
        sbatch_args=args.sbatch_args, ssh_port=args.ssh_port, mpi_flavor=args.mpi_flavor,
        mpirun=args.mpirun,
        dry_run=args.dry_run)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if "--" in argv:
        i = argv.index("--")
        own, command = argv[:i], argv[i + 1:]
    else:
        own, command = argv, []
    args = parser.parse_args(own)
    try:
        req = request_from_args(args, command)
        return launch(req, parsable=args.parsable)
    except LaunchError as e:
        print(f"linkbert-launch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

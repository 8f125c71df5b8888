"""Execute a `Plan`: write its files, wait for the master if told to, run or submit, forward signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from launch.errors import LaunchError
from launch.rendezvous import wait_for_endpoint
from launch.request import SCHEDULERS, LaunchRequest, Plan
from launch.schedulers import plan_deepspeed, plan_local, plan_mpi, plan_torchrun
from launch.slurm import parse_job_id, plan_slurm

PLANNERS = {"local": plan_local, "torchrun": plan_torchrun, "deepspeed": plan_deepspeed, "mpi": plan_mpi,
            "slurm": plan_slurm}
assert set(PLANNERS) == set(SCHEDULERS)

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


def make_plan(req: LaunchRequest) -> Plan:
    req.validate()
    return PLANNERS[req.scheduler](req)


def write_files(plan: Plan) -> None:
    for path, text in plan.files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def submit(plan: Plan, parsable: bool, out=None) -> str:
    """Run sbatch; print `Submitted batch job ID` as sbatch does, or the id alone with --parsable."""
    proc = subprocess.run(plan.argv, capture_output=True, text=True, timeout=120, env={**os.environ, **plan.env},
                          preexec_fn=_stop_with_parent())   # an sbatch left alone when we die would still submit
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise LaunchError(f"sbatch refused the job ({msg[-1] if msg else f'exit {proc.returncode}'}); "
                          f"script: {plan.argv[-1]}")
    job_id = parse_job_id(proc.stdout)
    out = out or sys.stdout
    print(job_id if parsable else f"Submitted batch job {job_id}", file=out, flush=True)
    return job_id


def _stop_with_parent():
    """In the child, before exec (Linux): SIGTERM when the launcher dies, even by SIGKILL or OOM, so its
    launcher (torchrun, mpirun, pdsh) stops the ranks (they checkpoint on TERM) instead of running on
    orphaned, holding GPUs and the rendezvous port."""
    parent = os.getpid()

    def arm():
        import ctypes
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:   # not glibc: nothing to arm
            return
        libc.prctl(1, int(signal.SIGTERM))   # PR_SET_PDEATHSIG
        if os.getppid() != parent:           # the launcher died before the line above ran
            os.kill(os.getpid(), signal.SIGTERM)
    return arm if sys.platform.startswith("linux") else None


def run_plan(plan: Plan, req: LaunchRequest) -> int:
    """Run the launcher in the foreground, passing our signals on so a preempted launcher stops its ranks."""
    if plan.wait_for:
        addr, port = plan.wait_for
        wait_for_endpoint(addr, port, req.rendezvous_timeout,
                          "(node rank 0 is started there by the same command with --node-rank 0; "
                          "check the address, the port and the firewall)")
    env = {**os.environ, **plan.env}
    try:
        proc = subprocess.Popen(plan.argv, env=env, cwd=req.workdir, preexec_fn=_stop_with_parent())
    except FileNotFoundError:
        raise LaunchError(f"cannot start {plan.argv[0]}: not found") from None
    previous = {s: signal.signal(s, lambda signum, _frame: proc.send_signal(signum)) for s in _FORWARDED}
    try:
        rc = proc.wait()
        return 128 - rc if rc < 0 else rc  # killed by a signal: the shell's 128+N
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def launch(req: LaunchRequest, parsable: bool = False, out=None) -> int:
    """The whole `linkbert-launch`: plan, then print (--dry-run), submit (slurm) or run."""
    plan = make_plan(req)
    out = out or sys.stdout
    if req.dry_run:
        print(plan.describe(), file=out, flush=True)
        return 0
    write_files(plan)
    if plan.submit:
        submit(plan, parsable, out)
        return 0
    return run_plan(plan, req)

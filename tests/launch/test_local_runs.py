"""Real runs on this machine: `--scheduler local` and `mpi` start ranks that meet; a missing master times out."""
import re
import sys
import time
from pathlib import Path

import pytest

from tests.procs import child_env, free_port, run

PROBE = str(Path(__file__).with_name("probe_allreduce.py"))
LAUNCH = [sys.executable, "-m", "launch.cli"]


def probes(out: str) -> list[dict]:
    """PROBE records, also behind a pdsh `node1: ` prefix or glued together by MPI's output forwarding."""
    return [dict(kv.split("=", 1) for kv in rec.split()) for rec in re.findall(r"PROBE (.*?) END", out)]


def check_ranks(out: str, world: int):
    ps = probes(out)
    assert sorted(int(p["rank"]) for p in ps) == list(range(world)), out[-3000:]
    assert all(int(p["world"]) == world for p in ps)
    assert all(float(p["sum"]) == world * (world + 1) / 2 for p in ps)  # 1 + 2 + ... + world
    return ps


def test_local_two_ranks(tmp_path):
    cp = run(LAUNCH + ["--scheduler", "local", "--procs-per-node", "2", "--", sys.executable, PROBE],
             timeout=120, cwd=tmp_path)
    ps = check_ranks(cp.stdout, 2)
    assert {p["launcher"] for p in ps} == {"torchrun"}


@pytest.mark.mpi
def test_mpi_two_ranks_here(tmp_path):
    port = free_port()
    cp = run(LAUNCH + ["--scheduler", "mpi", "--procs-per-node", "2", "--master-port", str(port), "--",
                       sys.executable, PROBE], timeout=120, cwd=tmp_path)
    ps = check_ranks(cp.stdout, 2)
    assert {p["launcher"] for p in ps} == {"pmi"}
    assert sorted(int(p["local"]) for p in ps) == [0, 1]


def test_torchrun_missing_master_times_out_with_address(tmp_path):
    port = free_port()
    t0 = time.monotonic()
    cp = run(LAUNCH + ["--scheduler", "torchrun", "--nodes", "2", "--node-rank", "1", "--master-addr",
                       "127.0.0.1", "--master-port", str(port), "--rendezvous-timeout", "2", "--",
                       sys.executable, PROBE], timeout=60, cwd=tmp_path, check=False)
    assert cp.returncode == 2
    assert re.search(rf"rendezvous timed out after 2s: nothing answered at 127\.0\.0\.1:{port}", cp.stdout)
    assert time.monotonic() - t0 < 30


def test_rank_whose_master_never_comes_fails_naming_it(tmp_path):
    """A rank started with a wrong master (no launcher pre-check) still fails within the timeout."""
    port = free_port()
    env = child_env(RANK="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                    LINKBERT_RENDEZVOUS_TIMEOUT="2")
    cp = run([sys.executable, PROBE], timeout=60, env=env, check=False)
    assert cp.returncode != 0
    assert f"127.0.0.1:{port}" in cp.stdout and "RendezvousError" in cp.stdout


def test_launcher_passes_term_to_its_ranks(tmp_path):
    """A preempted launcher (TERM) must let its ranks checkpoint, not orphan or kill them."""
    import signal
    import subprocess

    from tests.procs import kill_tree, wait_for

    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda s, f: (print('rank got', s, flush=True), sys.exit(0)))\n"
             "print('ready', flush=True)\ntime.sleep(60)\n")
    log = tmp_path / "out.txt"
    with open(log, "w") as f:
        p = subprocess.Popen(LAUNCH + ["--scheduler", "local", "--", sys.executable, "-c", child], cwd=tmp_path,
                             env=child_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "ready" in log.read_text(), 60, what="the rank to start")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        assert f"rank got {int(signal.SIGTERM)}" in log.read_text()
    finally:
        kill_tree(p.pid)


def test_ranks_stop_when_the_launcher_is_killed(tmp_path):
    """A launcher killed outright (SIGKILL, OOM killer) must not leave its ranks running: its launcher child
    gets TERM from the kernel (PR_SET_PDEATHSIG) and passes it on, so the rank checkpoints and exits."""
    import os
    import signal
    import subprocess

    from tests.procs import kill_tree, wait_for

    child = ("import os, signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda s, f: (print('rank got', s, flush=True), sys.exit(0)))\n"
             "print('ready', os.getpid(), flush=True)\ntime.sleep(120)\n")
    log = tmp_path / "out.txt"
    rank = None
    with open(log, "w") as f:
        p = subprocess.Popen(LAUNCH + ["--scheduler", "local", "--", sys.executable, "-c", child], cwd=tmp_path,
                             env=child_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "ready" in log.read_text(), 60, what="the rank to start")
        rank = int(re.search(r"ready (\d+)", log.read_text()).group(1))
        os.kill(p.pid, signal.SIGKILL)   # only the launcher: its children are left to the kernel's notice
        p.wait(timeout=10)

        def gone() -> bool:
            try:
                os.kill(rank, 0)
            except ProcessLookupError:
                return True
            return Path(f"/proc/{rank}/stat").read_text().split()[2] == "Z"   # exited, not yet reaped
        wait_for(gone, 30, what="the orphaned rank to stop")
        assert f"rank got {int(signal.SIGTERM)}" in log.read_text()
    finally:
        kill_tree(p.pid)
        if rank is not None:
            kill_tree(rank)   # an orphan is no longer below the launcher

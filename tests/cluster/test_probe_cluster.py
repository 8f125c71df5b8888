"""Every scheduler across two real hosts (network namespaces), proven with a gloo all_reduce probe."""
import sys
from pathlib import Path

import pytest

from tests.cluster.netcluster import ADDRS, NAMES
from tests.launch.test_local_runs import PROBE, check_ranks

pytestmark = pytest.mark.cluster
LAUNCH = [sys.executable, "-m", "launch.cli"]


def assert_two_hosts(ps):
    """Each rank ran on its own node and its traffic left from that node's address."""
    by_rank = {int(p["rank"]): p for p in ps}
    assert [by_rank[r]["node"] for r in (0, 1)] == list(NAMES)
    assert [by_rank[r]["addr"] for r in (0, 1)] == list(ADDRS)
    # gloo was pointed at the veth that routes to the master (dist_env.interface_towards), not left to guess
    assert all(by_rank[r]["ifname"] not in ("-", "lo") for r in (0, 1)), ps


def hostfile(d: Path) -> str:
    p = d / "hosts"
    p.write_text(f"{NAMES[0]} slots=1\n{NAMES[1]} slots=1\n")
    return str(p)


def test_slurm_two_nodes(cluster, shared_dir):
    cp = cluster.run(0, LAUNCH + ["--scheduler", "slurm", "--nodes", "2", "--parsable", "--log-dir",
                                  str(shared_dir), "--", sys.executable, PROBE], timeout=60, cwd=shared_dir)
    job = cp.stdout.strip().splitlines()[-1]
    assert job.isdigit(), cp.stdout
    st = cluster.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 120)
    log = next(shared_dir.glob(f"linkbert-{job}.out")).read_text()
    assert st["JobState"] == "COMPLETED", log + cluster.logs()
    ps = check_ranks(log, 2)
    assert {p["launcher"] for p in ps} == {"slurm"}
    assert_two_hosts(ps)
    assert f"master {ADDRS[0]}:" in log  # the first node's NodeAddr, not its hostname


def test_slurm_submit_prints_job_id_like_sbatch(cluster, shared_dir):
    cp = cluster.run(0, LAUNCH + ["--scheduler", "slurm", "--nodes", "1", "--log-dir", str(shared_dir), "--",
                                  "true"], timeout=60, cwd=shared_dir)
    line = cp.stdout.strip().splitlines()[-1]
    assert line.startswith("Submitted batch job ") and line.split()[-1].isdigit()
    cluster.wait_job(line.split()[-1], ("COMPLETED",), 60)


def test_slurm_after_dependency_waits(cluster, shared_dir):
    first = cluster.run(0, LAUNCH + ["--scheduler", "slurm", "--parsable", "--log-dir", str(shared_dir), "--",
                                     "sleep", "3"], timeout=60, cwd=shared_dir).stdout.split()[-1]
    second = cluster.run(0, LAUNCH + ["--scheduler", "slurm", "--parsable", "--after", first, "--log-dir",
                                      str(shared_dir), "--", "true"], timeout=60, cwd=shared_dir).stdout.split()[-1]
    st = cluster.job_state(second)
    assert st["JobState"] == "PENDING" and st["Dependency"].startswith(f"afterok:{first}")
    a = cluster.wait_job(first, ("COMPLETED",), 60)
    b = cluster.wait_job(second, ("COMPLETED",), 60)
    assert b["StartTime"] >= a["EndTime"]


def test_mpi_two_hosts(cluster, shared_dir):
    cp = cluster.run(0, LAUNCH + ["--scheduler", "mpi", "--nodes", "2", "--hostfile", hostfile(shared_dir), "--",
                                  sys.executable, PROBE], timeout=120, cwd=shared_dir)
    ps = check_ranks(cp.stdout, 2)
    assert {p["launcher"] for p in ps} == {"pmi"}
    assert_two_hosts(ps)


def test_openmpi_two_hosts(cluster, shared_dir):
    """Open MPI's flags (-np, --map-by ppr, -x VAR, --allow-run-as-root) across both hosts."""
    import shutil

    cp = cluster.run(0, LAUNCH + ["--scheduler", "mpi", "--mpirun", shutil.which("mpirun.openmpi"), "--nodes", "2",
                                  "--hostfile", hostfile(shared_dir), "--", sys.executable, PROBE],
                     timeout=120, cwd=shared_dir)
    ps = check_ranks(cp.stdout, 2)
    assert {p["launcher"] for p in ps} == {"openmpi"}
    assert_two_hosts(ps)


def test_deepspeed_two_hosts(cluster, shared_dir):
    cp = cluster.run(0, LAUNCH + ["--scheduler", "deepspeed", "--nodes", "2", "--hostfile", hostfile(shared_dir),
                                  "--", sys.executable, PROBE], timeout=180, cwd=shared_dir)
    ps = check_ranks(cp.stdout, 2)
    assert {p["launcher"] for p in ps} == {"torchrun"}
    assert_two_hosts(ps)


def test_torchrun_one_command_per_host(cluster, shared_dir):
    hf = hostfile(shared_dir)
    argv = LAUNCH + ["--scheduler", "torchrun", "--nodes", "2", "--hostfile", hf, "--", sys.executable, PROBE]
    other = cluster.popen(1, argv, shared_dir / "node2.out", cwd=shared_dir)  # node rank from the hostfile
    try:
        cp = cluster.run(0, argv, timeout=120, cwd=shared_dir)
        assert other.wait(timeout=60) == 0
    finally:
        from tests.procs import kill_tree
        kill_tree(other.pid)
    ps = check_ranks(cp.stdout + (shared_dir / "node2.out").read_text(), 2)
    assert_two_hosts(ps)


def test_torchrun_unreachable_master_names_it(cluster, shared_dir):
    cp = cluster.run(1, LAUNCH + ["--scheduler", "torchrun", "--nodes", "2", "--node-rank", "1", "--master-addr",
                                  ADDRS[0], "--master-port", "29999", "--rendezvous-timeout", "2", "--", "true"],
                     timeout=60, cwd=shared_dir, check=False)
    assert cp.returncode == 2 and f"nothing answered at {ADDRS[0]}:29999" in cp.stdout


def test_stale_namespaces_of_dead_sessions_are_swept(cluster):
    """A session killed outright leaves `lbt<pid>a`; the next session deletes it (and what runs in it)."""
    import subprocess

    from tests.cluster.netcluster import NS_PREFIX, sweep_stale_namespaces

    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{NS_PREFIX}{dead.pid}a"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        sweep_stale_namespaces()
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert set(cluster.netns) <= set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                        text=True).stdout.split())  # live ones kept
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)

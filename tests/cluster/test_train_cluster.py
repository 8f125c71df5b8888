"""linkbert-pretrain and linkbert-prep build across the two real hosts, through every scheduler.

The tiny model trains on the bundled Jargon File corpus prepared by the project's own builder. A
2-rank run on one machine (`--scheduler local`) is the reference: the same 2 ranks spread over two
hosts must give the same losses. SLURM preemption: a TERM to the ranks leaves a checkpoint and a
resubmitted job resumes from it; the time-limit signal (USR1 to the batch shell) checkpoints,
requeues the job itself, and the requeued run resumes.
"""
import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.cluster.netcluster import ADDRS, NAMES
from tests.cluster.test_probe_cluster import hostfile
from tests.procs import ROOT, kill_tree, run, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
LAUNCH = [sys.executable, "-m", "launch.cli"]
CORPUS = ROOT / "data_prep" / "corpora" / "jargon.jsonl.gz"
STEPS = 8


def prep_cmd(tokenizer: Path, out: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "linkbert-prep"), "build", "--corpus", str(CORPUS), "--tokenizer",
            str(tokenizer), "--out", str(out), "--max-seq-len", "64", "--seed", "0", "--workers", "1", "--quiet"]


def train_cmd(data: Path, out: Path, steps: int = STEPS) -> list[str]:
    return [str(Path(sys.executable).parent / "linkbert-pretrain"), "--data", str(data), "--output", str(out),
            "--model", "tiny", "--max-steps", str(steps), "--micro-batch-size", "2", "--seed", "0",
            "--precision", "fp32", "--save-every", "100000", "--checkpoint.export_final=false"]


def metrics(out: Path) -> list[dict]:
    p = out / "metrics.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


def losses(out: Path) -> np.ndarray:
    return np.array([r["loss"] for r in metrics(out)])


@pytest.fixture(scope="module")
def jargon(tmp_path_factory, minilm_dir) -> Path:
    out = tmp_path_factory.mktemp("jargon") / "data"
    run(prep_cmd(minilm_dir, out), timeout=180)
    return out


@pytest.fixture(scope="module")
def reference(jargon, tmp_path_factory) -> np.ndarray:
    """The same 2 ranks on one machine."""
    out = tmp_path_factory.mktemp("ref") / "run"
    run(LAUNCH + ["--scheduler", "local", "--procs-per-node", "2", "--"] + train_cmd(jargon, out), timeout=300)
    ref = losses(out)
    assert len(ref) == STEPS and np.isfinite(ref).all()
    return ref


def assert_same_losses(out: Path, ref: np.ndarray, log: str):
    got = losses(out)
    assert len(got) == len(ref), log[-4000:]
    # ZeRO-2 averages gradients with the backend's reduce: ~1 ulp between shm (one host) and gloo (two)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def assert_ranks_on_own_hosts(log: str):
    """Every rank announced (pretrain.dist_env) its host and the address its traffic leaves from."""
    seen = {int(m.group(1)): (m.group(2), m.group(3))
            for m in re.finditer(r"\[dist_env\] rank (\d+)/2 .*? on (\S+) addr (\S+) ->", log)}
    assert seen == {0: (NAMES[0], ADDRS[0]), 1: (NAMES[1], ADDRS[1])}, log[-4000:]


def submit(cluster, d: Path, command: list[str], *extra: str) -> str:
    cp = cluster.run(0, LAUNCH + ["--scheduler", "slurm", "--nodes", "2", "--parsable", "--log-dir", str(d),
                                  *extra, "--"] + command, timeout=60, cwd=d)
    job = cp.stdout.strip().splitlines()[-1]
    assert job.isdigit(), cp.stdout
    return job


def job_log(d: Path, job: str) -> str:
    p = d / f"linkbert-{job}.out"
    return p.read_text(errors="replace") if p.exists() else ""


def test_slurm_trains_across_two_nodes(cluster, shared_dir, jargon, reference):
    out = shared_dir / "run"
    job = submit(cluster, shared_dir, train_cmd(jargon, out))
    st = cluster.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"), 300)
    log = job_log(shared_dir, job)
    assert st["JobState"] == "COMPLETED", log[-4000:]
    assert_ranks_on_own_hosts(log)
    assert_same_losses(out, reference, log)


def test_slurm_preempt_checkpoint_resume(cluster, shared_dir, jargon):
    out = shared_dir / "run"
    cmd = train_cmd(jargon, out, steps=400)

    def step_reached(n):
        wait_for(lambda: len(metrics(out)) >= n, 240, interval=0.2, what=f"step {n} in metrics.jsonl")

    # 1. TERM to the ranks (what `scancel --signal=TERM` and preemption send): checkpoint and exit 0.
    job = submit(cluster, shared_dir, cmd)
    step_reached(3)
    cluster.run(0, ["scancel", "--signal=TERM", job], timeout=30)
    st = cluster.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED"), 120)
    log = job_log(shared_dir, job)
    assert st["JobState"] == "COMPLETED", log[-4000:]
    m = re.search(r"signal received: saving at step (\d+)", log)
    assert m, log[-4000:]
    k1 = int(m.group(1))
    assert 3 <= k1 < 400 and (out / "checkpoints" / f"step{k1}").is_dir()

    # 2. Resubmit the same command: resumes at k1; then the time-limit path (USR1 to the batch shell,
    #    as --signal=B:USR1@120 would send) checkpoints and the job requeues itself.
    job2 = submit(cluster, shared_dir, cmd)
    step_reached(k1 + 3)
    log = job_log(shared_dir, job2)
    assert re.search(rf"resuming from \S+: step {k1}\b", log), log[-4000:]
    cluster.run(0, ["scancel", "--batch", "--signal=USR1", job2], timeout=30)
    wait_for(lambda: "requeued job" in job_log(shared_dir, job2), 120, what="the job to requeue itself")
    log = job_log(shared_dir, job2)
    k2 = int(re.findall(r"signal received: saving at step (\d+)", log)[-1])
    assert k2 > k1 and (out / "checkpoints" / f"step{k2}").is_dir()
    # SLURM holds a requeued job for the credential lifetime (120 s by default, 10 s in the test
    # cluster's AuthInfo=cred_expire) before it starts again by itself.
    st = cluster.wait_job(job2, ("PENDING", "RUNNING"), 60)
    assert int(st["Restarts"]) == 1
    try:
        wait_for(lambda: re.search(rf"resuming from \S+: step {k2}\b", job_log(shared_dir, job2)), 240,
                 interval=0.5, what=f"the requeued job to resume from step {k2}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{cluster.job_state(job2)}\n{job_log(shared_dir, job2)[-4000:]}") from None
    step_reached(k2 + 1)
    steps = [r["step"] for r in metrics(out)]
    assert steps[:k2 + 1] == list(range(1, k2 + 2))  # one record per step, none repeated or lost
    cluster.run(0, ["scancel", job2], timeout=30, check=False)
    cluster.wait_job(job2, ("CANCELLED", "COMPLETED", "FAILED"), 90)


def test_mpi_trains_across_two_hosts(cluster, shared_dir, jargon, reference):
    out = shared_dir / "run"
    cp = cluster.run(0, LAUNCH + ["--scheduler", "mpi", "--nodes", "2", "--hostfile", hostfile(shared_dir), "--"]
                     + train_cmd(jargon, out), timeout=300, cwd=shared_dir)
    assert_ranks_on_own_hosts(cp.stdout)
    assert_same_losses(out, reference, cp.stdout)


def test_deepspeed_trains_across_two_hosts(cluster, shared_dir, jargon, reference):
    out = shared_dir / "run"
    cp = cluster.run(0, LAUNCH + ["--scheduler", "deepspeed", "--nodes", "2", "--hostfile", hostfile(shared_dir),
                                  "--"] + train_cmd(jargon, out), timeout=300, cwd=shared_dir)
    assert_ranks_on_own_hosts(cp.stdout)
    assert_same_losses(out, reference, cp.stdout)


def test_torchrun_trains_one_command_per_host(cluster, shared_dir, jargon, reference):
    out = shared_dir / "run"
    argv = LAUNCH + ["--scheduler", "torchrun", "--nodes", "2", "--hostfile", hostfile(shared_dir), "--"] + \
        train_cmd(jargon, out)
    other = cluster.popen(1, argv, shared_dir / "node2.out", cwd=shared_dir)
    try:
        cp = cluster.run(0, argv, timeout=300, cwd=shared_dir)
        assert other.wait(timeout=120) == 0
    finally:
        kill_tree(other.pid)
    log = cp.stdout + (shared_dir / "node2.out").read_text()
    assert_ranks_on_own_hosts(log)
    assert_same_losses(out, reference, log)


def test_mpi_prep_build_across_two_hosts(cluster, shared_dir, jargon, minilm_dir):
    """`mpirun -n 2 linkbert-prep build` through the launcher gives the single-process arrays."""
    out = shared_dir / "mpi_data"
    cp = cluster.run(0, LAUNCH + ["--scheduler", "mpi", "--nodes", "2", "--hostfile", hostfile(shared_dir), "--"]
                     + prep_cmd(minilm_dir, out), timeout=300, cwd=shared_dir)
    assert "2 rank(s)" in cp.stdout, cp.stdout[-3000:]
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (jargon, out))
    assert a["stats"] == b["stats"]
    assert [s["num_pairs"] for s in a["shards"]] == [s["num_pairs"] for s in b["shards"]]
    for sa, sb in zip(a["shards"], b["shards"]):
        with h5py.File(jargon / sa["path"]) as fa, h5py.File(out / sb["path"]) as fb:
            assert set(fa) == set(fb)
            for k in fa:
                np.testing.assert_array_equal(fa[k][()], fb[k][()], err_msg=k)

"""Two trainers on one --output (one short DeepSpeed run): the second exits with one line naming the first;
Ctrl-C then makes the first save at the next step and exit 0 without a traceback, its metrics intact."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from pretrain.checkpoint import list_tags
from tests.pretrain.engine_helpers import synthetic_dataset
from tests.procs import child_env, free_port, kill_tree, run, wait_for


def _steps(out):
    p = out / "metrics.jsonl"
    return [json.loads(x)["step"] for x in p.read_text().splitlines() if x.strip()] if p.is_file() else []


def test_second_trainer_refused_and_ctrl_c_saves(tmp_path):
    data = synthetic_dataset(tmp_path / "syn", n=300, shards=1)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pretrain.cli", "--data", str(data), "--output", str(out), "--model", "tiny",
           "--micro-batch-size", "4", "--max-steps", "100000", "--zero-stage", "0", "--metrics.progress=false",
           "--metrics.tensorboard=false", "--data.held_out=16", "--metrics.eval_batches=1", "--data.prefetch=2"]
    env = child_env(MASTER_PORT=str(free_port()))
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as logf:   # a file, not a pipe nobody reads while it runs (a full pipe blocks it)
        first = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: len(_steps(out)) >= 2 or first.poll() is not None, 180, 0.2, "the first run's steps")
        assert first.poll() is None, log_path.read_text()[-3000:]
        second = run(cmd, timeout=120, check=False, env=child_env(MASTER_PORT=str(free_port())))
        errors = [x for x in second.stdout.splitlines() if "error" in x.lower() or "Traceback" in x]
        assert second.returncode == 3 and len(errors) == 1, second.stdout[-3000:]
        assert f"pid {first.pid}" in errors[0] and "--force-unlock" in errors[0]
        os.killpg(first.pid, signal.SIGINT)   # Ctrl-C in the terminal: the whole foreground group
        first.wait(timeout=120)
    finally:
        kill_tree(first.pid)
    log = log_path.read_text()
    assert first.returncode == 0 and "Traceback" not in log, log[-3000:]
    assert "Ctrl-C: saving a checkpoint at the next step" in log
    steps = _steps(out)
    stopped = list_tags(out / "checkpoints")[-1][0]
    assert steps == list(range(1, stopped + 1)) and stopped >= 2    # the second run erased nothing
    assert not (out / ".linkbert.lock").exists()

"""Two builds on one --out: the second exits with one line and touches nothing; the first finishes and verifies."""
from __future__ import annotations

import sys

from data_prep.cli import main as prep_main
from data_prep.folder_lock import build_lock
from data_prep.verify import verify_dataset
from tests.data_prep.build_checks import JARGON
from tests.procs import child_env, kill_tree, run, wait_for


def _args(out, tok):
    return ["build", "--corpus", str(JARGON), "--tokenizer", str(tok), "--out", str(out), "--max-seq-len", "64",
            "--quiet"]


def test_second_build_is_refused_before_staging(tmp_path, minilm_dir, capsys):
    out = tmp_path / "data"
    staging = tmp_path / ".data.building"
    staging.mkdir()
    (staging / "first-owner-file").write_text("mine")
    with build_lock(out):   # a build in progress (this process)
        assert prep_main(_args(out, minilm_dir)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by linkbert-prep build" in err[0] and "--force-unlock" in err[0], err
    assert (staging / "first-owner-file").read_text() == "mine" and not out.exists()


def test_two_build_processes_on_one_out(tmp_path, minilm_dir):
    import subprocess
    out = tmp_path / "data"
    lock = tmp_path / ".data.lock"
    cmd = [sys.executable, "-m", "data_prep.cli", *_args(out, minilm_dir)]
    first = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        wait_for(lock.exists, 60, 0.05, "the first build's lock")
        second = run(cmd, timeout=120, check=False)
        out1, _ = first.communicate(timeout=180)
    finally:
        kill_tree(first.pid)
    lines = second.stdout.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stdout
    assert f"pid {first.pid}" in lines[0] and "--force-unlock" in lines[0]
    assert first.returncode == 0, out1
    assert verify_dataset(out).ok and not lock.exists()

"""Killing `linkbert-prep build` with SIGKILL leaves no worker or resource-tracker process behind."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import psutil

from tests.data_prep.build_checks import JARGON, read_jsonl
from tests.procs import ROOT, alive, child_env, kill_tree, wait_for


def test_sigkill_of_build_parent_leaves_no_orphans(tmp_path, minilm_dir):
    docs = read_jsonl(JARGON)
    with open(tmp_path / "big.jsonl", "w", encoding="utf-8") as f:   # long enough to be killed mid-way
        for k in range(12):
            for d in docs:
                f.write(json.dumps({**d, "id": f"{k}:{d['id']}", "links": [f"{k}:{t}" for t in d.get("links", [])]})
                        + "\n")
    cmd = [sys.executable, "-m", "data_prep.cli", "build", "--corpus", str(tmp_path / "big.jsonl"), "--tokenizer",
           str(minilm_dir), "--out", str(tmp_path / "out"), "--workers", "2", "--quiet"]
    p = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    descendants: list[int] = []
    try:
        parent = psutil.Process(p.pid)
        # two workers and multiprocessing's resource tracker
        kids = wait_for(lambda: (lambda c: c if len(c) >= 3 else None)(parent.children(recursive=True)),
                        timeout=120, what="the build's worker processes")
        time.sleep(1.0)   # workers past start-up, tokenizing
        descendants = [c.pid for c in parent.children(recursive=True)]
        assert len(descendants) >= 3, kids
        assert p.poll() is None, "the build finished before it could be killed; make the corpus larger"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in descendants), timeout=30,
                 what=f"the build's children {descendants} to exit after their parent was killed")
    finally:
        kill_tree(p.pid)
        for pid in descendants:
            kill_tree(pid)

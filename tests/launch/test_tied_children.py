"""`linkbert-launch`'s children die with it: the sbatch it runs to submit (runner.submit), killed by PID."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.procs import alive, child_env, kill_tree, wait_for

PARENT = """
import sys
from launch.request import Plan
from launch.runner import submit
child = [sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)",
         sys.argv[1]]
submit(Plan(argv=child, submit=True), parsable=True)
"""


def test_submit_child_dies_with_the_launcher(tmp_path):
    pid_file = tmp_path / "child.pid"
    p = subprocess.Popen([sys.executable, "-c", PARENT, str(pid_file)], env=child_env(), start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = None
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, 0.05, "the submit child")
        child = int(pid_file.read_text())
        assert alive(child)
        os.kill(p.pid, signal.SIGKILL)   # the launcher alone: its child is left to the kernel's notice
        p.wait(timeout=10)
        wait_for(lambda: not alive(child), 10, 0.05, "the submit child to die with its parent")
    finally:
        kill_tree(p.pid)
        if child is not None:
            kill_tree(child)

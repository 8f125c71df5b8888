"""Run child processes under a timeout and always clean up the whole process tree by PID."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    """Whether a process is running (an exited child not yet reaped, a zombie, counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_tree(pid: int, sig=signal.SIGKILL, timeout: float = 10.0) -> None:
    """Signal a process and every descendant (torchrun/timeout start new sessions/groups)."""
    try:
        parent = psutil.Process(pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=timeout)


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}".rstrip(":")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd, timeout: float, cwd=None, env=None, check=True, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with a hard timeout that kills the whole tree, output captured as text."""
    p = subprocess.Popen(cmd, cwd=cwd or ROOT, env=env or child_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(p.pid)
        out, _ = p.communicate()
        raise AssertionError(f"timed out after {timeout}s: {cmd}\n{out[-4000:]}") from None
    finally:
        kill_tree(p.pid)
    cp = subprocess.CompletedProcess(cmd, p.returncode, out, None)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}: {cmd}\n{out[-6000:]}")
    return cp


def wait_for(pred, timeout: float, interval: float = 0.2, what: str = "condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

"""One owner per folder (data_prep.folder_lock): a second claimant is one line naming the owner; a dead
owner (gone pid on this host, lapsed lease from another host) is taken over; --force-unlock; races."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

import pytest

from data_prep import folder_lock
from data_prep.folder_lock import FolderLock, LockHeld, read_owner


def _lock(path, lease=None):
    return FolderLock(path, "test-owner", f"--out {path.parent}", "wait, or pass --force-unlock", lease_s=lease)


def _fake_owner(path, **over):
    rec = {"host": socket.gethostname(), "pid": os.getpid(), "started": None, "since": time.time() - 3600,
           "lease_s": 60.0, "token": "t-fake", "what": "linkbert-pretrain"}
    rec.update(over)
    path.write_text(json.dumps(rec))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_second_claimant_is_one_line_naming_owner(tmp_path):
    path = tmp_path / ".lock"
    with _lock(path) as first:
        with pytest.raises(LockHeld) as e:
            _lock(path).acquire()
        msg = str(e.value)
        assert "\n" not in msg
        assert socket.gethostname() in msg and f"pid {os.getpid()}" in msg and "since 20" in msg
        assert "--force-unlock" in msg
        assert first.still_ours() and read_owner(path).token == first.owner.token   # untouched
    assert not path.exists()   # released


def test_dead_pid_on_this_host_is_taken_over(tmp_path):
    path = tmp_path / ".lock"
    _fake_owner(path, pid=_dead_pid())
    lock = _lock(path).acquire()
    try:
        assert "no longer running" in lock.took_over
        assert read_owner(path).token == lock.owner.token
    finally:
        lock.release()


def test_reused_pid_with_other_start_time_is_taken_over(tmp_path):
    path = tmp_path / ".lock"
    _fake_owner(path, pid=os.getpid(), started=1.0)   # this pid is alive, but was not started at tick 1
    lock = _lock(path).acquire()
    lock.release()
    assert lock.took_over


def test_foreign_host_lease(tmp_path):
    """Another host's lock is held while its heartbeat is fresh and taken over once the lease lapsed."""
    path = tmp_path / ".lock"
    _fake_owner(path, host="node-that-is-not-here", pid=1, lease_s=5.0)
    with pytest.raises(LockHeld, match="node-that-is-not-here, pid 1"):
        _lock(path).acquire()
    old = time.time() - 30
    os.utime(path, (old, old))
    lock = _lock(path).acquire()
    try:
        assert "no heartbeat" in lock.took_over and "lease 5s" in lock.took_over
    finally:
        lock.release()


def test_force_unlock_and_release_only_if_ours(tmp_path):
    path = tmp_path / ".lock"
    first = _lock(path).acquire()
    second = _lock(path).acquire(force=True)
    assert second.took_over and "--force-unlock" in second.took_over
    first.release()                     # the first owner's exit must not remove the second's lock
    assert read_owner(path).token == second.owner.token
    second.release()
    assert not path.exists()


def test_heartbeat_refreshes_mtime(tmp_path):
    path = tmp_path / ".lock"
    lock = _lock(path, lease=0.6).acquire()   # beats every 0.1 s
    try:
        old = time.time() - 100
        os.utime(path, (old, old))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 5
    finally:
        lock.release()


def _claim(path, barrier, results):
    barrier.wait()
    try:
        lock = _lock(path).acquire()
        results.put(("won", lock.owner.token))
        time.sleep(1.0)   # hold while the others try
        lock.release()
    except LockHeld:
        results.put(("lost", None))


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_concurrent_claimants_one_wins(tmp_path, stale):
    path = tmp_path / ".lock"
    if stale:
        _fake_owner(path, pid=_dead_pid())
    ctx = mp.get_context("fork")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(path, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=30) for _ in range(n)]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert sorted(g[0] for g in got) == ["lost"] * (n - 1) + ["won"]


def test_lease_env(monkeypatch):
    monkeypatch.setenv(folder_lock.LEASE_ENV, "7")
    assert folder_lock.lease_seconds() == 7.0
    monkeypatch.setenv(folder_lock.LEASE_ENV, "junk")
    assert folder_lock.lease_seconds() == folder_lock.DEFAULT_LEASE_S


def test_unwritable_place_is_one_line(tmp_path):
    from data_prep.errors import PrepError
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PrepError, match="cannot create the lock file") as e:
        _lock(tmp_path / "afile" / "sub" / ".lock").acquire()
    assert "\n" not in str(e.value)

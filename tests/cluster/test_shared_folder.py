"""Two hosts sharing one folder (data_prep.folder_lock): while node1's owner heartbeats, node2 is refused with
one line naming node1; once node1's owner is killed by PID (a lost node: no pid check is possible from
node2), node2 takes the folder over after the lease, not before."""
import sys
import time

import pytest

from tests.procs import kill_tree, wait_for

pytestmark = pytest.mark.cluster
LEASE = 4.0

HOLDER = """
import sys, time
from data_prep.folder_lock import run_lock
lock = run_lock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(300)
"""

CLAIM = """
import sys, time
from data_prep.folder_lock import LockHeld, run_lock
t0 = time.time()
while True:
    try:
        lock = run_lock(sys.argv[1]).acquire()
        print("took", lock.took_over, flush=True)
        lock.release()
        break
    except LockHeld as e:
        if sys.argv[2] == "once":
            print("refused", e, flush=True)
            sys.exit(3)
        time.sleep(0.2)
"""


def test_second_host_refused_then_takes_over_after_the_lease(cluster, shared_dir):
    out = shared_dir / "run"
    env = {"LINKBERT_LOCK_LEASE_S": str(LEASE)}
    log = shared_dir / "holder.log"
    holder = cluster.popen(0, [sys.executable, "-c", HOLDER, str(out)], log, cwd=shared_dir, **env)
    try:
        wait_for(lambda: "held" in log.read_text(), 60, 0.1, "node1's lock")
        cp = cluster.run(1, [sys.executable, "-c", CLAIM, str(out), "once"], timeout=60, cwd=shared_dir,
                         check=False, **env)
        lines = cp.stdout.strip().splitlines()
        assert cp.returncode == 3 and len(lines) == 1, cp.stdout
        assert f"on host node1, pid {holder.pid}" in lines[0] and "--force-unlock" in lines[0]
        time.sleep(LEASE + 1)   # node1 heartbeats: still its lock after a whole lease
        cp = cluster.run(1, [sys.executable, "-c", CLAIM, str(out), "once"], timeout=60, cwd=shared_dir,
                         check=False, **env)
        assert cp.returncode == 3, cp.stdout
        kill_tree(holder.pid)   # node1 is lost: its lock file stays behind
        killed = time.time()
        cp = cluster.run(1, [sys.executable, "-c", CLAIM, str(out), "wait"], timeout=60, cwd=shared_dir, **env)
        waited = time.time() - killed
    finally:
        kill_tree(holder.pid)
    assert "took" in cp.stdout and "no heartbeat" in cp.stdout and "host node1" in cp.stdout, cp.stdout
    assert LEASE * 5 / 6 - 0.5 <= waited <= LEASE + 10, waited

"""Rank discovery on each launcher's real variable set, and the bounded rendezvous."""
import socket
import threading
import time

import pytest

from pretrain.dist_env import (
    DistEnv,
    RendezvousError,
    discover,
    expand_slurm_nodelist,
    first_slurm_host,
    interface_towards,
    wait_for_endpoint,
    wait_for_master,
)

# Variable sets as each launcher sets them (rank 3 of 8, 4 per node, second node).
TORCHRUN = {"RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "0",
            "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29411", "TORCHELASTIC_RUN_ID": "none"}
DEEPSPEED = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_SIZE": "4", "CROSS_RANK": "1",
             "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}
SLURM_STEP = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
              "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
              "SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_STEP_NODELIST": "gpu[007-008]",
              "SLURM_JOB_NODELIST": "gpu[007-008]", "SLURM_NODEID": "1"}
OPENMPI = {"OMPI_COMM_WORLD_RANK": "6", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "2",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "MASTER_ADDR": "node1", "MASTER_PORT": "29600"}
MPICH = {"PMI_RANK": "7", "PMI_SIZE": "8", "MPI_LOCALRANKID": "3", "MPI_LOCALNRANKS": "4", "PMI_FD": "5"}


@pytest.mark.parametrize("env, expect", [
    (TORCHRUN, DistEnv(3, 3, 8, 4, "10.0.0.1", 29411, "torchrun")),
    (DEEPSPEED, DistEnv(5, 1, 8, 4, "node1", 29500, "torchrun")),
    (SLURM_STEP, DistEnv(5, 1, 8, 4, "gpu007", 29500, "slurm")),
    (OPENMPI, DistEnv(6, 2, 8, 4, "node1", 29600, "openmpi")),
    (MPICH, DistEnv(7, 3, 8, 4, "127.0.0.1", 29500, "pmi")),
    ({}, DistEnv(0, 0, 1, 1, "127.0.0.1", 29500, "single")),
])
def test_discover_each_launcher(env, expect):
    assert discover(env) == expect


def test_node_rank_follows_local_world():
    assert discover(SLURM_STEP).node_rank == 1
    assert discover(OPENMPI).node_rank == 1
    assert discover(TORCHRUN).node_rank == 0


def test_slurm_batch_script_is_single_process():
    """The batch shell has SLURM_PROCID=0 and the job's task count but is not a rank (no step id)."""
    batch = {k: v for k, v in SLURM_STEP.items() if not k.startswith("SLURM_STEP")} | {"SLURM_PROCID": "0"}
    assert discover(batch).launcher == "single"
    assert discover(batch).world_size == 1


def test_slurm_master_env_overrides_nodelist():
    env = SLURM_STEP | {"MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "31000"}
    de = discover(env)
    assert (de.master_addr, de.master_port) == ("10.1.2.3", 31000)


def test_slurm_uneven_tasks_per_node_takes_first_count():
    env = SLURM_STEP | {"SLURM_STEP_TASKS_PER_NODE": "3,2(x2)", "SLURM_STEP_NUM_TASKS": "7"}
    assert discover(env).local_world_size == 3


def test_torchrun_variables_win_over_slurm():
    """torchrun started inside an srun step: torchrun's per-worker ranks are the truth."""
    assert discover(SLURM_STEP | TORCHRUN).launcher == "torchrun"


@pytest.mark.parametrize("nodelist, hosts", [
    ("gpu[003-005,7],cpu1", ["gpu003", "gpu004", "gpu005", "gpu7", "cpu1"]),
    ("node1", ["node1"]),
    ("node[1-2]", ["node1", "node2"]),
    ("a[09-11]-ib,b", ["a09-ib", "a10-ib", "a11-ib", "b"]),
])
def test_expand_slurm_nodelist(nodelist, hosts):
    assert expand_slurm_nodelist(nodelist) == hosts
    assert first_slurm_host(nodelist) == hosts[0]


def test_bad_integer_names_the_variable():
    with pytest.raises(ValueError, match="SLURM_LOCALID"):
        discover(SLURM_STEP | {"SLURM_LOCALID": "x"})


def test_export_writes_torch_variables():
    env = {}
    DistEnv(1, 0, 2, 1, "127.0.0.1", 29555, "slurm").export(env)
    assert env == {"RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1",
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}  # loopback: no interface forced


def test_interface_towards_loopback_is_none():
    assert interface_towards("127.0.0.1") is None
    assert interface_towards("no-such-host.invalid") is None


def _non_loopback_ipv4() -> tuple[str, str] | None:
    import psutil

    for name, addrs in sorted(psutil.net_if_addrs().items()):
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return name, a.address
    return None


def test_interface_towards_a_local_address_names_its_interface():
    """The kernel sends to one of our own addresses from that address: the interface holding it is named."""
    found = _non_loopback_ipv4()
    if found is None:
        pytest.skip("no non-loopback IPv4 interface on this host")
    name, addr = found
    assert interface_towards(addr) == name


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_wait_for_master_times_out_naming_address_and_port():
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(RendezvousError) as e:
        wait_for_master(DistEnv(1, 0, 2, 1, "127.0.0.1", port, "slurm"), timeout_s=1.0, poll_s=0.1)
    assert time.monotonic() - t0 < 10
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "rank 1/2" in msg and "LINKBERT_RENDEZVOUS_TIMEOUT" in msg


def test_wait_for_endpoint_returns_once_master_listens():
    port = _closed_port()
    srv = socket.socket()
    listening_at = []

    def listen_later():
        time.sleep(0.5)
        listening_at.append(time.monotonic())   # just before: nothing can have connected earlier
        srv.bind(("127.0.0.1", port))
        srv.listen()

    th = threading.Thread(target=listen_later)
    t0 = time.monotonic()
    th.start()
    try:
        wait_for_endpoint("127.0.0.1", port, timeout_s=10, poll_s=0.1)
        returned_at = time.monotonic()
        # it returned only after the listener came up, and by connecting to it (not by giving up early)
        assert listening_at and returned_at >= listening_at[0] >= t0 + 0.5, (t0, listening_at, returned_at)
        assert returned_at - listening_at[0] < 5
        srv.settimeout(2)
        conn, _ = srv.accept()   # the connection wait_for_endpoint made is queued on the listener
        conn.close()
    finally:
        th.join()
        srv.close()


def test_rank0_does_not_wait():
    wait_for_master(DistEnv(0, 0, 2, 1, "127.0.0.1", _closed_port(), "slurm"), timeout_s=0)


def test_export_announces_rank_host_and_address(capsys):
    DistEnv(1, 0, 2, 1, "127.0.0.1", 29555, "slurm").export({})
    err = capsys.readouterr().err
    assert err.strip() == (f"[dist_env] rank 1/2 (local 0, slurm) on {socket.gethostname()} addr 127.0.0.1 -> "
                           f"master 127.0.0.1:29555")
    DistEnv(0, 0, 1, 1, "127.0.0.1", 29555, "single").export({})
    assert capsys.readouterr().err == ""  # single process: silent

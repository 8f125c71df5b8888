"""The session's real cluster: built once, torn down by PID, namespaces deleted. Skips off-root, fails in CI."""

import pytest

from tests.cluster.netcluster import NetCluster, install_packages, unavailable_reason
from tests.needs import missing


def _unavailable(reason: str):
    missing(reason, what="cluster tests")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        _unavailable(reason)
    root = tmp_path_factory.mktemp("cluster")
    with open(root / "apt.log", "w") as log:
        try:
            install_packages(log)
        except Exception as e:  # noqa: BLE001 - any install failure is "cannot build the cluster"
            _unavailable(f"installing slurm-wlm/munge/openssh-server/pdsh failed: {e} (see {root}/apt.log)")
    c = NetCluster(root)
    try:
        c.start()
    except BaseException:
        logs = c.logs()
        c.close()
        raise RuntimeError(f"could not build the test cluster; daemon logs:\n{logs}") from None
    yield c
    c.close()


@pytest.fixture
def shared_dir(cluster, tmp_path):
    """A work folder both nodes see (the same filesystem, as on a cluster with shared storage)."""
    return tmp_path

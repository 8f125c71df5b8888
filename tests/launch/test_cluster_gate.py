"""The cluster tests' gate: skip with the reason off-root, fail instead of skipping when CI=true."""
import pytest

from tests.cluster import conftest as cluster_conftest
from tests.cluster import netcluster
from tests.needs import need_module


def test_non_root_gets_a_reason(monkeypatch):
    monkeypatch.setattr(netcluster.os, "geteuid", lambda: 1000)
    assert netcluster.unavailable_reason() == "needs root (network namespaces, slurmd, sshd)"


def test_missing_packages_without_apt(monkeypatch):
    monkeypatch.setattr(netcluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netcluster, "_which", lambda tool: None if tool in ("sbatch", "apt-get") else "/bin/x")
    assert netcluster.unavailable_reason() == "needs slurm-wlm and apt-get to install them"


def test_skip_outside_ci_fail_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        cluster_conftest._unavailable("needs root")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI but cannot: needs root"):
        cluster_conftest._unavailable("needs root")


def test_missing_module_skips_outside_ci_fails_in_ci(monkeypatch):
    """The same gate for every optional piece (tests/needs.py): MiniLM package, triton, DeepSpeed, mpirun."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs the module no_such_module_lbt"):
        need_module("no_such_module_lbt")
    assert need_module("json").dumps([1]) == "[1]"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI but cannot: needs the module no_such_module_lbt"):
        need_module("no_such_module_lbt")

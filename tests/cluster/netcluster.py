"""A real two-host cluster on one machine: two network namespaces, SLURM, munge, sshd, pdsh.

SLURM, munge, sshd, pdsh and Open MPI come from apt (installed here when missing).
Host i (node1, node2) = a network namespace `lbt<pid><a|b>` joined by our own veth pair
(10.200.0.1/24, 10.200.0.2/24) plus a "holder" process with its own UTS namespace (its hostname)
and a private mount namespace in which /etc/hosts names both nodes and /etc/ssh/ssh_config points
ssh at port 2222 with a generated key. Every daemon and every command "on node i" runs via
`nsenter -t HOLDER --net --uts --mount`, so it sees exactly what a process on that host would.
slurmctld and the submit commands live on node1 (the veth pair has no end in the host's namespace).

Only addresses inside namespaces created here ever get traffic; the host's interfaces, routes and
files are untouched (the bind mounts are private to the holders). Teardown kills every process by
PID and deletes the namespaces (which removes the veth pair); namespaces left by a dead session are
swept at start-up.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from tests.procs import child_env, kill_tree, run, wait_for

ADDRS = ("10.200.0.1", "10.200.0.2")
NAMES = ("node1", "node2")
SSH_PORT = 2222
PACKAGES = {"sbatch": "slurm-wlm", "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "munged": "munge",
            "sshd": "openssh-server", "pdsh": "pdsh", "mpirun.openmpi": "openmpi-bin"}
NS_PREFIX = "lbt"


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")


def unavailable_reason() -> str | None:
    """Why the cluster cannot be built here (None: it can, after installing packages if needed)."""
    if sys.platform != "linux":
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (network namespaces, slurmd, sshd)"
    for tool in ("ip", "nsenter", "unshare", "mount"):
        if not _which(tool):
            return f"needs `{tool}` (iproute2 / util-linux)"
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if not _which(tool)})
    if missing and not _which("apt-get"):
        return f"needs {' '.join(missing)} and apt-get to install them"
    return None


def install_packages(log) -> None:
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if not _which(tool)})
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing
    if subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600,
                       check=True)
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600, check=True)
    still = sorted({pkg for tool, pkg in PACKAGES.items() if not _which(tool)})
    if still:
        raise RuntimeError(f"apt-get did not provide {still}")


def _sh(*cmd, timeout=30, check=True):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=check)


def sweep_stale_namespaces() -> None:
    """Delete namespaces named by this module whose creating process is gone."""
    out = _sh("ip", "netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        m = re.fullmatch(rf"{NS_PREFIX}(\d+)[ab]", name)
        if m and not psutil.pid_exists(int(m.group(1))):
            # daemons and holders of a session that was killed outright still live in it
            for pid in _sh("ip", "netns", "pids", name, check=False).stdout.split():
                kill_tree(int(pid), timeout=5)
            _sh("ip", "netns", "delete", name, check=False)


class NetCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.pid = os.getpid()
        self.netns = [f"{NS_PREFIX}{self.pid}a", f"{NS_PREFIX}{self.pid}b"]
        self.holders: list[subprocess.Popen] = []
        self.daemons: list[subprocess.Popen] = []
        self.slurm_conf = self.root / "slurm.conf"
        self._closed = False

    # ------------------------------------------------------------------ running things on a node
    def on(self, i: int, argv: list[str], cwd: str | os.PathLike | None = None) -> list[str]:
        """argv wrapped to run on node i (its network, hostname and mount namespace)."""
        return ["nsenter", "-t", str(self.holders[i].pid), "--net", "--uts", "--mount",
                f"--wd={cwd or self.root}"] + list(argv)

    def env(self, **extra) -> dict:
        return child_env(SLURM_CONF=str(self.slurm_conf), DS_ACCELERATOR="cpu", **extra)

    def run(self, i: int, argv: list[str], timeout: float, cwd=None, check=True, **extra_env):
        return run(self.on(i, argv, cwd), timeout=timeout, cwd=cwd or self.root, env=self.env(**extra_env),
                   check=check)

    def popen(self, i: int, argv: list[str], log: Path, cwd=None, **extra_env) -> subprocess.Popen:
        f = open(log, "w")
        p = subprocess.Popen(self.on(i, argv, cwd), stdout=f, stderr=subprocess.STDOUT, env=self.env(**extra_env),
                             cwd=cwd or self.root, start_new_session=True)
        f.close()
        return p

    def _daemon(self, i: int, argv: list[str], name: str) -> subprocess.Popen:
        p = self.popen(i, argv, self.root / f"{name}.log")
        self.daemons.append(p)
        return p

    # ------------------------------------------------------------------ build
    def start(self) -> NetCluster:
        atexit.register(self.close)
        sweep_stale_namespaces()
        self.root.mkdir(parents=True, exist_ok=True)
        self._network()
        self._holders()
        self._munge()
        self._slurm()
        self._sshd()
        return self

    def _network(self) -> None:
        a, b = self.netns
        for ns in self.netns:
            _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        for ns, addr in zip(self.netns, ADDRS):
            _sh("ip", "link", "set", ns, "netns", ns)
            _sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", ns)
            _sh("ip", "-n", ns, "link", "set", ns, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")

    def _holders(self) -> None:
        hosts = self.root / "hosts"
        hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for a, n in zip(ADDRS, NAMES)))
        key = self.root / "id_ed25519"
        for f in ("id_ed25519", "id_ed25519.pub", "ssh_host_key", "ssh_host_key.pub"):
            (self.root / f).unlink(missing_ok=True)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.root / "ssh_host_key"))
        shutil.copy(f"{key}.pub", self.root / "authorized_keys")
        ssh_config = self.root / "ssh_config"
        ssh_config.write_text(f"Host *\n  Port {SSH_PORT}\n  IdentityFile {key}\n  StrictHostKeyChecking no\n"
                              f"  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"
                              f"  ConnectTimeout 10\n")
        for ns, name in zip(self.netns, NAMES):
            # `--propagation private`: the bind mounts below never reach the host's mount table.
            script = (f"mount --bind {hosts} /etc/hosts && mount --bind {ssh_config} /etc/ssh/ssh_config && "
                      f"hostname {name} && exec sleep 86400")
            p = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", "unshare", "--uts", "--mount",
                                  "--propagation", "private", "--", "sh", "-c", script],
                                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.holders.append(p)
        for i, p in enumerate(self.holders):
            def ready(p=p, i=i):
                if p.poll() is not None:
                    raise RuntimeError(f"holder for {NAMES[i]} died: {p.stderr.read().decode()}")
                try:
                    return _sh("nsenter", "-t", str(p.pid), "--uts", "hostname", check=False).stdout.strip() == NAMES[i]
                except subprocess.SubprocessError:
                    return False
            wait_for(ready, 20, what=f"{NAMES[i]} namespace holder")

    def _munge(self) -> None:
        r = self.root
        (r / "munge.key").write_bytes(os.urandom(1024))
        (r / "munge.key").chmod(0o400)
        # inside node1's namespaces (a unix socket works from any network namespace) so that a sweep
        # of a dead session's namespaces finds it too
        p = subprocess.Popen(self.on(0, ["munged", "-F", "-f", f"--key-file={r}/munge.key", f"--socket={r}/munge.sock",
                              f"--pid-file={r}/munged.pid", f"--log-file={r}/munged.log",
                              f"--seed-file={r}/munge.seed"]), start_new_session=True,
                             stdout=open(r / "munged.out", "w"), stderr=subprocess.STDOUT)
        self.daemons.append(p)
        wait_for(lambda: (r / "munge.sock").exists(), 20, what="munged socket")

    def _slurm(self) -> None:
        r = self.root
        for d in ("state", "spool/node1", "spool/node2"):
            (r / d).mkdir(parents=True, exist_ok=True)
        nodes = "".join(f"NodeName={n} NodeAddr={a} CPUs=2 State=UNKNOWN\n" for n, a in zip(NAMES, ADDRS))
        self.slurm_conf.write_text(textwrap.dedent(f"""\
            ClusterName=lbtest
            SlurmctldHost={NAMES[0]}({ADDRS[0]})
            AuthType=auth/munge
            AuthInfo=socket={r}/munge.sock,cred_expire=10
            CredType=cred/munge
            SlurmUser=root
            SlurmdUser=root
            StateSaveLocation={r}/state
            SlurmdSpoolDir={r}/spool/%n
            SlurmctldPidFile={r}/slurmctld.pid
            SlurmdPidFile={r}/slurmd-%n.pid
            SlurmctldLogFile={r}/slurmctld.log
            SlurmdLogFile={r}/slurmd-%n.log
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_CPU
            JobAcctGatherType=jobacct_gather/none
            AccountingStorageType=accounting_storage/none
            MpiDefault=none
            ReturnToService=2
            KillWait=30
            MinJobAge=600
            SchedulerParameters=sched_interval=2
            """) + nodes + f"PartitionName=debug Nodes={','.join(NAMES)} Default=YES MaxTime=INFINITE State=UP\n")
        self._daemon(0, ["slurmctld", "-D", "-i"], "slurmctld.out")
        for i, n in enumerate(NAMES):
            self._daemon(i, ["slurmd", "-D", "-N", n], f"slurmd-{n}.out")

        def idle():
            cp = self.run(0, ["sinfo", "-h", "-o", "%t %D"], timeout=30, check=False)
            return cp.returncode == 0 and cp.stdout.split() == ["idle", "2"]
        wait_for(idle, 60, interval=0.5, what="both slurmd nodes idle in sinfo")

    def _sshd(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
        for i, (n, a) in enumerate(zip(NAMES, ADDRS)):
            cfg = self.root / f"sshd_config_{n}"
            cfg.write_text(f"Port {SSH_PORT}\nListenAddress {a}\nHostKey {self.root}/ssh_host_key\n"
                           f"PidFile {self.root}/sshd-{n}.pid\nAuthorizedKeysFile {self.root}/authorized_keys\n"
                           "PermitRootLogin yes\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                           "KbdInteractiveAuthentication no\nMaxStartups 100\n")
            self._daemon(i, [_which("sshd"), "-D", "-e", "-f", str(cfg)], f"sshd-{n}.out")
        for i in range(2):
            wait_for(lambda i=i: self.run(i, ["ssh", NAMES[1 - i], "hostname"], timeout=30, check=False)
                     .stdout.strip() == NAMES[1 - i], 30, interval=0.5, what=f"ssh {NAMES[i]} -> {NAMES[1 - i]}")

    # ------------------------------------------------------------------ SLURM helpers
    def job_state(self, job_id: str) -> dict:
        cp = self.run(0, ["scontrol", "show", "job", "-o", job_id], timeout=30, check=False)
        return dict(kv.split("=", 1) for kv in cp.stdout.split() if "=" in kv)

    def wait_job(self, job_id: str, states: tuple, timeout: float) -> dict:
        return wait_for(lambda: (s := self.job_state(job_id)).get("JobState") in states and s, timeout,
                        interval=0.5, what=f"job {job_id} in {states}")

    def logs(self) -> str:
        out = []
        for f in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")):
            out.append(f"==> {f.name}\n" + f.read_text(errors="replace")[-1500:])
        return "\n".join(out)

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.holders and self.daemons:
            try:  # jobs still running under slurmd die with their step daemons
                self.run(0, ["scancel", "--full", "--signal=KILL", "--user=root"], timeout=20, check=False)
            except AssertionError:
                pass
        for p in reversed(self.daemons):
            kill_tree(p.pid, timeout=5)
        for p in self.holders:
            for proc in _procs_in_netns_of(p.pid):
                kill_tree(proc, timeout=5)
            kill_tree(p.pid, timeout=5)
        for ns in self.netns:
            _sh("ip", "netns", "delete", ns, check=False)
        time.sleep(0.1)


def _procs_in_netns_of(pid: int) -> list[int]:
    """PIDs sharing the holder's namespaces (ranks started by slurmd/sshd), found via /proc."""
    try:
        target = os.readlink(f"/proc/{pid}/ns/uts")
    except OSError:
        return []
    out = []
    for p in psutil.pids():
        if p == pid:
            continue
        try:
            if os.readlink(f"/proc/{p}/ns/uts") == target:
                out.append(p)
        except OSError:
            pass
    return out

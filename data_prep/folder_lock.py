"""One owner per folder: the lock a build holds on its --out and a pretraining run (rank 0) on its --output.

A lock is a small JSON file (``{host, pid, started, since, lease_s, token, what}``) created with
``open(O_CREAT | O_EXCL)``. That create is atomic on a local disk, on NFSv3 and later (the server does the
exclusive create) and on Lustre (the metadata server does), so of two claimants exactly one creates it;
``flock`` is not used (NFS forwards it only with a lock manager, and Lustre only when mounted with
``flock``). Nothing else is relied on but ``stat``'s mtime, ``utime``, ``rename`` and ``unlink``.

A lock whose owner died must not block the next job:

- same host (the file's ``host`` is this machine's name): the owner is gone when its pid is no longer
  running, or runs a process started at another time (pid reuse): taken over at once;
- another host: the owner refreshes the file's mtime every ``lease_s / 6`` seconds from a daemon thread
  (the heartbeat); a file whose mtime is more than ``lease_s`` old (measured against the file server's
  clock: the claimant touches a probe file in the same folder, so unsynchronised client clocks do not
  matter) belongs to a lost node and is taken over. ``lease_s`` is written in the file by its owner, so
  the claimant waits at most what the owner promised: 60 s by default (``LINKBERT_LOCK_LEASE_S``).
- anything else (a process that hangs but still heartbeats, a lock you know is wrong): ``--force-unlock``.

A takeover itself is serialised by a second O_EXCL file (``<lock>.takeover``), so two claimants that both
find a stale lock cannot both win. The first owner's files are never touched by a claimant that loses.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from data_prep.errors import PrepError

DEFAULT_LEASE_S = 60.0
LEASE_ENV = "LINKBERT_LOCK_LEASE_S"
TAKEOVER_STALE_S = 30.0     # a .takeover file older than this was left by a claimant that died mid-takeover


class LockHeld(PrepError):
    """Another live process owns the folder; the message names it and the way out."""


@dataclass
class Owner:
    host: str
    pid: int
    started: float | None     # the owner process's start time (seconds since boot, from /proc), pid-reuse guard
    since: float              # wall time the lock was taken
    lease_s: float
    token: str
    what: str = ""

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"{self.what or 'a process'} on host {self.host}, pid {self.pid}, since {when}"


def lease_seconds() -> float:
    try:
        v = float(os.environ.get(LEASE_ENV, DEFAULT_LEASE_S))
    except ValueError:
        return DEFAULT_LEASE_S
    return v if v > 0 else DEFAULT_LEASE_S


def _host() -> str:
    return socket.gethostname()


def _proc_start(pid: int) -> float | None:
    """A process's start time in clock ticks since boot (Linux /proc); None where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:   # the command name (field 2) may hold spaces and parentheses: split after its last ')'
        return float(text.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int, started: float | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        pass
    now_started = _proc_start(pid)
    return started is None or now_started is None or now_started == started


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def read_owner(path: Path) -> Owner | None:
    """The lock file's owner; None when the file is missing, empty or unreadable (being written, or junk)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Owner(**{k: raw.get(k) for k in Owner.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def _fs_now(folder: Path) -> float:
    """The file server's current time: the mtime of a probe file just created in ``folder``."""
    probe = folder / f".lockclock.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError:
        return time.time()


def stale_reason(path: Path, owner: Owner | None) -> str | None:
    """Why the lock at ``path`` no longer has a live owner, or None while it does."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return "gone"
    age = _fs_now(path.parent) - mtime
    if owner is None:   # being written by a claimant right now, or junk left by one that died at once
        return f"unreadable and {age:.0f}s old" if age > TAKEOVER_STALE_S else None
    if owner.host == _host():
        return None if _pid_alive(int(owner.pid), owner.started) else f"pid {owner.pid} is no longer running"
    lease = float(owner.lease_s or DEFAULT_LEASE_S)
    return f"no heartbeat for {age:.0f}s (lease {lease:.0f}s)" if age > lease else None


class FolderLock:
    """Hold ``lock_path`` for the life of the owner. ``acquire`` raises LockHeld (one line) when a live
    owner holds it; ``release`` (also by ``with``) removes it only if it is still ours."""

    def __init__(self, lock_path: str | Path, what: str, subject: str, way_out: str, lease_s: float | None = None):
        self.path = Path(lock_path)
        self.what, self.subject, self.way_out = what, subject, way_out
        self.lease_s = lease_s or lease_seconds()
        self.owner: Owner | None = None
        self.took_over: str | None = None     # "owner description (reason)" when a stale lock was replaced
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ------------------------------------------------------------------------------------- acquire
    def acquire(self, force: bool = False) -> FolderLock:
        try:
            return self._acquire(force)
        except OSError as e:   # an unwritable or missing place: one line, not a traceback
            raise PrepError(f"{self.subject}: cannot create the lock file {self.path} ({e.strerror or e}); choose "
                            "a writable place") from None

    def _acquire(self, force: bool) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = Owner(_host(), os.getpid(), _proc_start(os.getpid()), time.time(), self.lease_s, uuid.uuid4().hex,
                   self.what)
        for _ in range(20):   # each turn either creates the file, or finds a live owner, or removes a dead one
            if self._create(me):
                self.owner = me
                self._start_heartbeat()
                return self
            seen = _inode(self.path)
            current = read_owner(self.path)
            if current is None and self.path.exists():
                time.sleep(0.1)            # a claimant between its create and its write
                current = read_owner(self.path)
            reason = "--force-unlock" if force else stale_reason(self.path, current)
            if reason is None:
                who = current.describe() if current else f"a process that is writing {self.path}"
                raise LockHeld(f"{self.subject}: in use by {who} (lock file {self.path}); {self.way_out}")
            if reason != "gone":
                self._take_over(current, seen, reason)
        raise LockHeld(f"{self.path}: could not be taken (claimed and released 20 times in a row); try again")

    def _create(self, me: Owner) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(asdict(me)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return True

    def _take_over(self, stale: Owner | None, seen: int | None, reason: str) -> None:
        """Remove a dead owner's lock, serialised by ``<lock>.takeover`` so only one claimant removes it."""
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if _fs_now(guard.parent) - guard.stat().st_mtime > TAKEOVER_STALE_S:
                    guard.unlink()
            except FileNotFoundError:
                pass
            time.sleep(0.2)
            return
        os.close(fd)
        try:
            again = read_owner(self.path)
            same = _inode(self.path) == seen and ((again is None and stale is None)
                                                  or (again and stale and again.token == stale.token))
            if same:
                try:
                    self.path.unlink()
                    self.took_over = f"{stale.describe() if stale else 'an unreadable lock'} ({reason})"
                except FileNotFoundError:
                    pass
        finally:
            guard.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------- holding
    def _start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(self.lease_s / 6):
                try:
                    os.utime(self.path)
                except OSError:
                    pass
        self._beat = threading.Thread(target=beat, daemon=True, name="folder-lock-heartbeat")
        self._beat.start()

    def still_ours(self) -> bool:
        cur = read_owner(self.path)
        return bool(cur and self.owner and cur.token == self.owner.token)

    def release(self) -> None:
        self._stop.set()
        if self.owner is not None and self.still_ours():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self.owner = None

    def __enter__(self) -> FolderLock:
        return self if self.owner else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# -------------------------------------------------------------------------------------------- the two uses

FORCE_HELP = ("remove the lock another run holds on this folder and take it (only when you know that run is "
              "gone: a live owner on another host would go on writing)")


def build_lock(out: str | Path) -> FolderLock:
    """The lock of ``linkbert-prep build --out OUT``: ``.OUT.lock`` beside OUT (OUT itself is swapped at the
    end of a build, and ``.OUT.building`` is the staging folder both builds would share)."""
    out = Path(out)
    return FolderLock(out.with_name(f".{out.name}.lock"), "linkbert-prep build", f"--out {out}",
                      "wait for it to finish, choose another --out, or, if that build is gone, pass --force-unlock")


def run_lock(output: str | Path) -> FolderLock:
    """The lock of ``linkbert-pretrain --output DIR``: ``DIR/.linkbert.lock``, held by rank 0."""
    return FolderLock(Path(output) / ".linkbert.lock", "linkbert-pretrain", f"--output {output}",
                      "wait for that run to finish, choose another --output, or, if that run is gone, pass "
                      "--force-unlock")

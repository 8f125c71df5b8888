"""Parallelism for build: MPI ranks (mpi4py, only when launched under an MPI launcher) and, within a
rank, a bounded ordered map over worker processes.

``Pool.imap`` / ``Executor.map`` pull their whole input into the task queue at once, which would read
a 20 GB corpus into memory; ``ordered_map`` keeps at most a few tasks in flight per worker instead.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")


class SingleComm:
    """The one-process stand-in for an MPI communicator (same small interface)."""
    rank, size = 0, 1

    def barrier(self):
        pass

    def bcast(self, obj, root=0):
        return obj

    def gather(self, obj, root=0):
        return [obj]

    def allgather(self, obj):
        return [obj]

    def abort(self, code=1):
        raise SystemExit(code)


class MPIComm:
    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def barrier(self):
        self.comm.Barrier()

    def bcast(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def gather(self, obj, root=0):
        return self.comm.gather(obj, root=root)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def abort(self, code=1):
        self.comm.Abort(code)


def launched_under_mpi(environ=None) -> bool:
    env = os.environ if environ is None else environ
    for k in MPI_SIZE_VARS:
        try:
            if int(env.get(k, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


def world(environ=None):
    """MPI's COMM_WORLD when started by mpirun/srun with more than one rank, else a SingleComm.

    mpi4py is imported only then: importing it initialises MPI, which a plain run should not pay for.
    """
    if not launched_under_mpi(environ):
        return SingleComm()
    try:
        from mpi4py import MPI
    except ImportError as e:
        from data_prep.errors import PrepError
        raise PrepError("started under MPI but mpi4py is missing: pip install 'linkbert-system[mpi]'") from e
    comm = MPI.COMM_WORLD
    return MPIComm(comm) if comm.Get_size() > 1 else SingleComm()


def on_rank0(comm, fn):
    """fn() on rank 0, its result shared; a PrepError there becomes the same error on every rank."""
    from data_prep.errors import PrepError
    result, err = None, None
    if comm.rank == 0:
        try:
            result = fn()
        except PrepError as e:
            err = str(e)
    err, result = comm.bcast((err, result))
    if err is not None:
        raise PrepError(err)
    return result


def on_every_rank(comm, fn):
    """fn() on every rank; a PrepError on any is an error on all (the first failing rank's message)."""
    from data_prep.errors import PrepError
    result, err = None, None
    try:
        result = fn()
    except PrepError as e:
        err = str(e)
    errs = [e for e in comm.allgather(err) if e]
    if errs:
        raise PrepError(errs[0])
    return result


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when ``parent_pid`` dies, whatever kills it (SIGKILL included).

    Linux: the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG); the check after
    it covers a parent that died before the call. Elsewhere a daemon thread polls the parent id. The
    resource tracker needs no watch of its own: it exits when the last process holding its pipe (the
    parent and these workers) is gone."""
    import signal
    import threading
    import time

    from data_prep.process import arm_parent_death

    arm_parent_death(signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)
    # Ctrl-C reaches the whole foreground process group: the parent alone reacts (one line, its pool shut
    # down, temporary files removed); a worker's KeyboardInterrupt traceback would only add noise
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


class _QuietSpawnProcess(mp.get_context("spawn").Process):
    """A spawn worker started with SIGINT ignored (kept across exec, and Python then installs no
    KeyboardInterrupt handler): Ctrl-C reaches the whole foreground group, and only the parent must act
    on it, also while a worker is still starting up."""

    def start(self):
        import signal
        import threading
        if threading.current_thread() is not threading.main_thread():
            return super().start()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return super().start()
        finally:
            signal.signal(signal.SIGINT, previous)


class _QuietSpawnContext(type(mp.get_context("spawn"))):
    Process = _QuietSpawnProcess


def spawn_context():
    return _QuietSpawnContext()


def spawn_pool(workers: int):
    """A multiprocessing Pool (spawn) whose workers die with this process (converters use it)."""
    return spawn_context().Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),))


def make_pool(workers: int):
    """A process pool for ``ordered_map`` (None for one worker: work then runs in this process).

    spawn, not fork: the parent may hold a tokenizer whose thread pool does not survive fork.
    concurrent.futures, not multiprocessing.Pool: a worker that dies (OOM killer, a script that
    calls build() without an ``if __name__ == "__main__":`` guard) raises BrokenProcessPool at once,
    where Pool silently starts a replacement and the build waits forever.
    One pool serves every step of a build, so workers start once. Workers die with this process
    (``die_with_parent``): a build killed with SIGKILL leaves no orphans.
    """
    if workers <= 1:
        return None
    return ProcessPoolExecutor(max_workers=workers, mp_context=spawn_context(),
                               initializer=die_with_parent, initargs=(os.getpid(),))


def ordered_map(fn: Callable, items: Iterable, pool=None, workers: int = 1,
                inflight_per_worker: int = 3) -> Iterator:
    """``map(fn, items)`` in order; across ``pool`` when given, with bounded look-ahead."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque = deque()
    limit = max(1, workers) * inflight_per_worker
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as e:
        from data_prep.errors import PrepError
        raise PrepError("a worker process died (out of memory? or build() called from a script without "
                        "an `if __name__ == \"__main__\":` guard); retry with fewer --workers") from e
    finally:
        for f in pending:
            f.cancel()


class WorkerState:
    """One expensive object per worker process and build (a tokenizer, a loaded segment table), kept
    between tasks. Keyed by the build's frozen config, so a later build in the same process never reuses
    stale state; only the newest key is held. ``release_worker_state()`` drops every instance's object:
    in-process work (one worker) must not pin a finished build's files."""

    _instances: list[WorkerState] = []

    def __init__(self):
        self._key, self._value = None, None
        WorkerState._instances.append(self)

    def get(self, key, make):
        if self._key != key or self._value is None:
            self._key, self._value = None, None   # the old object goes before the new one is made
            self._value, self._key = make(), key
        return self._value

    def clear(self) -> None:
        self._key, self._value = None, None


def release_worker_state() -> None:
    for s in WorkerState._instances:
        s.clear()

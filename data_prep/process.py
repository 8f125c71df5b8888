"""How every CLI of the project leaves its process (data_prep is the package the others build on).

In a process that a distributed launcher started (torchrun, DeepSpeed, mpirun, srun) or that still has a
process group, interpreter shutdown can abort it: the C++ threads of gloo / NCCL, the TCP store and
DeepSpeed are torn down while the peer ranks leave too ("terminate called without an active exception"),
turning exit code 0/2/3 into SIGABRT after all work was done. There we flush and leave with os._exit.
"""
from __future__ import annotations

import os
import sys


def exit_process(code: int) -> None:
    dist = sys.modules.get("torch.distributed")
    launched = "WORLD_SIZE" in os.environ or "LOCAL_RANK" in os.environ
    if launched or (dist is not None and dist.is_available() and dist.is_initialized()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


PR_SET_PDEATHSIG = 1


def arm_parent_death(sig: int) -> None:
    """This process gets ``sig`` when its parent dies (Linux prctl PR_SET_PDEATHSIG; kept across exec)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):   # not glibc: nothing to arm
        pass


def dies_with_parent(sig: int | None = None):
    """``preexec_fn`` for subprocess: the child gets ``sig`` (SIGKILL by default) when this process dies,
    SIGKILL and the OOM killer included; a parent that died before the call is noticed at once."""
    import signal
    sig = signal.SIGKILL if sig is None else sig
    parent = os.getpid()

    def arm():
        arm_parent_death(sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)
    return arm if sys.platform.startswith("linux") else None


def tied_module_argv(module: str, args: list[str]) -> list[str]:
    """argv of ``python -m module args`` whose forked workers (a ProcessPoolExecutor's, say) also die when it
    does: every fork re-arms PR_SET_PDEATHSIG, which a fork clears. Start it with ``dies_with_parent()``."""
    code = ("import ctypes, os, runpy, signal, sys\n"
            "def _arm():\n"
            "    try:\n"
            f"        ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, int(signal.SIGKILL), 0, 0, 0)\n"
            "    except (OSError, AttributeError):\n"
            "        pass\n"
            "os.register_at_fork(after_in_child=_arm)\n"
            f"sys.argv = [{module!r}] + sys.argv[1:]\n"
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n")
    return [sys.executable, "-c", code, *args]

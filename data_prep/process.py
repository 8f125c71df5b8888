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

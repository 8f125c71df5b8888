"""Fault injection and tracing for the tests, switched on by environment variables and by nothing else.

A normal run sets none of them; each hook below is a no-op then. They live here, in one clearly named
place, so production modules carry one call each instead of test logic:

- ``LINKBERT_FAULT_NAN_STEPS=3,5``: poison the loss (x NaN) at these optimizer steps (1-based), to test
  that non-finite steps are skipped and counted at every ZeRO stage and precision;
- ``LINKBERT_FAULT_SAVE_STEP=N``: die (exit 17) inside the save of step N, after the files and before
  the COMPLETE marker, to test that such a checkpoint is never resumed;
- ``LINKBERT_TRACE_DIR=DIR``: each rank appends the pair ids it trains on to ``DIR/trace_rank{r}.jsonl``,
  to test that every pair is trained once per epoch across ranks and resumes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

NAN_STEPS_ENV = "LINKBERT_FAULT_NAN_STEPS"
SAVE_CRASH_ENV = "LINKBERT_FAULT_SAVE_STEP"
TRACE_ENV = "LINKBERT_TRACE_DIR"


def nan_steps() -> frozenset[int]:
    raw = os.environ.get(NAN_STEPS_ENV, "")
    return frozenset(int(x) for x in raw.split(",") if x.strip())


def crash_inside_save(step: int) -> None:
    if os.environ.get(SAVE_CRASH_ENV) == str(step):
        os._exit(17)


class Trace:
    """Pair ids per micro-batch, one JSON line each (or nothing when tracing is off)."""

    def __init__(self, rank: int):
        folder = os.environ.get(TRACE_ENV)
        self._f = open(Path(folder) / f"trace_rank{rank}.jsonl", "a", buffering=1) if folder else None

    def write(self, position: int, ids) -> None:
        if self._f is not None:
            self._f.write(json.dumps({"position": position, "ids": [int(i) for i in ids]}) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()

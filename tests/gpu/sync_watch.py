"""Host-sync capture for the step loop, shared by the CUDA test (tests/gpu/test_sync_free.py, in its child
script) and the CPU emulation that proves it catches a deliberate `.item()`."""
from __future__ import annotations

import warnings

import torch


def watch(found: list[str], fn, ours: tuple[str, ...]):
    """`fn` wrapped: while it runs, CUDA's sync debug mode warns on every host sync; each such warning
    raised from a file under one of the `ours` prefixes is appended to `found` as "file:line"."""
    def wrapped(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
                found.extend(f"{w.filename}:{w.lineno}" for w in caught
                             if "synchroniz" in str(w.message) and w.filename.startswith(ours))
    return wrapped

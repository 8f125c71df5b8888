"""The launcher's side of the rendezvous: its defaults, and waiting for node rank 0's endpoint.

launch knows only commands and clusters: this poll is its own (the trainer's side lives in
pretrain.dist_env and bounds the ranks' own rendezvous the same way).
"""
from __future__ import annotations

import socket
import time

from launch.errors import LaunchError

DEFAULT_PORT = 29500                  # torchrun's and DeepSpeed's default master port
DEFAULT_RENDEZVOUS_TIMEOUT_S = 300.0  # how long other nodes wait for node rank 0


def wait_for_endpoint(addr: str, port: int, timeout_s: float, hint: str = "", poll_s: float = 0.5) -> None:
    """Return once something accepts TCP connections at addr:port; else one LaunchError naming them."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        try:
            with socket.create_connection((addr, port), timeout=min(5.0, max(timeout_s, 0.1))):
                return
        except OSError as e:   # refused, unreachable, unresolvable: retry until the deadline
            last = e.strerror or str(e)
        if time.monotonic() >= deadline:
            raise LaunchError(f"rendezvous timed out after {timeout_s:g}s: nothing answered at {addr}:{port} "
                              f"(last error: {last}) {hint}".rstrip())
        time.sleep(poll_s)

"""What a test needs from its environment: skipped where a piece is missing, a failure under CI=true.

A developer's machine may lack an optional piece (the MiniLM weights package, triton, DeepSpeed, mpirun) and
gets a skip that names it; CI installs everything, so there a missing piece means the suite silently ran less
than it claims, and the test fails instead. `missing` is the one place that decides; `need_module` is the
`pytest.importorskip` that goes through it.
"""
from __future__ import annotations

import importlib
import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str, what: str = "this test") -> NoReturn:
    """Skip with `reason`, or fail with it when CI=true."""
    if in_ci():
        pytest.fail(f"{what} must run in CI but cannot: {reason}", pytrace=False)
    pytest.skip(reason)


def need_module(name: str):
    """Import `name` and return it, or go through `missing` naming the module and the import error."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"needs the module {name} ({e})")

"""The disk under a run's output: free space, which disk, and write failures as one line naming both.

A full or read-only disk shows up deep inside torch/DeepSpeed as ``RuntimeError: [enforce fail at
inline_container.cc]`` or ``Parent directory ... does not exist``, naming neither the path nor the disk;
``write_error`` turns those (and plain ``OSError``) into a PretrainError that does.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from pretrain.errors import PretrainError

# torch.save / DeepSpeed messages that mean "the file could not be written" (not a bug in our code)
_WRITE_FAILURES = ("inline_container", "Parent directory", "file write failed", "No space left", "Read-only",
                   "Permission denied", "PytorchStreamWriter failed")


# Bytes a training checkpoint takes per parameter (upper estimate): module weights (fp32 4), Adam/LAMB's
# fp32 master copy and two moments (12); DeepSpeed writes the master copy even at fp32.
CHECKPOINT_BYTES_PER_PARAM = 16
EXPORT_BYTES_PER_PARAM = 4   # the HF export (fp32 safetensors)


class StorageError(PretrainError, OSError):
    """The output disk cannot take what the run must write; the message names the path, the disk and the fix."""


def existing_ancestor(path: str | Path) -> Path:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def mount_point(path: str | Path) -> Path:
    p = existing_ancestor(path).resolve()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | Path) -> int:
    return shutil.disk_usage(existing_ancestor(path)).free


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def disk_description(path: str | Path) -> str:
    try:
        return f"the disk mounted at {mount_point(path)} ({human(free_bytes(path))} free)"
    except OSError:
        return "its disk"


def check_free_space(path: str | Path, need: int, what: str) -> None:
    """StorageError unless the disk holding ``path`` has ``need`` bytes free for ``what``."""
    have = free_bytes(path)
    if have < need:
        try:
            disk = f"the disk mounted at {mount_point(path)}"
        except OSError:
            disk = "its disk"
        raise StorageError(f"{path}: about {human(need)} needed for {what}, but {disk} has only {human(have)} "
                           "free; free space there or point --output at a larger disk")


def check_writable(path: str | Path) -> None:
    """StorageError unless files can be created at ``path`` (or, while it does not exist yet, in the
    nearest existing folder above it, where it will be made). Creates nothing that stays."""
    p = Path(path)
    target = p if p.exists() else existing_ancestor(p)
    try:
        if not target.is_dir():
            raise NotADirectoryError(20, "not a directory", str(target))
        probe = target / f".linkbert-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StorageError(f"{p}: cannot write there ({e.strerror or e}; tried {target}) on {disk_description(p)}; "
                           "fix its permissions or choose another --output") from None


def is_write_failure(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return True
    return isinstance(e, RuntimeError) and any(s in str(e) for s in _WRITE_FAILURES)


def write_error(path: str | Path, e: BaseException, what: str, hint: str = "") -> StorageError:
    """One line for a failed write of ``what`` at ``path``: the reason, the disk and what to do."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in str(e):
        reason = "the disk is full"
    elif isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "no permission to write (or a read-only disk)"
    else:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = f"{type(e).__name__}: {first[:200]}"
    return StorageError(f"{path}: writing {what} failed: {reason}, on {disk_description(path)}; free space or "
                        f"fix permissions there, or point --output at another disk{hint}")

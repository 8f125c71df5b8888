"""Build output that replaces a finished one only when complete: work in a sibling folder, swap at the end.

`build --out D` writes into ``.D.building`` beside D (same filesystem, so the swap is a rename) and, once
the manifest is written, exchanges the two folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``;
elsewhere two renames, the old build parked at ``.D.old`` in between). Until then D is untouched: a typo
in a corpus path, a bad line, a full disk or a kill leaves yesterday's dataset as it was.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import sys
from pathlib import Path

RENAME_EXCHANGE = 2


def staging_dir(final: Path) -> Path:
    """Where a build of ``final`` is written (a name every MPI rank derives alike)."""
    return final.with_name(f".{final.name}.building")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux 3.15+); False where the call is unavailable or refused."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):   # old kernel or a filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_in(staging: Path, final: Path, is_own) -> None:
    """Make ``staging`` the folder at ``final``. Entries of an old ``final`` that the build does not
    write (``is_own(name)`` false: the user's notes, say) move into the new folder first; the old build's
    own files are removed after the swap."""
    if final.exists() and not final.is_dir():
        raise NotADirectoryError(final)
    if final.is_dir():
        for entry in final.iterdir():
            if not is_own(entry.name) and not (staging / entry.name).exists():
                entry.rename(staging / entry.name)
        if _exchange(staging, final):
            shutil.rmtree(staging, ignore_errors=True)   # staging now holds the old build
            return
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(final)


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)

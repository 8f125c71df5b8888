"""What keeps two runs, a run and its data, and a run and its own past apart.

- ``hold``: rank 0 owns --output for the run's life (``data_prep.folder_lock``: an O_EXCL lock file, a pid
  check on the same host, a heartbeat lease across hosts); a second run exits with one line naming the
  owner, on every rank. ``release`` gives it back (the CLI calls it however the run ends).
- ``folder_problems``: --output equal to or inside a --data folder, or a --data folder inside --output.
- ``settings_problems``: a resume whose model config differs from the checkpoint's (one line naming
  both values, before any engine is built), and a changed global batch (a warning).
- ``lock_line``: what --dry-run says about the lock of --output.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from data_prep.errors import PrepError
from data_prep.folder_lock import FolderLock, read_owner, run_lock, stale_reason
from pretrain.errors import PretrainError


class OutputInUse(PretrainError):
    """Another live run owns --output."""


_state: dict = {"lock": None, "force": False, "created": None}


def request_force_unlock(on: bool = True) -> None:
    """--force-unlock: the next ``hold`` removes whatever lock is on --output."""
    _state["force"] = on


def hold(cfg, rank: int, world: int, dist=None, log=None) -> FolderLock | None:
    """Rank 0 takes the lock of --output; every rank raises the same one-line error when it is held (or
    when --output and a --data folder overlap: checked first, so no lock file lands in a dataset)."""
    output = cfg.train.output
    for p in folder_problems(output, cfg.data.paths):
        raise OutputInUse(p)
    err = None
    if rank == 0:
        try:
            made = None if Path(output).exists() else Path(output)
            lock = run_lock(output).acquire(force=_state["force"])
            _state["lock"], _state["created"] = lock, made
            if lock.took_over and log is not None:
                log.warning("took over the lock of --output %s from %s", output, lock.took_over)
        except PrepError as e:   # LockHeld, or a place where no lock file can be made
            err = str(e)
    if dist is not None and world > 1:
        box = [err]
        dist.broadcast_object_list(box, src=0)
        err = box[0]
    if err:
        raise OutputInUse(err)
    return _state["lock"]


def release() -> None:
    """Give the lock back; a --output folder this run created and left empty (a run refused in preflight,
    before it wrote anything) is removed with it, so a refused run leaves no trace."""
    lock, _state["lock"] = _state["lock"], None
    created, _state["created"] = _state["created"], None
    if lock is not None:
        lock.release()
        if created is not None:
            try:
                created.rmdir()   # only when empty: anything the run wrote keeps the folder
            except OSError:
                pass


def lock_line(output: str | Path) -> tuple[list[str], str]:
    """(problems, a line) for --dry-run: who holds the lock of ``output`` now."""
    path = run_lock(output).path
    owner = read_owner(path)
    if not path.exists():
        return [], f"output lock: free ({path} absent)"
    if owner and owner.host == socket.gethostname() and owner.pid == os.getpid():
        return [], "output lock: held by this process"
    why = stale_reason(path, owner)
    if why:
        return [], f"output lock: left by {owner.describe() if owner else 'a dead process'} ({why}): will be taken over"
    who = owner.describe() if owner else "a process writing it now"
    return [f"--output {output}: in use by {who} (lock file {path}); wait for that run to finish, choose another "
            "--output, or, if that run is gone, pass --force-unlock"], f"output lock: held by {who}"


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def folder_problems(output: str | Path, data_paths: list[str]) -> list[str]:
    """--output must be neither a --data folder, nor inside one, nor contain one."""
    out = Path(output).resolve()
    problems = []
    for d in data_paths:
        dp = Path(d).resolve()
        if _inside(out, dp):
            where = "is" if out == dp else "is inside"
            problems.append(f"--output {output} {where} the --data folder {d}: checkpoints and exports would land "
                            "in the dataset; choose an --output outside it")
        elif _inside(dp, out):
            problems.append(f"--data {d} is inside --output {output}: a run folder is not a dataset; keep the data "
                            "outside the run folder")
    return problems


# keys of a model config that are not its shape: dropout may change on resume, the rest is bookkeeping
_NOT_SHAPE = {"hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "architectures",
              "transformers_version", "torch_dtype", "dtype", "use_cache", "return_dict", "output_hidden_states",
              "output_attentions", "gradient_checkpointing"}


def model_shape_diff(saved: dict, now: dict) -> list[tuple[str, object, object]]:
    """(key, checkpoint's value, this run's value) for every model config field that differs."""
    out = []
    for k in sorted(set(saved) & set(now)):
        if k.startswith("_") or k in _NOT_SHAPE or isinstance(saved[k], dict) or isinstance(now[k], dict):
            continue
        a, b = saved[k], now[k]
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)
        if a != b:
            out.append((k, saved[k], now[k]))
    return out


def settings_problems(last: Path, meta: dict, now_model: dict | None, global_batch: int | None,
                      what: str) -> tuple[list[str], list[str]]:
    """(problems, warnings) of resuming from checkpoint ``last`` (its run.json ``meta``) with this config."""
    problems, warnings = [], []
    saved = meta.get("model_config") or {}
    if now_model is not None and saved:
        diff = model_shape_diff(saved, now_model)
        if diff:
            desc = ", ".join(f"{k} {a} in the checkpoint but {b} for {what}" for k, a, b in diff[:4])
            more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
            problems.append(f"{last}: resuming with another model is refused: {desc}{more}; resume with the "
                            "model the run started with, or choose a new --output")
    t = (meta.get("config") or {}).get("train") or {}
    old_world = meta.get("world_size")
    if global_batch is not None and old_world and t.get("micro_batch_size") and t.get("grad_accum"):
        old = int(t["micro_batch_size"]) * int(t["grad_accum"]) * int(old_world)
        if old != global_batch:
            warnings.append(f"the global batch changes on this resume: {old} pairs/step in {last} (micro "
                            f"{t['micro_batch_size']} x accum {t['grad_accum']} x world {old_world}), {global_batch} "
                            "now; the learning-rate schedule continues by step")
    return problems, warnings


def on_ctrl_c(second: bool, announce: bool) -> None:
    """Ctrl-C during training (a signal handler): the first asks for a save at the next step boundary; the
    second stops at once with one line (the lock of --output is given back; exit 130)."""
    import sys
    if second:
        try:
            sys.stderr.write("linkbert-pretrain: second Ctrl-C: stopped at once, no checkpoint written since the "
                             "last one\n")
            sys.stderr.flush()
            release()
        finally:
            os._exit(130)
    if announce:
        sys.stderr.write("linkbert-pretrain: Ctrl-C: saving a checkpoint at the next step and exiting (press "
                         "Ctrl-C again to stop at once without it)\n")
        sys.stderr.flush()

"""Training checkpoints: DeepSpeed's format plus our own completeness marker, retention and HF export.

Layout: ``OUTPUT/checkpoints/step{N}/`` holds DeepSpeed's files, ``rng_rank{r}.pt`` (each rank's RNG
states), ``run.json`` (step, consumed samples, config) and the tokenizer, and - written by rank 0 only
after every rank has finished writing - ``COMPLETE``. DeepSpeed writes its ``latest`` file before its
last barrier, so a kill during a save can leave ``latest`` naming a half-written checkpoint; we never
read ``latest``: resume takes the newest folder that has ``COMPLETE``.

Resuming on a different number of ranks: ZeRO 1-3 partition the optimizer state by rank, which
DeepSpeed's plain loader refuses to re-split. We convert the checkpoint with DeepSpeed's own
``ds_to_universal`` into ``checkpoints/universal/stepN`` (per-parameter fp32 weights and optimizer
moments), load that with ``checkpoint.load_universal``, and delete it once every rank has loaded.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

from data_prep.shards import TOKENIZER_FILES, has_tokenizer
from pretrain import faults
from pretrain.errors import PretrainError
from pretrain.storage import (
    CHECKPOINT_BYTES_PER_PARAM,
    StorageError,
    check_free_space,
    is_write_failure,
    write_error,
)

COMPLETE = "COMPLETE"
RUN_META = "run.json"
MASTER_WEIGHTS = "fp32_master_weights.pt"   # ZeRO-0 fp16/bf16 runs: the weights the optimizer updates
TAG_RE = re.compile(r"^step(\d+)$")


class CheckpointError(PretrainError, RuntimeError):
    """A checkpoint that cannot be written or read; the message names the folder and the fix."""


def ckpt_root(output: str | Path) -> Path:
    return Path(output) / "checkpoints"


def tag_for(step: int) -> str:
    return f"step{step}"


def list_tags(root: Path, complete_only: bool = True) -> list[tuple[int, Path]]:
    """(step, folder) sorted by step."""
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = TAG_RE.match(p.name)
        if m and p.is_dir() and (not complete_only or (p / COMPLETE).is_file()):
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_complete(output: str | Path) -> Path | None:
    tags = list_tags(ckpt_root(output))
    return tags[-1][1] if tags else None


def rng_state() -> dict:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state()
    return s


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _estimate_bytes(engine) -> int | None:
    """The first save's size from the parameter count (ZeRO-3 keeps the full count in ``ds_numel``)."""
    module = getattr(engine, "module", None)
    if module is None:
        return None
    return CHECKPOINT_BYTES_PER_PARAM * sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())


def save(engine, output: str | Path, step: int, meta: dict, rank: int, barrier, tokenizer_dir=None,
         keep_last: int = 3, need_bytes: int | None = None) -> Path:
    """Collective: every rank calls it. Returns the checkpoint folder.

    Before writing, the disk must have room for a checkpoint as large as the newest complete one (or
    ``need_bytes``); older checkpoints are pruned only after the new one is COMPLETE, so a full disk or
    an unwritable folder fails with one line (StorageError: path, disk, fix) and the last complete
    checkpoint stays resumable."""
    root = ckpt_root(output)
    tag = tag_for(step)
    folder = root / tag
    last = latest_complete(output)
    kept = f"; the last complete checkpoint {last} is kept" if last is not None else ""
    need = need_bytes if need_bytes is not None else (folder_bytes(last) if last is not None else
                                                      _estimate_bytes(engine))
    if need:
        try:
            check_free_space(root, need, f"checkpoint {tag}")
        except StorageError as e:
            raise StorageError(f"{e}{kept}") from None
    try:
        if rank == 0 and folder.exists():   # a leftover incomplete save of the same step (we resumed before it)
            shutil.rmtree(folder)
        barrier()
        engine.save_checkpoint(str(root), tag=tag, client_state={"linkbert": meta}, save_latest=False)
        torch.save(rng_state(), folder / f"rng_rank{rank}.pt")
        if rank == 0:
            master = master_weights(engine) if int(meta.get("zero_stage", 0)) == 0 else None
            if master is not None:   # what an export must read: see master_weights
                torch.save(master, folder / MASTER_WEIGHTS)
            _atomic_write(folder / RUN_META, json.dumps(meta, indent=2, default=str) + "\n")
            if tokenizer_dir is not None:
                for name in TOKENIZER_FILES:
                    if (Path(tokenizer_dir) / name).is_file():
                        shutil.copyfile(Path(tokenizer_dir) / name, folder / name)
        faults.crash_inside_save(step)   # tests: a crash between the files and the marker is never resumed
        barrier()   # every rank's shards are on disk before the marker says so
        if rank == 0:
            _atomic_write(folder / COMPLETE, json.dumps({"step": step}) + "\n")
    except Exception as e:
        if not is_write_failure(e):
            raise
        raise write_error(folder, e, f"checkpoint {tag}", kept) from None
    if rank == 0:
        prune(root, keep_last)
    barrier()
    return folder


def prune(root: Path, keep_last: int) -> list[Path]:
    """Keep the newest keep_last complete checkpoints; drop older ones and incomplete leftovers."""
    complete = list_tags(root)
    keep = {p for _, p in complete[-keep_last:]}
    newest = complete[-1][0] if complete else -1
    removed = []
    for step, p in list_tags(root, complete_only=False):
        if p in keep:
            continue
        if (p / COMPLETE).is_file() or step <= newest:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def read_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / RUN_META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder / RUN_META}: unreadable ({e}); resume from an older step folder") from None


def needs_reshard(folder: Path, world: int, stage: int) -> bool:
    """True when the checkpoint's ZeRO optimizer state is partitioned for another number of ranks (then it
    is loaded through a universal checkpoint); a one-line error for another ZeRO stage."""
    meta = read_meta(folder)
    saved_world, saved_stage = int(meta.get("world_size", world)), int(meta.get("zero_stage", 0))
    if saved_stage != stage:
        raise CheckpointError(f"{folder}: written at ZeRO-{saved_stage}, this run is ZeRO-{stage}; resume with "
                              f"--zero-stage {saved_stage} (the number of ranks may change, the stage may not), "
                              "or start a new run from its HF export with --init-from")
    return stage >= 1 and saved_world != world


def universal_dir(folder: Path) -> Path:
    return folder.parent / "universal" / folder.name


def to_universal(folder: Path, workers: int = 2, timeout: float = 3600) -> Path:
    """Rank 0 only: convert a ZeRO checkpoint to DeepSpeed's universal format (subprocess, its own
    worker pools). Returns the universal step folder."""
    dest = universal_dir(folder)
    shutil.rmtree(dest.parent, ignore_errors=True)
    from data_prep.process import dies_with_parent, tied_module_argv
    # the converter and its worker processes die with this rank (SIGKILL, node loss): no orphans
    cmd = tied_module_argv("deepspeed.checkpoint.ds_to_universal", [
        "--input_folder", str(folder), "--output_folder", str(dest), "--inject_missing_state",
        "--num_extract_workers", str(workers), "--num_merge_workers", str(workers)])
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=dies_with_parent())
    except subprocess.TimeoutExpired:
        raise CheckpointError(f"{folder}: conversion to a universal checkpoint took over {timeout:.0f}s") from None
    if p.returncode != 0 or not (dest / "zero").is_dir():
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CheckpointError(f"{folder}: converting to a universal checkpoint for a new number of ranks "
                              f"failed ({tail[0]}); resume on {read_meta(folder).get('world_size')} ranks")
    return dest


def load(engine, folder: Path, rank: int, universal: Path | None = None) -> dict:
    """Restore engine (model, optimizer, scheduler) and this rank's RNG; returns the run metadata.
    ``universal``: the folder written by to_universal (the engine was built with load_universal)."""
    if not (folder / COMPLETE).is_file():
        raise CheckpointError(f"{folder}: no {COMPLETE} marker; the save did not finish, pick an older one")
    src = universal or folder
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer) if universal is not None else None
    decay = [g.get("weight_decay") for g in inner.param_groups] if inner is not None else []
    path, client = engine.load_checkpoint(str(src.parent), tag=src.name, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if inner is not None:
        # DeepSpeed's ZeRO-3 universal loader copies the first param group's hyperparameters onto every
        # group, which would put weight decay on the no-decay group (biases, LayerNorm), and gives all
        # groups one shared `step` tensor, which torch's AdamW then advances once per group: undo both.
        for g, wd in zip(inner.param_groups, decay):
            g["weight_decay"] = wd
        for st in inner.state.values():
            if torch.is_tensor(st.get("step")):
                st["step"] = st["step"].clone()
    if path is None:
        raise CheckpointError(f"{folder}: DeepSpeed could not load it")
    meta = read_meta(folder)
    rng = folder / f"rng_rank{rank}.pt"
    if rng.is_file():
        set_rng_state(torch.load(rng, weights_only=False))
        meta["rng_restored"] = True
    else:   # resumed on more ranks than saved: new ranks start from their seed (logged by the trainer)
        meta["rng_restored"] = False
    return meta


def resume(engine, folder: Path, rank: int, reshard: bool, log) -> dict:
    """Collective: restore a run from ``folder``. With ``reshard`` (another number of ranks) rank 0
    converts it to DeepSpeed's universal format first; a failed conversion fails every rank with rank 0's
    line (none waits forever); the converted copy is deleted once every rank has loaded it."""
    import torch.distributed as dist
    universal = universal_dir(folder) if reshard else None
    if reshard:
        err = [None]
        if rank == 0:
            log.info("re-partitioning %s for %d ranks (DeepSpeed universal checkpoint)", folder,
                     dist.get_world_size())
            try:
                to_universal(folder)
            except CheckpointError as e:
                err = [str(e)]
        dist.broadcast_object_list(err, src=0)
        if err[0]:
            raise CheckpointError(err[0])
    meta = load(engine, folder, rank, universal)
    if reshard:
        dist.barrier()
        if rank == 0:
            shutil.rmtree(universal.parent, ignore_errors=True)
    return meta


def master_weights(engine) -> dict[str, torch.Tensor] | None:
    """The fp32 master copy of a ZeRO-0 fp16/bf16 run, by parameter name (None for other runs).

    Without ZeRO, DeepSpeed keeps the fp32 weights inside its FP16 optimizer wrappers (fused: flat per
    group; unfused: per tensor) and saves only the half-precision module; an export from that would
    round every weight to 8 (bf16) or 11 (fp16) bits. Tied names (the decoder) map to the same tensor.
    """
    opt = getattr(engine, "optimizer", None)
    halves = getattr(opt, "fp16_groups", None)
    if halves is None:
        return None
    if hasattr(opt, "fp32_groups_flat"):
        from torch._utils import _unflatten_dense_tensors
        fulls = [_unflatten_dense_tensors(flat, group) for flat, group in zip(opt.fp32_groups_flat, halves)]
    elif hasattr(opt, "fp32_groups"):
        fulls = opt.fp32_groups
    else:
        return None
    by_id = {id(h): f for hs, fs in zip(halves, fulls) for h, f in zip(hs, fs)}
    out = {}
    for name, p in engine.module.named_parameters(remove_duplicate=False):
        if id(p) in by_id:
            out[name] = by_id[id(p)].detach().float().cpu().clone()
    return out


def resolve(ckpt: str | Path) -> Path:
    """OUTPUT dir, OUTPUT/checkpoints or a step folder -> a complete step folder."""
    p = Path(ckpt)
    if (p / COMPLETE).is_file():
        return p
    for root in (p / "checkpoints", p):
        tags = list_tags(root)
        if tags:
            return tags[-1][1]
    if TAG_RE.match(p.name) and p.is_dir():
        raise CheckpointError(f"{p}: no {COMPLETE} marker (the save was interrupted); use an older step folder")
    raise CheckpointError(f"{p}: no complete checkpoint here (expected OUTPUT, OUTPUT/checkpoints or "
                          "OUTPUT/checkpoints/stepN written by linkbert-pretrain)")


def _bf16_optimizer_files(folder: Path) -> list[Path]:
    """The per-rank optimizer files of DeepSpeed's BF16_Optimizer, in rank order ([] for other checkpoints).

    DeepSpeed picks that wrapper (not its ZeRO optimizer) for bf16 + ZeRO-1 with fp32 gradient
    accumulation. It partitions the fp32 master weights like ZeRO-1 but writes no ``zero_stage`` key, so
    DeepSpeed's ``zero_to_fp32`` refuses the checkpoint ("is not a zero checkpoint")."""
    return sorted(folder.glob("bf16_zero_pp_rank_*_mp_rank_00_optim_states.pt"), key=_bf16_rank)


def _bf16_rank(f: Path) -> int:
    return int(re.match(r"bf16_zero_pp_rank_(\d+)_", f.name).group(1))


def _bf16_optimizer_state_dict(folder: Path, files: list[Path]) -> dict[str, torch.Tensor]:
    """fp32 master weights of a BF16_Optimizer checkpoint, by parameter name.

    Each rank file holds, per parameter group, its slice of the flat fp32 group
    (``single_partition_of_fp32_groups``) and where each parameter's fragment lies in that slice
    (``param_slice_mappings``: name -> (numel, start)). Rank r's slice starts at r x slice length in the
    flat group, so a parameter is its fragments laid end to end at those offsets, in flat order."""
    model = torch.load(next(folder.glob("mp_rank_*_model_states.pt")), map_location="cpu", weights_only=False)
    shapes = {k: v for group in model["param_shapes"] for k, v in group.items()}
    pieces: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for f in files:
        sd = torch.load(f, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        for flat, mapping in zip(sd["single_partition_of_fp32_groups"], sd["param_slice_mappings"]):
            base = _bf16_rank(f) * flat.numel()
            for name, frag in mapping.items():
                pieces.setdefault(name, []).append((base + frag.start, flat.narrow(0, frag.start, frag.numel)))
    state = dict(model["module"])   # buffers and anything the optimizer does not hold
    for name, parts in pieces.items():
        full = torch.cat([t for _, t in sorted(parts, key=lambda x: x[0])])
        if full.numel() != shapes[name].numel():
            raise CheckpointError(f"{folder}: {name} has {full.numel()} of {shapes[name].numel()} values in the "
                                  "optimizer files (a rank's file is missing?)")
        state[name] = full.view(shapes[name]).clone()
    for alias, src in (model.get("shared_params") or {}).items():
        state[alias] = state[src]
    return state


def consolidated_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """fp32 weights of a checkpoint, whatever ZeRO stage wrote it (CPU only, no process group)."""
    meta = read_meta(folder)
    stage = int(meta.get("zero_stage", 0))
    bf16_files = _bf16_optimizer_files(folder) if stage == 1 else []
    if bf16_files:
        state = _bf16_optimizer_state_dict(folder, bf16_files)
    elif stage >= 1:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        state = get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    elif (folder / MASTER_WEIGHTS).is_file():
        state = torch.load(folder / MASTER_WEIGHTS, map_location="cpu", weights_only=True)
        module = torch.load(next(folder.glob("mp_rank_*_model_states.pt")), map_location="cpu",
                            weights_only=False)["module"]
        state = {**module, **state}   # buffers (and anything not trained) from the module
    else:
        files = sorted(folder.glob("mp_rank_*_model_states.pt"))
        if not files:
            raise CheckpointError(f"{folder}: no mp_rank_*_model_states.pt; not a DeepSpeed checkpoint")
        state = torch.load(files[0], map_location="cpu", weights_only=False)["module"]
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def export_hf(folder: Path, out_dir: str | Path) -> Path:
    """Write an HF directory from a checkpoint folder (config and tokenizer come from the folder)."""
    from transformers import BertConfig

    from pretrain.hf_io import save_hf
    meta = read_meta(folder)
    config = BertConfig.from_dict(meta["model_config"])
    state = consolidated_state_dict(folder)
    tok = folder if has_tokenizer(folder) else None
    try:
        return save_hf(state, config, out_dir, tokenizer_dir=tok)
    except Exception as e:
        if not is_write_failure(e):
            raise
        raise write_error(out_dir, e, "the Hugging Face export", f"; the checkpoint {folder} is complete: rerun "
                          f"`linkbert-export {folder} --out DIR` once there is room") from None

"""The training engine of one rank: which device it drives, its process group, its optimizer and the
DeepSpeed engine built from them, plus a record of what was selected and why.

Device choice follows the launcher, not a guess: the rank's local rank comes from `dist_env.discover()`
(torchrun's LOCAL_RANK, SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID), and a process that
sees exactly one GPU (SLURM `--gpus-per-task=1`, or any one-entry CUDA_VISIBLE_DEVICES) drives that one.
DeepSpeed is told the same index (`device_rank`), so model, batches and collectives share one device.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
from types import SimpleNamespace

import torch

from pretrain import dist_env
from pretrain.config import ConfigError, RunConfig
from pretrain.optim import build_optimizer, build_scheduler, guard_nonfinite

log = logging.getLogger("linkbert-pretrain")


def pick_device(env: dist_env.DistEnv, environ: dict | None = None) -> torch.device:
    """The device of this rank. CPU without CUDA; one visible GPU -> cuda:0; else cuda:<local rank>."""
    environ = os.environ if environ is None else environ
    if not torch.cuda.is_available():
        return torch.device("cpu")
    n = torch.cuda.device_count()
    if n == 0:
        return torch.device("cpu")
    if n == 1:
        # one GPU per task (srun --gpus-per-task=1, or a launcher's one-entry CUDA_VISIBLE_DEVICES): whatever
        # the local rank, it is this one. Several ranks on a node that simply has one GPU would share it.
        if env.local_world_size > 1 and not environ.get("CUDA_VISIBLE_DEVICES"):
            raise ConfigError(f"{env.local_world_size} processes per node share the node's one GPU; start one "
                              "per GPU, or bind one GPU per task (srun --gpus-per-task=1)")
        return torch.device("cuda", 0)
    if env.local_rank >= n:
        vis = environ.get("CUDA_VISIBLE_DEVICES")
        raise ConfigError(f"rank {env.rank} has local rank {env.local_rank} (from {env.launcher}) but sees only {n} "
                          f"GPUs (CUDA_VISIBLE_DEVICES={vis if vis is not None else 'unset'}): start at most {n} "
                          "processes per node, or bind one GPU per task (srun --gpus-per-task=1)")
    if env.local_world_size > n:
        raise ConfigError(f"{env.local_world_size} processes per node share {n} visible GPUs; start at most {n} "
                          "per node (two ranks on one GPU would each take its memory and halve its speed)")
    return torch.device("cuda", env.local_rank)


def setup_distributed() -> tuple[dist_env.DistEnv, torch.device]:
    """Discover ranks, pick this rank's device, then join the process group (NCCL on GPUs, gloo on CPU)."""
    import deepspeed

    env = dist_env.discover()
    if env.world_size == 1 and "MASTER_PORT" not in os.environ:
        # alone: a free port, not the default 29500 that a neighbour's job may hold (we would join its store)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            env = dataclasses.replace(env, master_addr="127.0.0.1", master_port=s.getsockname()[1])
    device = pick_device(env)
    # mpirun/srun-started ranks: torch.distributed and DeepSpeed read these; DeepSpeed's LOCAL_RANK is the
    # device index this rank drives (0 under one GPU per task), not the launcher's local rank
    env.export(device_index=device.index if device.type == "cuda" else None)
    # A wrong or unreachable master is one clear line after LINKBERT_RENDEZVOUS_TIMEOUT seconds, not torch's
    # silent 30-minute store retry. (Collectives keep DeepSpeed's long timeout: ZeRO-3 saves can be slow.)
    dist_env.wait_for_master(env)
    if device.type == "cuda":
        torch.cuda.set_device(device)   # before NCCL starts: its communicator binds to the current device
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo",
                               auto_mpi_discovery=False, verbose=False)
    return env, device


def set_matmul_precision(cfg: RunConfig, device: torch.device) -> bool:
    """fp32 on GPUs runs its matmuls on TF32 tensor cores (as the MFU peak assumes) unless train.tf32=false."""
    use = device.type == "cuda" and cfg.train.tf32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = use
        torch.backends.cudnn.allow_tf32 = use
    return use


def build_engine(cfg: RunConfig, model: torch.nn.Module, ds_config: dict, client_opt: bool,
                 device: torch.device):
    """`deepspeed.initialize` with our optimizer and schedule. Returns (engine, optimizer, scheduler, desc)."""
    import deepspeed

    t = cfg.train
    offload = bool(ds_config.get("zero_optimization", {}).get("offload_optimizer"))
    optimizer, desc = None, "DeepSpeed " + ds_config.get("optimizer", {}).get("type", "")
    if client_opt:
        optimizer, desc = build_optimizer(cfg, model, device.type, offload)
        if t.zero_stage == 0 and t.precision == "fp32":
            guard_nonfinite(optimizer)
    # DeepSpeed would take the device from LOCAL_RANK; with one GPU per task that index does not exist.
    args = SimpleNamespace(device_rank=device.index) if device.type == "cuda" else None
    # The schedule as a callable: DeepSpeed applies it to the plain optimizer (ours, or the one its JSON
    # names), never to its ZeRO/bf16 wrapper, which is no torch Optimizer; the wrappers read that
    # optimizer's param_groups, so the lr set there is the lr used.
    engine, optimizer, _, scheduler = deepspeed.initialize(
        args=args, model=model, optimizer=optimizer, lr_scheduler=lambda opt: build_scheduler(cfg, opt),
        config=ds_config, model_parameters=None if client_opt else model.parameters())
    if engine.device != device:
        raise RuntimeError(f"DeepSpeed placed the model on {engine.device}, this rank drives {device}")
    return engine, optimizer, scheduler, desc


def selection(cfg: RunConfig, device: torch.device, backend: str, optimizer_desc: str, tf32: bool,
              model=None) -> dict:
    """What runs, for the start-up log and run.json: device, collectives, precision, optimizer and the
    model's kernels (attention, LayerNorm, fused ops) with the reason for each."""
    sel = {"device": str(device), "backend": backend, "precision": cfg.train.precision,
           "zero_stage": cfg.train.zero_stage, "optimizer": optimizer_desc, "tf32": tf32}
    if device.type == "cuda":
        sel["gpu"] = torch.cuda.get_device_name(device)
    if model is not None:
        from pretrain.modeling import selection as model_selection
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.train.precision]
        sel["model"] = model_selection(model, device, dtype)
    return sel

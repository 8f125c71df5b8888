"""One GPU per task on a faked 8-GPU node: every task (local rank 0..7, under SLURM, Open MPI and MPICH
variables) sees one GPU, and DeepSpeed's own code - the ``device_id`` its ``init_distributed`` hands
``init_process_group`` and the device ZeRO-3's ``zero.Init`` sets - reads the device the engine chose
(cuda:0), never cuda:<local rank>, which would not exist in that task ("invalid device ordinal")."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from pretrain import dist_env, engine


def _task_env(launcher: str, local: int) -> dict:
    rank = 8 + local   # the second node of two, 8 tasks each
    return {
        "slurm": {"SLURM_PROCID": str(rank), "SLURM_STEP_ID": "0", "SLURM_LOCALID": str(local),
                  "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "16", "SLURM_NTASKS_PER_NODE": "8",
                  "SLURM_JOB_NODELIST": "gpu[001-002]", "SLURM_STEP_NODELIST": "gpu[001-002]"},
        "openmpi": {"OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_LOCAL_RANK": str(local),
                    "OMPI_COMM_WORLD_SIZE": "16", "OMPI_COMM_WORLD_LOCAL_SIZE": "8"},
        "mpich": {"PMI_RANK": str(rank), "PMI_SIZE": "16", "MPI_LOCALRANKID": str(local), "MPI_LOCALNRANKS": "8"},
    }[launcher]


class Stop(Exception):
    """Raised by a recording patch once DeepSpeed has shown which device it would use."""


class FakeCudaAccelerator:
    """DeepSpeed's accelerator as it is on a CUDA node, recording what it is asked for."""

    def __init__(self):
        self.names, self.set = [], []

    def device_name(self, index=None):
        if index is None:
            return "cuda"
        self.names.append(index)
        return f"cuda:{index}"

    def device(self, index=None):
        return torch.device("cuda", int(index or 0))

    def set_device(self, device):
        self.set.append(str(device))
        raise Stop

    def __getattr__(self, name):   # everything else as DeepSpeed's real (CPU) accelerator has it
        from deepspeed.accelerator import get_accelerator
        return getattr(get_accelerator(), name)


def _bind(monkeypatch, launcher: str, local: int) -> None:
    """A task of `srun --gpus-per-task=1` (or mpirun with a per-rank CUDA_VISIBLE_DEVICES) on an 8-GPU node."""
    for k in list(os.environ):
        if k.startswith(("SLURM_", "OMPI_", "PMI_", "MPI_LOCAL")) or k in (
                "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            monkeypatch.delenv(k)
    for k, v in _task_env(launcher, local).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", str(local))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29999")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def _one_task(m, launcher: str, local: int) -> None:
    import importlib
    ds_comm = importlib.import_module("deepspeed.comm.comm")
    ds_torch = importlib.import_module("deepspeed.comm.torch")   # `import ... as` would give the torch package
    pp = importlib.import_module("deepspeed.runtime.zero.partition_parameters")
    _bind(m, launcher, local)
    set_devices, inits = [], []
    m.setattr(torch.cuda, "set_device", lambda d: set_devices.append(torch.device(d)))
    m.setattr(dist_env, "wait_for_master", lambda env: None)
    acc = FakeCudaAccelerator()
    m.setattr(ds_torch, "get_accelerator", lambda: acc)

    def record_init(backend, timeout=None, init_method=None, rank=-1, world_size=-1, device_id=None):
        inits.append((backend, dict(rank=os.environ["RANK"], world_size=os.environ["WORLD_SIZE"],
                                    device_id=device_id)))   # env:// reads rank and size there
        raise Stop
    m.setattr(ds_torch, "build_shm_op", lambda: None)   # a CPU-only op; nothing to build on a GPU node
    m.setattr(torch.distributed, "init_process_group", record_init)
    m.setattr(torch.distributed, "is_initialized", lambda: False)
    m.setattr(ds_comm, "cdb", None)
    with pytest.raises(Stop):
        engine.setup_distributed()   # the engine's choice, then DeepSpeed's real init_distributed
    assert set_devices == [torch.device("cuda", 0)], (launcher, local)
    assert len(inits) == 1 and inits[0][0] == "nccl"
    assert inits[0][1]["device_id"] == torch.device("cuda", 0), (launcher, local, inits)
    assert inits[0][1]["rank"] == str(8 + local) and inits[0][1]["world_size"] == "16"
    # ZeRO-3: zero.Init picks and sets its device from LOCAL_RANK
    zacc = FakeCudaAccelerator()
    m.setattr(pp, "get_accelerator", lambda: zacc)
    m.setattr(pp, "dist", SimpleNamespace(is_initialized=lambda: True, get_world_group=lambda: None,
                                          get_rank=lambda group=None: 8 + local,
                                          get_world_size=lambda group=None: 16))
    with pytest.raises(Stop):
        pp.Init(module=None, config_dict_or_path=None, enabled=True)
    assert zacc.set == ["cuda:0"], (launcher, local, zacc.names)
    # our own code still knows the launcher's local rank (data order, node rank)
    assert dist_env.discover(_task_env(launcher, local)).local_rank == local


@pytest.mark.parametrize("launcher", ["slurm", "openmpi", "mpich"])
def test_deepspeed_reads_the_engines_device_under_one_gpu_per_task(launcher, monkeypatch):
    for local in range(8):
        with monkeypatch.context() as m:
            _one_task(m, launcher, local)


def test_without_binding_deepspeed_reads_the_local_rank(monkeypatch):
    """Eight visible GPUs, one process each: DeepSpeed's index is the local rank, as before."""
    for local in (0, 5):
        env = dist_env.DistEnv(8 + local, local, 16, 8, "127.0.0.1", 29999, "slurm")
        out = {}
        env.export(out, announce=False, device_index=local)
        assert out["LOCAL_RANK"] == str(local)
        out = {}
        env.export(out, announce=False, device_index=0)   # one GPU per task
        assert out["LOCAL_RANK"] == "0" and out["RANK"] == str(8 + local)
        out = {}
        env.export(out, announce=False)   # CPU: the launcher's local rank
        assert out["LOCAL_RANK"] == str(local)

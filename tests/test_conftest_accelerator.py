"""The suite picks DeepSpeed's accelerator from CUDA itself, not from /proc/driver/nvidia/gpus (absent in
some GPU containers) nor from CUDA_VISIBLE_DEVICES (set on CPU machines too)."""
import importlib.util

import torch

from tests.conftest import ROOT


def _load_conftest(monkeypatch, cuda: bool) -> dict:
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    if cuda:   # a container that exposes every GPU, with no /proc/driver/nvidia/gpus and no CUDA_VISIBLE_DEVICES
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:      # a CPU machine whose job script exports CUDA_VISIBLE_DEVICES anyway
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
    spec = importlib.util.spec_from_file_location("conftest_copy", ROOT / "tests" / "conftest.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    import os
    return dict(os.environ)


def test_gpu_node_keeps_cuda_even_without_proc_entry(monkeypatch):
    assert "DS_ACCELERATOR" not in _load_conftest(monkeypatch, cuda=True)


def test_cpu_machine_gets_the_cpu_accelerator(monkeypatch):
    assert _load_conftest(monkeypatch, cuda=False)["DS_ACCELERATOR"] == "cpu"

"""Tests marked ``gpu`` need a CUDA device; elsewhere they are skipped with one line saying so."""
import pytest


def pytest_collection_modifyitems(config, items):
    gpu_items = [i for i in items if i.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device: run `make gpu-check` on a GPU machine")
    for item in gpu_items:
        item.add_marker(skip)

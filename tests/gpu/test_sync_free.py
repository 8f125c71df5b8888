"""On a GPU: the step loop makes no host sync of its own (CUDA's sync debug mode, warnings attributed to
our files), and the metrics read is the only one per logged step; a deliberate `.item()` in the step is
caught, so the capture is shown to work there. The capture itself (tests/gpu/sync_watch.py) is also run
on CPU against an emulated sync-debug mode. The CPU twin of this test counts host reads in
tests/pretrain/test_engine_device.py."""
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.procs import ROOT, child_env, run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_watch import watch  # noqa: E402

SCRIPT = r'''
import json, sys, torch
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[1]) / "tests" / "gpu"))
from sync_watch import watch
from pretrain import trainer
from pretrain.cli import config_from_args
fault = sys.argv[3] == "fault"
ours = (str(Path(sys.argv[1]) / "pretrain"),) + ((__file__,) if fault else ())
found = {"step": [], "read": [], "step_calls": 0}
inner = trainer.train_step
def counted_step(*a, **k):
    found["step_calls"] += 1
    out = inner(*a, **k)
    if fault:   # the deliberate host sync the capture must report, once per call
        torch.ones(1, device=torch.device("cuda", torch.cuda.current_device())).sum().item()
    return out
trainer.train_step = watch(found["step"], counted_step, ours)
trainer.Loop.read_stats = watch(found["read"], trainer.Loop.read_stats, ours)
cfg, _ = config_from_args(sys.argv[4:])
trainer.train(cfg)
Path(sys.argv[2]).write_text(json.dumps(found))
'''


def _run_watched(tmp_path, precision: str, mode: str) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "pretrain"))
    from engine_helpers import synthetic_dataset
    data = synthetic_dataset(tmp_path / "ds", n=200, max_seq_len=32)
    script, found = tmp_path / "watch.py", tmp_path / "found.json"
    script.write_text(SCRIPT)
    run([sys.executable, str(script), str(ROOT), str(found), mode, "--data", str(data),
         "--output", str(tmp_path / "run"), "--model", "tiny", "--micro-batch-size", "8", "--grad-accum", "2",
         "--max-steps", "6", "--zero-stage", "2", "--precision", precision, "--save-every", "0",
         "--metrics.log_every=3", "--metrics.progress=false", "--metrics.tensorboard=false",
         "--checkpoint.export_final=false", "--data.held_out=16"], timeout=600, env=child_env())
    return json.loads(found.read_text())


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_no_sync_in_the_step_on_cuda(precision, tmp_path):
    got = _run_watched(tmp_path, precision, "clean")
    assert got["step_calls"] > 0
    assert got["step"] == [], got["step"][:10]      # our step code never waits for the GPU
    assert len(got["read"]) == 2, got["read"]        # the one read per logged step (steps 3 and 6)


@pytest.mark.gpu
def test_deliberate_item_in_the_step_is_caught_on_cuda(tmp_path):
    got = _run_watched(tmp_path, "bf16", "fault")
    assert got["step_calls"] > 0
    assert len(got["step"]) == got["step_calls"], got       # one report per deliberate .item()
    assert all(s.startswith(str(tmp_path / "watch.py") + ":") for s in got["step"]), got["step"]
    assert len(got["read"]) == 2, got["read"]


@pytest.fixture
def emulated_sync_debug(monkeypatch):
    """CUDA's sync debug mode as seen from Python, on CPU: in "warn" mode `Tensor.item` warns
    "called a synchronizing CUDA operation" from its caller's line, as the CUDA runtime hook does."""
    modes = []
    real_item = torch.Tensor.item

    def item(self):
        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=2)
        return real_item(self)

    def set_mode(mode):
        modes.append(mode)
        monkeypatch.setattr(torch.Tensor, "item", item if mode == "warn" else real_item)

    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", set_mode)
    return modes


def _step_with_item(x):
    y = x * 2
    return y.sum().item()   # line co_firstlineno + 2


def _step_without_sync(x):
    return x * 2


def test_capture_reports_a_deliberate_item_on_cpu(emulated_sync_debug):
    ours = (__file__,)
    found = []
    assert watch(found, _step_with_item, ours)(torch.ones(3)) == 6.0
    assert found == [f"{__file__}:{_step_with_item.__code__.co_firstlineno + 2}"]
    assert emulated_sync_debug == ["warn", "default"]          # the mode is put back after the call
    found = []
    watch(found, _step_without_sync, ours)(torch.ones(3))
    assert found == []
    watch(found, _step_with_item, ("/not/our/package",))(torch.ones(3))
    assert found == []                                          # syncs in other files are not ours
    with pytest.raises(ZeroDivisionError):
        watch(found, lambda: 1 / 0, ours)()
    assert emulated_sync_debug[-1] == "default"                 # ... also when the step raises

"""On a GPU: the step loop makes no host sync of its own (CUDA's sync debug mode, warnings attributed to
our files), and the metrics read is the only one per logged step. The CPU twin of this test counts host
reads in tests/pretrain/test_engine_device.py."""
import json
import sys

import pytest

from tests.procs import ROOT, child_env, run

pytestmark = pytest.mark.gpu

SCRIPT = r'''
import json, sys, warnings, torch
from pathlib import Path
PKG = str(Path(sys.argv[1]) / "pretrain")
from pretrain import trainer
from pretrain.cli import config_from_args
found = {"step": [], "read": []}
def watch(key, fn):
    def g(*a, **k):
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter("always")
            try:
                return fn(*a, **k)
            finally:
                torch.cuda.set_sync_debug_mode("default")
                found[key] += [f"{w.filename}:{w.lineno}" for w in ws
                               if "synchroniz" in str(w.message) and w.filename.startswith(PKG)]
    return g
trainer.train_step = watch("step", trainer.train_step)
trainer.Loop.read_stats = watch("read", trainer.Loop.read_stats)
cfg, _ = config_from_args(sys.argv[3:])
trainer.train(cfg)
Path(sys.argv[2]).write_text(json.dumps(found))
'''


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_no_sync_in_the_step_on_cuda(precision, tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "pretrain"))
    from engine_helpers import synthetic_dataset
    data = synthetic_dataset(tmp_path / "ds", n=200, max_seq_len=32)
    script, found = tmp_path / "watch.py", tmp_path / "found.json"
    script.write_text(SCRIPT)
    run([sys.executable, str(script), str(ROOT), str(found), "--data", str(data), "--output", str(tmp_path / "run"),
         "--model", "tiny", "--micro-batch-size", "8", "--grad-accum", "2", "--max-steps", "6", "--zero-stage", "2",
         "--precision", precision, "--save-every", "0", "--metrics.log_every=3", "--metrics.progress=false",
         "--metrics.tensorboard=false", "--checkpoint.export_final=false", "--data.held_out=16"],
        timeout=600, env=child_env())
    got = json.loads(found.read_text())
    assert got["step"] == [], got["step"][:10]      # our step code never waits for the GPU
    assert len(got["read"]) <= 2, got["read"]        # the one read per logged step (steps 3 and 6)

"""`--deepspeed JSON` goes through transformers' DeepSpeed integration (one CPU rank, ZeRO stage 0 and 2).

In-process: every DeepSpeedEngine built during the run is recorded, so the test sees which ZeRO stage
actually trained (and that the engine took the optimizer steps), not only that a run finished.
"""
import json
import os

import pytest

from tests import procs
from tests.finetune.helpers import FIX, finetune
from tests.needs import need_module

need_module("deepspeed")
pytestmark = pytest.mark.slow


@pytest.fixture
def engines(monkeypatch):
    """The DeepSpeedEngine objects built while the test runs (one rank of a one-process 'launch')."""
    from deepspeed.runtime.engine import DeepSpeedEngine

    environ = dict(os.environ)   # accelerate sets ACCELERATE_USE_DEEPSPEED=true and never unsets it
    made = []
    init = DeepSpeedEngine.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(DeepSpeedEngine, "__init__", recording_init)
    # DeepSpeed keeps its process groups in module globals; put back the values it had before the run,
    # or the next in-process engine would reuse groups of a destroyed process group
    from deepspeed.comm import comm as ds_comm
    from deepspeed.utils import groups as ds_groups

    for module in (ds_groups, ds_comm):
        for name, value in list(vars(module).items()):
            state = name.lstrip("_").isupper() and isinstance(value, (dict, type(None)))
            if state or name in ("mpu", "cdb") or name.endswith("_backend"):
                monkeypatch.setattr(module, name, dict(value) if isinstance(value, dict) else value)
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(procs.free_port()), "RANK": "0",
                 "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "DS_ACCELERATOR": "cpu"}.items():
        monkeypatch.setenv(k, v)
    yield made
    made.clear()
    # leave no DeepSpeed state behind for the in-process fine-tuning tests that follow
    import torch.distributed as dist
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    for k in set(os.environ) - set(environ):
        del os.environ[k]
    os.environ.update(environ)
    unset_hf_deepspeed_config()
    AcceleratorState._reset_state(reset_partial_state=True)
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.parametrize("stage", [0, 2])
def test_seqcls_under_deepspeed(tmp_path, minilm_dir, stage, engines):
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    cfg = tmp_path / "ds.json"
    # "auto" values are filled from the Trainer flags by transformers; no DeepSpeed optimizer block, so
    # the Trainer's torch AdamW is used (DeepSpeed's CPU Adam would compile a C++ op first)
    cfg.write_text(json.dumps({"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
                               "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
                               "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True,
                               "zero_force_ds_cpu_optimizer": False}))
    out = finetune("seqcls", minilm_dir, tmp_path / "run", train=str(FIX / "seqcls_train.jsonl"),
                   validation=str(FIX / "seqcls_validation.jsonl"), deepspeed=str(cfg), max_train_samples=32,
                   max_eval_samples=16, max_seq_length=32, per_device_train_batch_size=8,
                   gradient_accumulation_steps=2)
    assert out["info"]["train"]["steps"] == 2   # 32 rows / (8 x 2)
    assert "accuracy" in out["metrics"]["validation"]
    # the run trained through exactly one DeepSpeed engine, at the stage asked, which took both steps
    assert len(engines) == 1, engines
    engine = engines[0]
    assert engine.zero_optimization_stage() == stage
    assert isinstance(engine.optimizer, DeepSpeedZeroOptimizer) == (stage == 2), type(engine.optimizer)
    assert engine.global_steps == 2

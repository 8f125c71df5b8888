"""`--deepspeed JSON` goes through transformers' DeepSpeed integration (one CPU rank, ZeRO stage 0/2)."""
import json

import pytest

from tests import procs
from tests.finetune.helpers import FIX
from tests.needs import need_module

need_module("deepspeed")
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stage", [2])
def test_seqcls_under_deepspeed(tmp_path, minilm_dir, stage):
    cfg = tmp_path / "ds.json"
    # "auto" values are filled from the Trainer flags by transformers; no DeepSpeed optimizer block, so
    # the Trainer's torch AdamW is used (DeepSpeed's CPU Adam would compile a C++ op first)
    cfg.write_text(json.dumps({"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
                               "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
                               "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True,
                               "zero_force_ds_cpu_optimizer": False}))
    out = tmp_path / "run"
    env = procs.child_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=procs.free_port(), RANK=0, LOCAL_RANK=0,
                          WORLD_SIZE=1, LOCAL_WORLD_SIZE=1, OMP_NUM_THREADS=2, DS_ACCELERATOR="cpu")
    cp = procs.run([str(procs.VENV_BIN / "linkbert-finetune"), "--task", "seqcls", "--model", str(minilm_dir),
                    "--train", str(FIX / "seqcls_train.jsonl"), "--validation", str(FIX / "seqcls_validation.jsonl"),
                    "--output", str(out), "--deepspeed", str(cfg), "--max_train_samples", "32",
                    "--max_eval_samples", "16", "--max_seq_length", "32", "--per_device_train_batch_size", "8",
                    "--gradient_accumulation_steps", "2", "--num_train_epochs", "1", "--no_save_model",
                    "--disable_tqdm"], timeout=600, env=env)
    info = json.loads((out / "run_info.json").read_text())
    assert info["train"]["steps"] == 2   # 32 rows / (8 x 2)
    assert "accuracy" in json.loads((out / "metrics.json").read_text())["validation"]
    assert "DeepSpeed" in cp.stdout or "deepspeed" in cp.stdout.lower()

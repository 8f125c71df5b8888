"""Fine-tuning under a 2-process launch (torchrun, gloo on CPU): the global batch splits across ranks, the
evaluation gathers every example exactly once (an odd count exercises the sampler's padding), and only
rank 0 writes the outputs."""
import json
import sys

import pytest

from tests import procs
from tests.finetune.helpers import FIX, rows

pytestmark = pytest.mark.slow


def test_seqcls_on_two_processes(tmp_path, minilm_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(procs.free_port()), "-m", "finetune.cli",
           "--task", "seqcls", "--model", str(minilm_dir), "--train", str(FIX / "seqcls_train.jsonl"),
           "--validation", str(FIX / "seqcls_validation.jsonl"), "--output", str(out),
           "--max_train_samples", "64", "--max_eval_samples", "15", "--max_seq_length", "32",
           "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "4", "--num_train_epochs", "1",
           "--learning_rate", "1e-4", "--no_save_model", "--disable_tqdm"]
    cp = procs.run(cmd, timeout=600, env=procs.child_env(OMP_NUM_THREADS=1))
    info = json.loads((out / "run_info.json").read_text())
    assert info["train"]["steps"] == 4, info["train"]   # 64 rows / (8 per rank x 2 ranks)
    preds = json.loads((out / "predictions_validation.json").read_text())
    want = [r["id"] for r in rows("seqcls_validation.jsonl")[:15]]
    assert sorted(preds) == sorted(want)   # each of the 15 once, none of the sampler's padding
    gold = {r["id"]: r["label"] for r in rows("seqcls_validation.jsonl")[:15]}
    acc = sum(preds[i] == gold[i] for i in want) / len(want)
    assert json.loads((out / "metrics.json").read_text())["validation"]["accuracy"] == pytest.approx(acc)
    # procs.run merges stderr into stdout: rank 0 reports the validation split's counts once, rank 1 never
    assert cp.stdout.count("linkbert-finetune: validation:") == 1, cp.stdout[-3000:]

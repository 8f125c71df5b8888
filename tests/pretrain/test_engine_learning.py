"""Does it learn? Held-out MLM loss falls on the bundled real corpus; the relation head learns a relation
that the data makes learnable (labels reach the right pairs through loader, ranks and eval)."""
import numpy as np
import pytest
from engine_helpers import build_jargon, read_jsonl, run_ranks, synthetic_dataset

pytestmark = pytest.mark.slow

COMMON = ["--model", "tiny", "--micro-batch-size", "8", "--seed", "1", "--save-every", "0",
          "--checkpoint.export_final=false", "--metrics.progress=false", "--metrics.tensorboard=false",
          "--schedule.warmup_steps=5"]


def test_mlm_loss_falls_on_the_bundled_corpus(minilm_dir, tmp_path):
    data = build_jargon(minilm_dir, tmp_path / "d64", max_seq_len=64)
    out = tmp_path / "run"
    run_ranks(["--data", str(data), "--output", str(out), "--max-steps", "40", "--lr", "2e-3",
               "--metrics.eval_every=10", "--metrics.eval_batches=8", "--data.held_out=128", *COMMON])
    m = read_jsonl(out / "metrics.jsonl")
    evals = [r["eval_mlm_loss"] for r in m if "eval_mlm_loss" in r]
    import json
    final = json.loads((out / "eval.json").read_text())
    assert len(evals) == 3
    assert final["eval_mlm_loss"] < evals[0] - 0.3 < np.log(30522), (evals, final)
    assert np.mean([r["mlm_loss"] for r in m[-5:]]) < np.mean([r["mlm_loss"] for r in m[:5]]) - 1.0


def test_relation_head_learns_a_learnable_relation(tmp_path):
    data = synthetic_dataset(tmp_path / "cue", n=600, max_seq_len=16, vocab=60, relation_cue=True)
    out = tmp_path / "run"
    run_ranks(["--data", str(data), "--output", str(out), "--max-steps", "150", "--lr", "3e-3",
               "--data.held_out=96", "--metrics.eval_batches=8", *COMMON])
    import json
    final = json.loads((out / "eval.json").read_text())
    assert final["eval_pairs"] == 96
    assert final["eval_relation_acc"] > 0.9, final   # chance is 1/3

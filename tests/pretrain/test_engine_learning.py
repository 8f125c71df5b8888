"""Does it learn? On the bundled real corpus the held-out MLM loss falls and the held-out relation accuracy
ends well above chance; the relation head learns a relation that the data makes learnable (labels reach
the right pairs through loader, ranks and eval)."""
import numpy as np
import pytest
from engine_helpers import CORPUS, build_jargon, read_jsonl, run_ranks, synthetic_dataset

pytestmark = pytest.mark.slow

COMMON = ["--model", "tiny", "--micro-batch-size", "8", "--seed", "1", "--save-every", "0",
          "--checkpoint.export_final=false", "--metrics.progress=false", "--metrics.tensorboard=false",
          "--schedule.warmup_steps=5"]


HELD_OUT = 1024   # pairs; 2 ranks x micro-batch 16 x eval_batches


def test_on_the_bundled_corpus_mlm_falls_and_relation_ends_well_above_chance(tmp_path):
    """The paper's objective on real linked text: a LinkBERT-tiny from scratch (its own 4k WordPiece
    vocabulary trained on the corpus, as BioLinkBERT did) on the Jargon File, 2 ranks, ~800 steps."""
    from scipy.stats import binomtest

    from data_prep.cli import main as prep_main
    tok = tmp_path / "tok"
    assert prep_main(["train-tokenizer", "--corpus", str(CORPUS), "--out", str(tok), "--vocab-size", "4096",
                      "--lowercase"]) == 0
    data = build_jargon(tok, tmp_path / "d128", max_seq_len=128)
    out = tmp_path / "run"
    run_ranks(["--data", str(data), "--output", str(out), "--model", "tiny", "--max-steps", "800",
               "--micro-batch-size", "16", "--lr", "2e-3", "--seed", "0", "--schedule.warmup_ratio=0.1",
               "--save-every", "0", "--checkpoint.export_final=false", "--metrics.progress=false",
               "--metrics.tensorboard=false", "--metrics.eval_every=200", f"--metrics.eval_batches={HELD_OUT // 32}",
               f"--data.held_out={HELD_OUT}"], timeout=600)
    import json
    m = read_jsonl(out / "metrics.jsonl")
    final = json.loads((out / "eval.json").read_text())
    evals = [r for r in m if "eval_mlm_loss" in r]
    assert final["eval_pairs"] == HELD_OUT and len(evals) == 3, (final, evals)
    # MLM: held-out loss falls from the first eval on, and the training loss by far more than noise
    assert final["eval_mlm_loss"] < evals[0]["eval_mlm_loss"] - 0.1 < np.log(4096), (evals, final)
    assert np.mean([r["mlm_loss"] for r in m[-50:]]) < np.mean([r["mlm_loss"] for r in m[:50]]) - 1.0
    # relation: 1024 held-out pairs, chance 1/3; one-sided binomial test and an effect size
    acc = final["eval_relation_acc"]
    print("held-out:", {k: round(v, 4) if isinstance(v, float) else v for k, v in final.items()})
    p = binomtest(round(acc * HELD_OUT), HELD_OUT, 1 / 3, alternative="greater").pvalue
    # Measured 0.395-0.424 (sentence-aligned pairs leave few surface cues). Two sources of spread: the
    # 4k vocabulary differs from run to run (the tokenizers trainer breaks ties in hash-map order,
    # huggingface/tokenizers#1794), and the estimate itself (sd 0.015 at 1024 pairs, 0.022 at the 512
    # this test used before, where one run fell to 0.3945). 0.38 is >3 sd below the mean; a head that
    # learned nothing scores 1/3 and passes p < 1e-3 (>= 0.379 here) one time in a thousand.
    assert acc >= 0.38 and p < 1e-3, final


def test_relation_head_learns_a_learnable_relation(tmp_path):
    data = synthetic_dataset(tmp_path / "cue", n=600, max_seq_len=16, vocab=60, relation_cue=True)
    out = tmp_path / "run"
    run_ranks(["--data", str(data), "--output", str(out), "--max-steps", "150", "--lr", "3e-3",
               "--data.held_out=96", "--metrics.eval_batches=8", *COMMON])
    import json
    final = json.loads((out / "eval.json").read_text())
    assert final["eval_pairs"] == 96
    assert final["eval_relation_acc"] > 0.9, final   # chance is 1/3

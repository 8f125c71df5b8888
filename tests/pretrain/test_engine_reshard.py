"""Resume on a different number of ranks (a requeued job that got fewer or more nodes): the ZeRO-partitioned
optimizer state is re-split through DeepSpeed's universal checkpoint, and the loss trajectory equals the
uninterrupted run's."""
import shutil

import numpy as np
import pytest
from engine_helpers import losses, run_ranks, synthetic_dataset

pytestmark = pytest.mark.slow

ARGS = ["--model", "tiny", "--model.dropout=0", "--micro-batch-size", "4", "--lr", "1e-3", "--seed", "5",
        "--max-steps", "8", "--save-every", "4", "--checkpoint.keep_last=10", "--checkpoint.export_final=false",
        "--metrics.progress=false", "--metrics.tensorboard=false", "--data.held_out=8", "--metrics.eval_batches=1"]


def accum(world: int) -> list[str]:   # global batch 16 pairs whatever the world size
    return ["--grad-accum", str(4 // world)]


@pytest.mark.parametrize("stage,before,after", [(2, 2, 1), (3, 1, 2)])
def test_resume_on_another_world_size_is_exact(tmp_path, stage, before, after):
    data = synthetic_dataset(tmp_path / "syn", n=200, max_seq_len=16)
    args = ["--data", str(data), "--zero-stage", str(stage), *ARGS]
    ref = tmp_path / "ref"
    run_ranks([*args, "--output", str(ref), *accum(before)], world=before)
    # the run as it stood when it was stopped after its step-4 checkpoint
    cut = tmp_path / "cut"
    shutil.copytree(ref, cut)
    shutil.rmtree(cut / "checkpoints" / "step8")
    _, log = run_ranks([*args, "--output", str(cut), *accum(after)], world=after)
    assert "re-partitioning" in log and f"resuming on {after} ranks from a checkpoint written by {before}" in log
    got, want = losses(cut), losses(ref)
    assert len(got) == len(want) == 8
    # step 5 checks the weights, steps 6-8 the optimizer moments, step counts and per-group weight decay
    assert np.allclose(got, want, rtol=0, atol=2e-6), list(zip(got, want))
    assert not (cut / "checkpoints" / "universal").exists()   # the converted copy is removed after loading


def test_stage_change_and_failed_conversion_are_one_line_on_every_rank(tmp_path):
    data = synthetic_dataset(tmp_path / "syn", n=100, max_seq_len=16)
    out = tmp_path / "run"
    args = ["--data", str(data), "--output", str(out), *ARGS]
    run_ranks([*args, "--zero-stage", "2", "--max-steps", "4", *accum(1)], world=1)
    codes, log = run_ranks([*args, "--zero-stage", "3", *accum(2)], world=2, expect=None)
    assert codes == [3, 3] and log.count("written at ZeRO-2, this run is ZeRO-3; resume with --zero-stage 2") == 2
    args += ["--zero-stage", "2"]
    optim = next((out / "checkpoints" / "step4").glob("*optim_states.pt"))
    optim.write_bytes(optim.read_bytes()[:100])   # a damaged optimizer shard
    codes, log = run_ranks([*args, *accum(2)], world=2, expect=None)
    assert codes == [3, 3], log[-3000:]
    errors = [ln for ln in log.splitlines() if ln.startswith("linkbert-pretrain: error:")]
    assert len(errors) == 2 and "universal checkpoint" in errors[0] and "resume on 1 ranks" in errors[0], log[-3000:]

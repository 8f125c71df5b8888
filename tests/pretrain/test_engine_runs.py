"""End-to-end 2-rank CPU runs (gloo): ZeRO stages agree, non-finite steps are skipped, exports load in
transformers with the trained weights, and a killed/preempted/crashed-in-save run resumes exactly."""
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import Ranks, build_jargon, losses, read_jsonl, run_ranks, synthetic_dataset

from pretrain.checkpoint import COMPLETE, consolidated_state_dict, list_tags
from pretrain.config import DataConfig
from pretrain.data import PretrainData, SampleOrder
from pretrain.faults import NAN_STEPS_ENV, TRACE_ENV
from pretrain.faults import SAVE_CRASH_ENV as FAULT_ENV
from tests.procs import wait_for

pytestmark = pytest.mark.slow

COMMON = ["--model", "tiny", "--micro-batch-size", "4", "--grad-accum", "2", "--lr", "1e-3", "--seed", "3",
          "--metrics.progress=false", "--metrics.tensorboard=false", "--data.held_out=64",
          "--metrics.eval_batches=4", "--data.prefetch=2"]


@pytest.fixture(scope="module")
def jargon(tmp_path_factory, minilm_dir):
    return build_jargon(minilm_dir, tmp_path_factory.mktemp("jargon") / "d64", max_seq_len=64)


@pytest.fixture(scope="module")
def stage_runs(jargon, tmp_path_factory):
    """The same 8 steps at ZeRO 0-3 in fp32, with a poisoned (NaN) loss at step 3 that must be skipped."""
    base = tmp_path_factory.mktemp("stages")
    outs = {}
    for stage in (0, 1, 2, 3):
        out = base / f"z{stage}"
        run_ranks(["--data", str(jargon), "--output", str(out), "--zero-stage", str(stage), "--max-steps", "8",
                   "--save-every", "1", "--checkpoint.keep_last=100", *COMMON], extra_env={NAN_STEPS_ENV: "3"})
        outs[stage] = out
    return outs


def test_zero_stages_agree_and_nonfinite_step_is_skipped(stage_runs):
    ref = read_jsonl(stage_runs[0] / "metrics.jsonl")
    assert [r["step"] for r in ref] == list(range(1, 9))
    for stage in (1, 2, 3):
        got = read_jsonl(stage_runs[stage] / "metrics.jsonl")
        for a, b in zip(ref, got):
            if a["step"] == 3:
                continue
            assert abs(a["loss"] - b["loss"]) < 1e-5, (stage, a["step"], a["loss"], b["loss"])
            assert abs(a["relation_loss"] - b["relation_loss"]) < 1e-5
    for stage, out in stage_runs.items():
        m = read_jsonl(out / "metrics.jsonl")
        assert m[2]["skipped"] is True and m[2]["loss"] == "nan" and m[2]["nonfinite_losses"] == 4
        assert all(not r["skipped"] for i, r in enumerate(m) if i != 2)
        assert m[3]["lr"] == m[2]["lr"]            # the scheduler did not advance on the skipped step
        assert m[1]["lr"] > m[2]["lr"] > m[4]["lr"]
        ck = out / "checkpoints"
        w2, w3, w4 = (consolidated_state_dict(ck / f"step{s}") for s in (2, 3, 4))
        key = "bert.encoder.layer.0.attention.self.query.weight"
        assert torch.equal(w2[key], w3[key]), f"stage {stage}: the skipped step changed the weights"
        assert not torch.equal(w3[key], w4[key])
        assert m[-1]["loss"] < m[0]["loss"]
        assert (out / "report.png").stat().st_size > 10_000   # rank 0 drew it at the checkpoints and the end


def _eval_batches(data_dir, rank_world=2):
    """The held-out batches the trainer evaluated (same seed, sizes, masks), all ranks together."""
    data = PretrainData(DataConfig(paths=[str(data_dir)], held_out=64), seed=3)
    out = []
    for r in range(rank_world):
        out += list(data.eval_batches(4, r, rank_world, 4))
    data.close()
    return out


def test_zero3_export_loads_in_transformers_with_trained_weights(stage_runs, jargon, tmp_path):
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    from pretrain.export import main as export_main
    from pretrain.hf_io import load_hf_pretrained
    out = stage_runs[3]
    hf = out / "hf"
    # the export holds the final step's weights as DeepSpeed itself reconstructs them from the ZeRO-3
    # shards (zero_to_fp32, called here on the checkpoint folder, apart from pretrain.checkpoint)
    step, last = list_tags(out / "checkpoints")[-1]
    assert step == 8
    want = _zero_to_fp32(last)
    _assert_same_weights(hf, want)
    cfg = json.loads((hf / "config.json").read_text())
    assert cfg["model_type"] == "bert"
    AutoTokenizer.from_pretrained(hf)
    mlm = AutoModelForMaskedLM.from_pretrained(hf).eval()
    AutoModel.from_pretrained(hf)
    ev = json.loads((out / "eval.json").read_text())
    total, n = 0.0, 0
    for b in _eval_batches(jargon):
        t = b.tensors
        with torch.no_grad():
            logits = mlm(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                         token_type_ids=t["token_type_ids"]).logits
        picked = logits.gather(1, t["masked_positions"].unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        lab = t["masked_labels"]
        total += torch.nn.functional.cross_entropy(picked.reshape(-1, logits.shape[-1]), lab.reshape(-1),
                                                   ignore_index=-100, reduction="sum").item()
        n += int((lab != -100).sum())
    # transformers' forward over the exported weights reproduces the training engine's held-out MLM loss
    assert abs(total / n - ev["eval_mlm_loss"]) < 1e-4, (total / n, ev)
    ours = load_hf_pretrained(hf).eval()
    correct = 0
    for b in _eval_batches(jargon):
        with torch.no_grad():
            correct += (ours(**{k: v for k, v in b.tensors.items() if k != "masked_positions"
                                and k != "masked_labels"}).relation_logits.argmax(-1)
                        == b.tensors["relation_labels"]).sum().item()
    assert correct / ev["eval_pairs"] == ev["eval_relation_acc"]
    # the CLI's export of the run folder: the same final checkpoint, the same reconstruction
    assert export_main([str(out), "--out", str(tmp_path / "hf2")]) == 0
    _assert_same_weights(tmp_path / "hf2", want)


def _zero_to_fp32(folder: Path) -> dict[str, torch.Tensor]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _assert_same_weights(hf: Path, want: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import load_file

    from pretrain.hf_io import TIED_KEYS
    got = load_file(hf / "model.safetensors")
    assert set(got) == {k for k in want if k not in TIED_KEYS}, set(got) ^ set(want)
    differ = [k for k in got if got[k].dtype != torch.float32 or not torch.equal(got[k], want[k].float())]
    assert not differ, f"{hf}: {len(differ)} tensors differ from zero_to_fp32's (first: {differ[0]})"


def _wait_step(out: Path, step: int, ranks: Ranks, timeout: float = 120):
    def reached():
        if any(p.poll() is not None for p in ranks.procs):
            raise AssertionError(f"run ended before step {step}:\n{ranks.output()[-3000:]}")
        m = out / "metrics.jsonl"
        return m.is_file() and any(r["step"] >= step for r in read_jsonl(m))
    wait_for(reached, timeout, interval=0.05, what=f"step {step}")


def test_resume_is_exact_after_crash_in_save_sigkill_and_sigterm(tmp_path):
    data = synthetic_dataset(tmp_path / "syn", n=100, max_seq_len=16)
    args = ["--data", str(data), "--max-steps", "24", "--save-every", "4", "--checkpoint.keep_last=2",
            "--checkpoint.hf_every=8",
            "--data.held_out=4", *[a for a in COMMON if not a.startswith("--data.held_out")]]
    ref = tmp_path / "ref"
    run_ranks([*args, "--output", str(ref)])
    out = tmp_path / "run"
    trace = tmp_path / "trace"
    trace.mkdir()
    env = {TRACE_ENV: str(trace)}
    # 1. crash inside the save of step 8, after DeepSpeed wrote its files, before our marker
    codes, _ = run_ranks([*args, "--output", str(out)], extra_env={**env, FAULT_ENV: "8"}, expect=None)
    assert codes == [17, 17]
    assert (out / "checkpoints" / "step8").is_dir() and not (out / "checkpoints" / "step8" / COMPLETE).exists()
    assert [s for s, _ in list_tags(out / "checkpoints")] == [4]
    # 2. rerun, SIGKILL both ranks mid-training
    r = Ranks([*args, "--output", str(out)], extra_env=env)
    try:
        assert "resuming from" in (wait_for(lambda: "resuming from" in r.output() and r.output(), 120))
        _wait_step(out, 13, r)
        r.kill(signal.SIGKILL)
    finally:
        r.close()
    assert not (out / "hf").exists()
    # 3. rerun, SIGTERM both ranks (cluster preemption): save at the next step boundary, exit 0
    r = Ranks([*args, "--output", str(out)], extra_env=env)
    try:
        _wait_step(out, 17, r)
        for p in r.procs:
            p.send_signal(signal.SIGTERM)
        codes = r.wait(120)
        log = r.output()
    finally:
        r.close()
    assert codes == [0, 0], log[-3000:]
    assert "signal received" in log
    stopped = list_tags(out / "checkpoints")[-1][0]
    assert 17 <= stopped < 24 and not (out / "hf").exists()
    # 4. rerun to the end: the loss trajectory equals the uninterrupted run's
    codes, log = run_ranks([*args, "--output", str(out)], extra_env=env)
    assert f"resuming from {out / 'checkpoints' / f'step{stopped}'}" in log
    got, want = losses(out), losses(ref)
    assert len(got) == len(want) == 24
    assert np.allclose(got, want, rtol=0, atol=1e-6), list(zip(got, want))
    assert (out / "hf" / "model.safetensors").is_file()
    assert (out / "hf-step8" / "model.safetensors").is_file() and (out / "hf-step16" / "config.json").is_file()
    assert [s for s, _ in list_tags(out / "checkpoints")] == [20, 24]   # keep_last=2
    # every pair trained exactly once per epoch over the final trajectory, across ranks and restarts
    final = {}
    for rank in (0, 1):
        for line in (trace / f"trace_rank{rank}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            final[(rec["position"], rank)] = rec["ids"]   # a replay after a resume overwrites the lost copy
    positions = sorted({p for p, _ in final})
    assert positions == list(range(0, 24 * 16, 8))
    stream = np.concatenate([final[(p, r)] for p in positions for r in (0, 1)])
    order = SampleOrder([100], seed=3, held_out=4)
    assert (stream == order.ids(0, len(stream))).all()
    n = order.epoch_size
    for e in range(len(stream) // n):
        assert sorted(stream[e * n:(e + 1) * n]) == sorted(set(range(100)) - set(order.held_out().tolist()))


def test_consecutive_skip_limit_stops_the_run(jargon, tmp_path):
    """NaN steps in a row past the limit stop the run with exit 3. (bf16 and ZeRO-2 offload training are
    cells of tests/pretrain/test_engine_matrix.py.)"""
    out = tmp_path / "nan"
    codes, log = run_ranks(["--data", str(jargon), "--output", str(out), "--max-steps", "6", "--zero-stage", "2",
                            "--train.max_consecutive_skips=2", *COMMON], extra_env={NAN_STEPS_ENV: "2,3"},
                           expect=3)
    assert "2 optimizer steps in a row were skipped" in log and "at step 3" in log
    assert [r["skipped"] for r in read_jsonl(out / "metrics.jsonl")] == [False, True, True]


def test_bad_batch_math_fails_fast_with_one_line(jargon, tmp_path):
    codes, log = run_ranks(["--data", str(jargon), "--output", str(tmp_path / "o"), "--max-steps", "2",
                            "--train.global_batch_size=64", *COMMON], expect=2)
    assert "micro 4 x accum 2 x world 2 = 16; use --grad-accum 8" in log

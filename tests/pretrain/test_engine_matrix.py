"""The configuration matrix a cluster user picks from, one small CPU run per cell (docs/pretrain.md,
"Configuration matrix"): ZeRO {0, 1, 2, 3, 2+offload} x precision {fp32, bf16} x optimizer {ours, the
one a DeepSpeed JSON names}. Each cell trains, saves, resumes to the same losses, exports at the end and
every save (hf_every), exports a mid-run checkpoint with linkbert-export (loads in transformers, equals
the trained weights) and continues with a larger --max-steps (every new step trains at the schedule's
lr). The cells run as one process each (tests/pretrain/matrix_cell.py), two at a time.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from engine_helpers import read_jsonl, synthetic_dataset

from tests.procs import ROOT, child_env, free_port, kill_tree, run

pytestmark = pytest.mark.slow

STEPS, SAVE, MORE = 4, 2, 6
FLAGS = ["--model", "tiny", "--micro-batch-size", "4", "--grad-accum", "2", "--lr", "1e-3", "--seed", "3",
         "--metrics.progress=false", "--metrics.tensorboard=false", "--metrics.log_every=1",
         "--data.held_out=4", "--metrics.eval_batches=1", "--data.prefetch=2"]
STAGES = ("0", "1", "2", "3", "2off")
CELLS = [(z, p, o) for z in STAGES for p in ("fp32", "bf16") for o in ("ours", "ds")]
CELL_TIMEOUT = 300


def cell_id(cell) -> str:
    return "-".join(cell)


def _ds_json(stage: str, named: bool, folder: Path) -> Path:
    src = ROOT / "ds_configs" / ("zero2_offload.json" if stage == "2off" else f"zero{stage}.json")
    if not named:
        return src
    ds = json.loads(src.read_text())
    ds["optimizer"] = {"type": "AdamW", "params": {k: "auto" for k in ("lr", "betas", "eps", "weight_decay")}}
    path = folder / f"zero{stage}_adamw.json"
    path.write_text(json.dumps(ds))
    return path


def _flags(cell, data: Path, folder: Path) -> list[str]:
    stage, precision, opt = cell
    extra = ["--optim.name=lamb"] if (opt == "ours" and stage == "0") else []   # LAMB where ZeRO allows it
    return ["--data", str(data), "--deepspeed-config", str(_ds_json(stage, opt == "ds", folder)),
            "--precision", precision, *extra, *FLAGS]


BUILD_OPS = ("from deepspeed.accelerator import get_accelerator\n"
             "for name in ('ShareMemCommBuilder', 'FusedAdamBuilder', 'CPUAdamBuilder'):\n"
             "    b = get_accelerator().create_op_builder(name)\n"
             "    if b is not None:\n"
             "        b.load()\n")


@pytest.fixture(scope="module")
def deepspeed_ops() -> None:
    """DeepSpeed compiles its CPU ops (shared-memory comm, the JSON's Adam, with offload its CPU Adam) on
    first use, ~40 s each, under a file lock. Built once here, alone: two cells compiling at once would
    share the wait inside their timeouts, and a cell killed mid-build would leave the lock behind."""
    run([sys.executable, "-c", BUILD_OPS], timeout=1200, env=child_env())


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, deepspeed_ops):
    """Every cell's run folders, two cells at a time (2 cores; each cell is one process, one rank)."""
    base = tmp_path_factory.mktemp("matrix")
    data = synthetic_dataset(base / "data", n=100, max_seq_len=16)
    pending, running, results = list(CELLS), {}, {}
    t0 = time.time()
    try:
        while pending or running:
            while pending and len(running) < 2:
                cell = pending.pop(0)
                out = base / cell_id(cell)
                out.mkdir()
                log = open(out / "cell.log", "w+")
                cmd = [sys.executable, "-m", "tests.pretrain.matrix_cell", str(out), str(STEPS), str(SAVE),
                       str(MORE), "--", *_flags(cell, data, out)]
                p = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=child_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port()))
                running[cell] = (p, log, time.time())
            for cell, (p, log, started) in list(running.items()):
                if p.poll() is None and time.time() - started < CELL_TIMEOUT:
                    continue
                kill_tree(p.pid)
                log.seek(0)
                results[cell] = (p.returncode if p.returncode is not None else "timeout", log.read(),
                                 base / cell_id(cell))
                log.close()
                del running[cell]
            time.sleep(0.2)
    finally:
        for p, log, _ in running.values():
            kill_tree(p.pid)
            log.close()
    print(f"matrix: {len(CELLS)} cells in {time.time() - t0:.0f} s")
    return results


def _module_weights(folder: Path) -> dict[str, torch.Tensor]:
    f = next(folder.glob("mp_rank_*_model_states.pt"))
    return torch.load(f, map_location="cpu", weights_only=False)["module"]


def _check_export(cell, hf: Path, ckpt_folder: Path, tmp: Path) -> None:
    """linkbert-export of the checkpoint equals the in-run export, loads in transformers and holds the
    trained weights (fp32: the module's; bf16: the fp32 masters, which round to the bf16 module)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM

    from pretrain.export import main as export_main
    assert export_main([str(ckpt_folder), "--out", str(tmp)]) == 0
    a, b = load_file(hf / "model.safetensors"), load_file(tmp / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.dtype == torch.float32 for v in a.values() if v.is_floating_point())
    m = AutoModelForMaskedLM.from_pretrained(tmp)
    sd = m.state_dict()
    for k in ("bert.encoder.layer.0.attention.self.query.weight", "cls.predictions.transform.dense.weight"):
        assert torch.equal(sd[k], a[k]), k
    if cell[0] == "3":
        return   # ZeRO-3's module file holds no weights: the consolidation above is the reference
    module = _module_weights(ckpt_folder)
    stage, precision, _ = cell
    for k, v in module.items():
        if k not in a or not v.is_floating_point():
            continue
        if precision == "fp32":
            assert torch.equal(a[k], v.float()), k
        else:
            assert v.dtype == torch.bfloat16
            assert torch.equal(a[k].to(torch.bfloat16), v), k   # the masters round to the trained bf16 weights


@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_cell(cell, matrix, tmp_path):
    from pretrain.checkpoint import consolidated_state_dict
    from pretrain.cli import config_from_args
    from pretrain.optim import lr_lambda
    rc, log, out = matrix[cell]
    assert rc == 0, f"{cell_id(cell)} exit {rc}:\n{log[-5000:]}"
    a, b = out / "a", out / "b"
    m = read_jsonl(a / "metrics.jsonl")
    assert [r["step"] for r in m] == list(range(1, MORE + 1))
    assert not any(r["skipped"] for r in m) and all(r["lr"] > 0 for r in m)
    # the mid-run save is timed apart from training: reported in the next record, not in step_time_s
    assert m[0]["save_time_s"] is None and m[SAVE]["save_time_s"] > 0
    # resume from the mid-run checkpoint: the same losses as the uninterrupted run
    rb = read_jsonl(b / "metrics.jsonl")
    assert [r["step"] for r in rb] == list(range(SAVE + 1, STEPS + 1))
    tol = 1e-6 if cell[1] == "fp32" else 1e-3
    for x, y in zip(rb, m[SAVE:STEPS]):
        assert abs(x["loss"] - y["loss"]) <= tol, (x["step"], x["loss"], y["loss"])
    # continue past the finished run: the schedule of the new horizon, logged once, every step trains
    assert log.count(f"schedule horizon {STEPS} -> {MORE} steps") == 1, log[-3000:]
    cfg, _ = config_from_args([*_flags(cell, out.parent / "data", out), "--max-steps", str(MORE)])
    f = lr_lambda(cfg)
    for r in m[STEPS:]:
        assert abs(r["lr"] - 1e-3 * f(r["step"] - 1)) < 1e-12, r
    key = "bert.encoder.layer.0.attention.self.query.weight"
    w = {s: consolidated_state_dict(a / "checkpoints" / f"step{s}")[key] for s in (STEPS, MORE)}
    assert not torch.equal(w[STEPS], w[MORE])
    # exports: hf_every at the mid-run save, the final one, and linkbert-export of the mid-run checkpoint
    assert (a / "hf" / "model.safetensors").is_file()
    _check_export(cell, a / f"hf-step{SAVE}", a / "checkpoints" / f"step{SAVE}", tmp_path / "hf")


def test_two_ranks_bf16_zero1_named_optimizer_exports_and_continues(tmp_path, deepspeed_ops):
    """Where the world size matters: BF16_Optimizer partitions its fp32 masters across ranks, so the export
    must lay two ranks' slices end to end (each parameter equals its trained bf16 weight when rounded);
    then continuing the finished run trains every new step at the new horizon's lr."""
    from engine_helpers import run_ranks
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM

    from pretrain.export import main as export_main
    data = synthetic_dataset(tmp_path / "data", n=100, max_seq_len=16)
    out = tmp_path / "run"
    flags = [*_flags(("1", "bf16", "ds"), data, tmp_path), "--output", str(out), "--save-every", str(SAVE),
             "--checkpoint.keep_last=100", f"--checkpoint.hf_every={SAVE}"]
    run_ranks([*flags, "--max-steps", str(STEPS), "--checkpoint.export_final=false"], timeout=CELL_TIMEOUT)
    folder = out / "checkpoints" / f"step{SAVE}"
    assert len(list(folder.glob("bf16_zero_pp_rank_*_optim_states.pt"))) == 2
    assert export_main([str(folder), "--out", str(tmp_path / "hf")]) == 0
    a = load_file(tmp_path / "hf" / "model.safetensors")
    b = load_file(out / f"hf-step{SAVE}" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    module = _module_weights(folder)
    checked = 0
    for k, v in module.items():
        if k in a and v.is_floating_point():
            assert torch.equal(a[k].to(torch.bfloat16), v), k
            checked += 1
    assert checked > 20
    AutoModelForMaskedLM.from_pretrained(tmp_path / "hf")
    _, log = run_ranks([*flags, "--max-steps", str(MORE)], timeout=CELL_TIMEOUT)
    assert f"schedule horizon {STEPS} -> {MORE} steps" in log
    m = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in m] == list(range(1, MORE + 1))
    assert all(r["lr"] > 0 and not r["skipped"] for r in m)
    assert (out / "hf" / "model.safetensors").is_file()

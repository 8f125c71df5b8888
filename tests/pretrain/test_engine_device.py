"""The CUDA path without a GPU: device choice on a faked CUDA node under every launcher, DeepSpeed told the
same device, statistics and collectives on the engine's device, and a step loop that never reads the
device except once per logged step (counted in a real single-rank run)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pretrain import dist_env, engine
from pretrain.config import ConfigError, RunConfig
from pretrain.data import Batch
from pretrain.modeling import LinkBertOutput
from pretrain.step_stats import EvalStats, StepStats
from tests.procs import ROOT, child_env, run

NODE = {"SLURM_JOB_NODELIST": "gpu[001-002]", "SLURM_STEP_NODELIST": "gpu[001-002]"}
LAUNCHERS = {   # rank 11 of 16, the 4th process (local rank 3) of its node, 8 per node
    "torchrun": {"RANK": "11", "LOCAL_RANK": "3", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"},
    "slurm": {"SLURM_PROCID": "11", "SLURM_STEP_ID": "0", "SLURM_LOCALID": "3", "SLURM_NTASKS": "16",
              "SLURM_STEP_NUM_TASKS": "16", "SLURM_NTASKS_PER_NODE": "8", **NODE},
    "openmpi": {"OMPI_COMM_WORLD_RANK": "11", "OMPI_COMM_WORLD_LOCAL_RANK": "3", "OMPI_COMM_WORLD_SIZE": "16",
                "OMPI_COMM_WORLD_LOCAL_SIZE": "8"},
    "mpich": {"PMI_RANK": "11", "PMI_SIZE": "16", "MPI_LOCALRANKID": "3", "MPI_LOCALNRANKS": "8"},
}


def fake_cuda(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_each_rank_drives_its_local_gpu(launcher, monkeypatch):
    fake_cuda(monkeypatch, 8)
    env = dist_env.discover(LAUNCHERS[launcher])
    assert (env.rank, env.local_rank, env.world_size, env.local_world_size) == (11, 3, 16, 8)
    assert engine.pick_device(env, {}) == torch.device("cuda", 3)
    # the device follows the launcher's local-rank variable, not a constant
    local_var = {"torchrun": "LOCAL_RANK", "slurm": "SLURM_LOCALID", "openmpi": "OMPI_COMM_WORLD_LOCAL_RANK",
                 "mpich": "MPI_LOCALRANKID"}[launcher]
    env = dist_env.discover({**LAUNCHERS[launcher], local_var: "6"})
    assert engine.pick_device(env, {}) == torch.device("cuda", 6)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_one_gpu_per_task_binding_drives_cuda0(launcher, monkeypatch):
    # srun --gpus-per-task=1 (or any one-entry CUDA_VISIBLE_DEVICES): the one visible device, whatever the
    # local rank says; cuda:3 would not exist
    fake_cuda(monkeypatch, 1)
    env = dist_env.discover(LAUNCHERS[launcher])
    assert engine.pick_device(env, {"CUDA_VISIBLE_DEVICES": "3"}) == torch.device("cuda", 0)


def test_more_ranks_than_gpus_is_one_line(monkeypatch):
    fake_cuda(monkeypatch, 2)
    env = dist_env.discover(LAUNCHERS["slurm"])
    with pytest.raises(ConfigError, match=r"local rank 3 \(from slurm\) but sees only 2 GPUs "
                                          r"\(CUDA_VISIBLE_DEVICES=0,1\)"):
        engine.pick_device(env, {"CUDA_VISIBLE_DEVICES": "0,1"})
    env = dist_env.discover({**LAUNCHERS["torchrun"], "LOCAL_RANK": "1"})
    with pytest.raises(ConfigError, match="8 processes per node share 2 visible GPUs"):
        engine.pick_device(env, {})
    fake_cuda(monkeypatch, 1)   # one GPU, no per-task binding: two ranks would share it
    with pytest.raises(ConfigError, match="8 processes per node share the node's one GPU"):
        engine.pick_device(env, {})


def test_no_cuda_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert engine.pick_device(dist_env.discover(LAUNCHERS["slurm"]), {}) == torch.device("cpu")


def test_deepspeed_is_told_the_same_device(monkeypatch):
    """DeepSpeed takes its device from LOCAL_RANK unless given `device_rank`: with one GPU per task that
    would be cuda:3 on a process that sees one GPU."""
    import deepspeed
    seen = {}

    def fake_initialize(args=None, model=None, optimizer=None, lr_scheduler=None, config=None, model_parameters=None):
        seen["args"] = args
        dev = torch.device("cuda", args.device_rank) if args is not None else torch.device("cpu")
        return SimpleNamespace(device=dev), optimizer, None, lr_scheduler

    monkeypatch.setattr(deepspeed, "initialize", fake_initialize)
    cfg = RunConfig()
    model = torch.nn.Linear(2, 2)
    ds = {"zero_optimization": {"stage": 2}}
    eng, *_ = engine.build_engine(cfg, model, ds, True, torch.device("cuda", 0))
    assert seen["args"].device_rank == 0 and eng.device == torch.device("cuda", 0)
    eng, *_ = engine.build_engine(cfg, model, ds, True, torch.device("cpu"))
    assert seen["args"] is None
    monkeypatch.setattr(deepspeed, "initialize", lambda **kw: (SimpleNamespace(device=torch.device("cuda", 3)),
                                                               None, None, None))
    with pytest.raises(RuntimeError, match="cuda:3, this rank drives cuda:0"):
        engine.build_engine(cfg, model, ds, True, torch.device("cuda", 0))


# --- the step loop on a device the host cannot read: "meta" tensors refuse .item()/bool()/.tolist() and
# refuse to mix with CPU tensors, as a CUDA tensor would cost a sync or crash a NCCL collective.

class MetaEngine:
    """Stands in for the DeepSpeed engine: outputs and gradients live on the meta device."""

    def __init__(self):
        self.module = torch.nn.Linear(4, 4, device="meta")
        self.optimizer = None
        self.calls = []

    def __call__(self, **inputs):
        self.calls.append({k: v.device for k, v in inputs.items() if torch.is_tensor(v)})
        b = inputs["input_ids"].shape[0]
        loss = torch.empty((), device="meta")
        return LinkBertOutput(loss=loss, mlm_loss=torch.empty((), device="meta"),
                              relation_loss=torch.empty((), device="meta"),
                              relation_logits=torch.empty(b, 3, device="meta"))

    def backward(self, loss):
        for p in self.module.parameters():
            p.grad = torch.empty_like(p)

    def step(self):
        pass

    def fp16_enabled(self):
        return False

    def eval(self):
        pass

    def train(self):
        pass


def _batches(n=4, width=8):
    while True:
        t = {"input_ids": torch.ones(n, width, dtype=torch.long), "attention_mask": torch.ones(n, width, dtype=torch.long),
             "relation_labels": torch.tensor([0, 1, 2, 1][:n]), "masked_labels": torch.full((n, 2), -100)}
        yield Batch(t, 0, n * width, np.arange(n), width)


def test_step_and_eval_never_read_the_device_and_reduce_on_it(monkeypatch):
    from pretrain import trainer
    reduced = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, *a, **k: reduced.append(t.device))
    eng, stats = MetaEngine(), StepStats("meta")
    gn = trainer.train_step(eng, _batches(), stats, torch.device("meta"), grad_accum=3, want_grad_norm=True)
    assert gn.device.type == "meta" and len(eng.calls) == 3
    assert all(d.type == "meta" for c in eng.calls for d in c.values())
    stats.all_reduce()
    with pytest.raises((RuntimeError, NotImplementedError)):   # the one read is the only host transfer
        stats.read()

    data = SimpleNamespace(eval_batches=lambda *a: (b for _, b in zip(range(3), _batches())))
    cfg = RunConfig()
    monkeypatch.setattr(EvalStats, "summary", lambda self: {"device": self.values.device.type})
    assert trainer.evaluate(eng, data, cfg, 0, 1, torch.device("meta")) == {"device": "meta"}
    assert reduced == [torch.device("meta")] * 2


def test_stats_sum_what_a_host_loop_would():
    stats = StepStats("cpu")
    stats.begin_interval()
    outs = [(1.5, 1.0, 0.5, [[3, 0, 0], [0, 0, 3]], [0, 1]), (float("nan"), 1.0, 0.5, [[0, 3, 0]], [1])]
    for loss, mlm, rel, logits, labels in outs:
        o = LinkBertOutput(loss=torch.tensor(loss), mlm_loss=torch.tensor(mlm), relation_loss=torch.tensor(rel),
                           relation_logits=torch.tensor(logits, dtype=torch.float))
        stats.add_micro(o, torch.tensor(labels), n_tokens=10, width=16)
    r = stats.read(torch.tensor(2.5))
    assert r["loss"] == 1.5 and r["mlm_loss"] == 1.0 and r["nonfinite"] == 1 and r["nonfinite_interval"] == 1
    assert r["relation_correct"] == 2 and r["relation_count"] == 3 and r["tokens"] == 20 and r["widths"] == 32
    assert r["extra0"] == 2.5
    stats.begin_step()
    r = stats.read()
    assert r["loss"] == 0 and r["tokens"] == 20   # the interval survives a new step

    ev = EvalStats("cpu")
    o = LinkBertOutput(mlm_loss=torch.tensor(2.0), relation_logits=torch.tensor([[3., 0, 0], [3., 0, 0], [0, 0, 3.]]))
    ev.add_batch(o, torch.tensor([[5, -100], [7, 8], [-100, -100]]), torch.tensor([0, 1, 2]))
    s = ev.summary()
    assert s["eval_mlm_loss"] == 2.0 and s["eval_pairs"] == 3 and abs(s["eval_relation_acc"] - 2 / 3) < 1e-12
    assert (s["eval_recall_contiguous"], s["eval_recall_random"], s["eval_recall_linked"]) == (1.0, 0.0, 1.0)


# --- a real single-rank run, counting host reads made by our own code inside and outside the step

COUNTER = r'''
import json, os, sys, torch
from pathlib import Path
PKG = str(Path(sys.argv[1]) / "pretrain")
state = {"in_step": False, "in_read": False, "step": 0, "read": 0, "where": []}
def wrap(name):
    orig = getattr(torch.Tensor, name)
    def f(self, *a, **k):
        fn = sys._getframe(1).f_code.co_filename
        if fn.startswith(PKG) and (state["in_step"] or state["in_read"]):
            state["step" if state["in_step"] else "read"] += 1
            state["where"].append(f"{name} {fn}:{sys._getframe(1).f_lineno}")
        return orig(self, *a, **k)
    setattr(torch.Tensor, name, f)
for n in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
    wrap(n)
from pretrain import trainer
from pretrain.cli import config_from_args
def flag(key, fn):
    def g(*a, **k):
        state[key] = True
        try:
            return fn(*a, **k)
        finally:
            state[key] = False
    return g
trainer.train_step = flag("in_step", trainer.train_step)
trainer.Loop.read_stats = flag("in_read", trainer.Loop.read_stats)
cfg, _ = config_from_args(sys.argv[3:])
trainer.train(cfg)
Path(sys.argv[2]).write_text(json.dumps(state))
'''


@pytest.mark.parametrize("stage,precision", [(2, "fp32"), (0, "bf16")])
def test_step_loop_reads_the_device_once_per_logged_step(stage, precision, tmp_path):
    from engine_helpers import read_jsonl, synthetic_dataset
    data = synthetic_dataset(tmp_path / "ds", n=120, max_seq_len=16)
    script = tmp_path / "count.py"
    script.write_text(COUNTER)
    out, counts = tmp_path / "run", tmp_path / "counts.json"
    run([sys.executable, str(script), str(ROOT), str(counts), "--data", str(data), "--output", str(out),
         "--model", "tiny", "--micro-batch-size", "4", "--grad-accum", "2", "--max-steps", "6",
         "--zero-stage", str(stage), "--precision", precision, "--save-every", "0", "--metrics.log_every=3",
         "--metrics.progress=false", "--metrics.tensorboard=false",
         f"--checkpoint.export_final={precision == 'bf16'}", "--data.held_out=8"],
        timeout=300, env=child_env(OMP_NUM_THREADS=1))
    state = json.loads(counts.read_text())
    assert state["step"] == 0, state["where"][:10]     # 6 steps x 2 micro-batches: no host read at all
    assert state["read"] == 2, state["where"]           # steps 3 and 6 are logged: one read each
    recs = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in recs] == [3, 6]
    assert all(np.isfinite(r["loss"]) and r["grad_norm"] and r["grad_norm"] > 0 for r in recs)
    sel = json.loads(next((out / "checkpoints").glob("step6/run.json")).read_text())["selected"]
    assert sel["device"] == "cpu" and sel["backend"] == "gloo" and sel["precision"] == precision
    assert sel["model"]["attention"] == "sdpa" and "not CUDA" in sel["model"]["attention_why"]
    assert Path(out / "checkpoints").is_dir()
    if precision == "bf16":
        # ZeRO-0 in bf16: the export holds the optimizer's fp32 master weights, not the bf16 module copy
        from safetensors.torch import load_file
        master = torch.load(out / "checkpoints" / "step6" / "fp32_master_weights.pt", weights_only=True)
        exported = load_file(out / "hf" / "model.safetensors")
        w = "bert.encoder.layer.0.attention.self.query.weight"
        assert exported[w].dtype == torch.float32 and torch.equal(exported[w], master[w])
        assert not torch.equal(master[w], master[w].bfloat16().float())   # really more than 8 bits


def test_grad_norm_of_half_precision_grads_does_not_overflow():
    """ZeRO-0 fp16 grads are loss-scaled: their norm passes 65504 (fp16's largest) long before the grads do."""
    from pretrain.trainer import device_grad_norm
    m = torch.nn.Linear(1000, 1000).half()
    for p in m.parameters():
        p.grad = torch.full_like(p, 300.0)
    want = 300.0 * (1000 * 1000 + 1000) ** 0.5
    got = device_grad_norm(m)
    assert got.dtype == torch.float32 and abs(float(got) - want) / want < 1e-3

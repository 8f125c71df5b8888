"""The pretraining loop: wires config, data, model, engine, checkpoints and metrics.

`train` reads top to bottom: ranks and device -> data -> model -> engine -> resume -> steps -> final
eval, save and export. Each step runs `train_step` (forward/backward per micro-batch, one optimizer
step) without reading anything back from the device; the host reads the step statistics (one
all-reduce, one transfer) only when a metrics line, an eval or a checkpoint needs them, and that is
also where a preemption signal is agreed on by all ranks.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_prep.shards import has_tokenizer
from pretrain import checkpoint as ckpt
from pretrain import faults, report, run_guard
from pretrain.config import ConfigError, RunConfig, fill_ds_config
from pretrain.data import BatchLoader, PretrainData
from pretrain.engine import build_engine, selection, set_matmul_precision, setup_distributed
from pretrain.errors import PretrainError
from pretrain.metrics import MetricsWriter
from pretrain.optim import reapply_schedule
from pretrain.preflight import check_or_raise
from pretrain.presets import RELATION_NAMES
from pretrain.step_stats import EvalStats, StepStats

log = logging.getLogger("linkbert-pretrain")


class TrainingError(PretrainError):
    """The run cannot go on (e.g. too many non-finite steps in a row); one line for the user."""


class StopFlag:
    """SIGTERM / SIGUSR1 (cluster preemption) and Ctrl-C (SIGINT) ask for a save and exit 0; every rank acts
    on it at the next logged step (metrics.log_every, 1 by default), where the ranks agree on it. A second
    Ctrl-C stops at once (pretrain.run_guard.on_ctrl_c: one line, exit 130, no checkpoint)."""

    def __init__(self, announce: bool = True):
        self.signum, self.announce = 0, announce
        for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        from pretrain import run_guard
        if signum == signal.SIGINT:
            run_guard.on_ctrl_c(self.signum == signal.SIGINT, self.announce)
        self.signum = signum


@dataclass
class Progress:
    """The run's position, saved in every checkpoint's run.json."""
    step: int = 0
    skipped_total: int = 0
    nonfinite_total: int = 0
    consecutive_skips: int = 0


def _tokenizer_dir(cfg: RunConfig, data: PretrainData) -> Path | None:
    """Where the tokenizer files live: data.tokenizer, else --init-from, else the dataset's own."""
    for c in (cfg.data.tokenizer, cfg.model.init_from):
        if has_tokenizer(c):
            return Path(c)
    return data.datasets[0].manifest.tokenizer_dir()


def load_data(cfg: RunConfig) -> tuple[PretrainData, Path | None]:
    d = cfg.data
    data = PretrainData(d, cfg.train.seed)
    tok_dir = _tokenizer_dir(cfg, data)
    if d.whole_word:
        from pretrain.masking import continuation_table
        if tok_dir is None:
            raise ConfigError("data.whole_word needs the tokenizer's vocabulary: set --data.tokenizer=DIR")
        data.spec = dataclasses.replace(data.spec, continuation=continuation_table(tok_dir, data.attrs["vocab_size"]))
    return data, tok_dir


def build_model(cfg: RunConfig, vocab_size: int, max_seq_len: int):
    from pretrain.modeling import LinkBertForPreTraining, model_config
    over = {}
    if cfg.model.dropout is not None:
        over = {"hidden_dropout_prob": cfg.model.dropout, "attention_probs_dropout_prob": cfg.model.dropout}
    if cfg.model.init_from:
        from pretrain.hf_io import load_hf_pretrained
        model = load_hf_pretrained(cfg.model.init_from, config_overrides=over or None)
        if model.config.vocab_size != vocab_size:
            raise ConfigError(f"--init-from {cfg.model.init_from} has vocab_size {model.config.vocab_size} but the "
                              f"data was built with a {vocab_size}-token vocabulary; rebuild the data with "
                              "that model's tokenizer")
    else:
        model = LinkBertForPreTraining(model_config(cfg.model.name, vocab_size=vocab_size, **over))
    if model.config.max_position_embeddings < max_seq_len:
        raise ConfigError(f"model has {model.config.max_position_embeddings} positions but the data's "
                          f"max_seq_len is {max_seq_len}; rebuild the data with --max-seq-len "
                          f"{model.config.max_position_embeddings}")
    return model


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: RunConfig) -> int:
    """Run (or resume) the job. Returns 0 on success or on a preemption save."""
    logging.basicConfig(level=logging.INFO, format="[linkbert-pretrain] %(message)s")
    env, device = setup_distributed()
    import torch.distributed as dist
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank != 0:
        log.setLevel(logging.WARNING)
    t, out = cfg.train, Path(cfg.train.output)
    if not t.output:
        raise ConfigError("no output folder: pass --output DIR")
    run_guard.hold(cfg, rank, world, dist, log)   # rank 0 owns --output for the run's life (one line if not)
    # vocabulary identity, shard sizes/pair counts/hashes, held-out size, output space: seconds, before step 1
    checked = check_or_raise(cfg, rank, world, dist, log)
    out.mkdir(parents=True, exist_ok=True)
    ds_config, client_opt = fill_ds_config(cfg, world, device.type)
    data, tok_dir = load_data(cfg)
    _seed(t.seed)   # the same initial weights on every rank
    model = build_model(cfg, data.attrs["vocab_size"], data.attrs["max_seq_len"])
    last = ckpt.latest_complete(out)
    reshard = last is not None and ckpt.needs_reshard(last, world, t.zero_stage)
    if reshard:   # ZeRO state partitioned for another world size: load DeepSpeed's universal format
        ds_config.setdefault("checkpoint", {})["load_universal"] = True
    tf32 = set_matmul_precision(cfg, device)
    engine, _, scheduler, opt_desc = build_engine(cfg, model, ds_config, client_opt, device)
    _seed(t.seed * 7919 + rank + 1)   # dropout streams differ per rank
    prog, consumed = Progress(), 0
    if last is not None:
        meta = ckpt.resume(engine, last, rank, reshard, log)
        prog = Progress(meta["step"], meta.get("skipped_steps", 0), meta.get("nonfinite_losses", 0))
        consumed = meta["consumed_samples"]
        _continue_schedule(scheduler, meta, t.max_steps)
        if meta.get("world_size") != world:
            log.warning("resuming on %d ranks from a checkpoint written by %s: the data order is kept, rank RNG "
                        "streams %s", world, meta.get("world_size"), "restored" if meta["rng_restored"] else "re-seeded")
        log.info("resuming from %s: step %d, %d samples consumed (epoch %.3f)", last, prog.step, consumed,
                 consumed / data.order.epoch_size)
    else:
        log.info("starting fresh in %s (no complete checkpoint)", out)
    sel = selection(cfg, device, "nccl" if device.type == "cuda" else "gloo", opt_desc, tf32, model)
    if rank == 0:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    log.info("world %d (launcher %s), batch: micro %d x accum %d x world %d = %d pairs/step, %d training pairs/"
             "epoch (+%d held out), max_seq_len %d, %.1fM parameters", world, env.launcher, t.micro_batch_size,
             t.grad_accum, world, ds_config["train_batch_size"], data.order.epoch_size, len(data.order.held_out()),
             data.attrs["max_seq_len"], sum(p.numel() for p in model.parameters()) / 1e6)
    log.info("selected: %s", json.dumps(sel))
    sel["vocab_sha256"] = checked.vocab_sha256   # run.json: what a resume on other data is checked against
    loop = Loop(cfg, engine, scheduler, data, rank, world, device, env.local_world_size, tok_dir, sel, prog,
                start=consumed, resumed=last is not None)
    try:
        loop.run()
    finally:
        loop.close()
    dist.barrier()
    dist.destroy_process_group()
    return 0


def _continue_schedule(scheduler, meta: dict, max_steps: int) -> None:
    """After a resume: the lr schedule follows this run's --max-steps (docs/pretrain.md, "Continuing")."""
    lrs = reapply_schedule(scheduler)
    before = (meta.get("config") or {}).get("train", {}).get("max_steps")
    if before is not None and before != max_steps:
        log.info("schedule horizon %d -> %d steps: step %d trains at lr %.4g", before, max_steps, meta["step"] + 1,
                 lrs[0])


def train_step(engine, loader: BatchLoader, stats: StepStats, device: torch.device, grad_accum: int,
               poison: bool = False, want_grad_norm: bool = False):
    """One optimizer step: forward/backward over ``grad_accum`` micro-batches, then DeepSpeed's step.

    Nothing here reads the device: statistics are added into ``stats`` on the device. With
    ``want_grad_norm`` (ZeRO-0, where DeepSpeed reports none, or a loss-scaled one) returns the
    pre-clipping norm of the averaged, unscaled gradients as a device tensor, else None."""
    stats.begin_step()
    grad_norm = None
    for micro in range(grad_accum):
        b = next(loader)
        inputs = b.to(device)
        outp = engine(**inputs)
        loss = outp.loss * float("nan") if poison else outp.loss   # tests only (pretrain.faults)
        outp.loss = loss
        engine.backward(loss)
        if want_grad_norm and micro == grad_accum - 1:
            # fp16 grads are loss-scaled: divide by the scale this step used (a host float)
            grad_norm = device_grad_norm(engine.module) / float(_loss_scale(engine) or 1.0)
        engine.step()
        stats.add_micro(outp, inputs["relation_labels"], b.n_tokens, inputs["input_ids"].shape[1])
    return grad_norm


class Loop:
    """The step loop and what it decides at step boundaries: metrics, eval, save, preemption, export."""

    def __init__(self, cfg, engine, scheduler, data, rank, world, device, local_world, tok_dir, sel, prog,
                 start: int, resumed: bool):
        t = cfg.train
        self.cfg, self.engine, self.scheduler, self.data = cfg, engine, scheduler, data
        self.rank, self.world, self.device, self.tok_dir, self.sel, self.prog = rank, world, device, tok_dir, sel, prog
        self.out = Path(t.output)
        self.stop = StopFlag(announce=rank == 0)
        self.loader = BatchLoader(data, t.micro_batch_size, rank, world, start=start, prefetch=cfg.data.prefetch,
                                  pin_memory=device.type == "cuda")
        self.writer = (MetricsWriter(self.out, prog.step, t.max_steps, cfg.metrics.tensorboard, cfg.metrics.progress)
                       if rank == 0 else None)
        self.stats = StepStats(device)
        self.global_batch = t.micro_batch_size * t.grad_accum * world
        self.model_config = engine.module.config.to_dict()
        self.flops_fn, peak = _flops_fn(engine.module.config, device, t.precision, cfg.data.mask_prob)
        # a GPU per rank; on CPU the ranks of a node share its cores, whose peak counts once per node
        if device.type == "cuda" and t.precision == "fp32" and not sel.get("tf32"):
            peak = None   # the FLOP table's fp32 figures are TF32 tensor-core peaks
        self.peak_total = (peak or 0) * (world if device.type == "cuda" else max(1, world // local_world))
        self.last_saved = prog.step if resumed else -1
        self.nan_steps = faults.nan_steps()
        self.interval = (prog.step, time.perf_counter())
        self.save_time_s = None   # the last mid-run save (+ hf_every export), in the next metrics record

    def run(self) -> None:
        t, m, c = self.cfg.train, self.cfg.metrics, self.cfg.checkpoint
        while self.prog.step < t.max_steps:
            step = self.prog.step + 1
            log_now = step % m.log_every == 0 or step == t.max_steps
            eval_now = bool(m.eval_every) and step % m.eval_every == 0 and step != t.max_steps
            save_now = bool(c.save_every) and step % c.save_every == 0 and step != t.max_steps
            zero0 = t.zero_stage == 0
            lr = self._lr()   # the lr this step uses (a host float)
            grad_norm = train_step(self.engine, self.loader, self.stats, self.device, t.grad_accum,
                                   poison=step in self.nan_steps, want_grad_norm=log_now and zero0)
            self.prog.step = step
            failing = self._count_skip()
            if not (log_now or eval_now or save_now or failing):
                continue
            rec = self.read_stats(grad_norm if zero0 else self.engine.get_global_grad_norm(), lr)
            stop = rec.pop("stop")
            t_eval = time.perf_counter()
            ev = self.evaluate() if eval_now else {}
            if ev:
                ev["eval_time_s"] = time.perf_counter() - t_eval
            if self.rank == 0 and (log_now or ev or failing):
                self.writer.log({**rec, **ev})
            if failing:
                raise TrainingError(f"{self.prog.consecutive_skips} optimizer steps in a row were skipped (non-finite "
                                    f"loss or fp16 overflow) at step {step}; lower --lr, use --precision bf16, or "
                                    "raise --train.max_consecutive_skips")
            if stop:
                log.info("signal received: saving at step %d and exiting", step)
                self.save(step)
                return
            if save_now:
                t_save = time.perf_counter()
                self.save(step)
                if c.hf_every and step % c.hf_every == 0:
                    self.export(ckpt.ckpt_root(self.out) / ckpt.tag_for(step), self.out / f"hf-step{step}")
                self.save_time_s = time.perf_counter() - t_save
                log.info("checkpoint of step %d saved in %.1f s", step, self.save_time_s)
            if ev or save_now:
                # throughput (tokens/s, MFU, step time) counts training only: eval and save are timed apart
                self.interval = (step, time.perf_counter())
        self.finish()

    def _count_skip(self) -> bool:
        """Count a skipped step; True when too many in a row were skipped (the run must stop)."""
        p = self.prog
        if self.engine.was_step_applied():   # a host bool: DeepSpeed already decided on the host
            p.consecutive_skips = 0
            return False
        p.skipped_total += 1
        p.consecutive_skips += 1
        return p.consecutive_skips >= self.cfg.train.max_consecutive_skips

    def read_stats(self, grad_norm, lr: float) -> dict:
        """All-reduce the step statistics (and the stop flag) on the device, then one read: the metrics record.
        ``grad_norm`` and the loss scale may be device tensors: they travel in the same read."""
        s, t, p = self.stats, self.cfg.train, self.prog
        s.values[s.index["stop"]] = 1.0 if self.stop.signum else 0.0
        s.all_reduce()
        maybe = [grad_norm, _loss_scale(self.engine)]
        on_device = [x for x in maybe if torch.is_tensor(x)]
        r = s.read(*on_device)
        host = iter(r[f"extra{i}"] for i in range(len(on_device)))
        grad_norm, scale = (next(host) if torch.is_tensor(x) else x for x in maybe)
        steps_done = p.step - self.interval[0]
        now = time.perf_counter()
        dt = max(1e-9, now - self.interval[1])
        self.interval = (p.step, now)
        s.begin_interval()
        p.nonfinite_total += int(r["nonfinite_interval"])
        n_ok = max(1.0, self.world * t.grad_accum - r["nonfinite"])
        rec = {"step": p.step, "loss": r["loss"] / n_ok if r["nonfinite"] == 0 else float("nan"),
               "mlm_loss": r["mlm_loss"] / n_ok, "relation_loss": r["relation_loss"] / n_ok,
               "relation_acc": r["relation_correct"] / max(1.0, r["relation_count"]), "lr": lr,
               "grad_norm": _finite(grad_norm), "loss_scale": _finite(scale),
               "tokens_per_s": r["tokens"] / dt, "samples_per_s": self.global_batch * steps_done / dt,
               "consumed_samples": self.loader.next_position, "skipped": not self.engine.was_step_applied(),
               "skipped_total": p.skipped_total, "nonfinite_losses": p.nonfinite_total,
               "step_time_s": dt / max(1, steps_done), "mfu": None, "peak_mem_mb": _peak_mem_mb(self.device),
               "save_time_s": self.save_time_s, "stop": r["stop"] > 0}
        self.save_time_s = None
        if self.flops_fn is not None and self.peak_total and r["micro_batches"]:
            mean_width = r["widths"] / r["micro_batches"]
            rec["mfu"] = r["tokens"] * self.flops_fn(int(mean_width)) / dt / self.peak_total
        return rec

    def _lr(self) -> float:
        return self.scheduler.get_last_lr()[0] if self.scheduler is not None else self.cfg.optim.lr

    def meta(self, step: int) -> dict:
        t, p = self.cfg.train, self.prog
        return {"step": step, "consumed_samples": self.loader.next_position, "world_size": self.world,
                "zero_stage": t.zero_stage, "precision": t.precision, "skipped_steps": p.skipped_total,
                "nonfinite_losses": p.nonfinite_total, "model_config": self.model_config,
                "config": self.cfg.to_dict(), "epoch_size": self.data.order.epoch_size, "selected": self.sel,
                "vocab_sha256": self.sel.get("vocab_sha256")}

    def save(self, step: int) -> Path:
        import torch.distributed as dist
        folder = ckpt.save(self.engine, self.out, step, self.meta(step), self.rank, dist.barrier, self.tok_dir,
                           self.cfg.checkpoint.keep_last)
        self.last_saved = step
        if self.rank == 0:   # RUN/report.png, redrawn at every checkpoint and at the end (pretrain/report.py)
            report.redraw(self.out, force=step == self.cfg.train.max_steps)
        return folder

    def export(self, folder: Path, dest: Path) -> None:
        import torch.distributed as dist
        if self.rank == 0:
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            ckpt.export_hf(folder, tmp)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
            log.info("Hugging Face export: %s", dest)
        dist.barrier()

    def evaluate(self) -> dict:
        return evaluate(self.engine, self.data, self.cfg, self.rank, self.world, self.device)

    def finish(self) -> None:
        step = self.prog.step
        ev = self.evaluate()
        if self.rank == 0:
            log.info("held-out eval at step %d: mlm_loss %.4f, relation_acc %.4f (%d pairs; recall %s)", step,
                     ev["eval_mlm_loss"], ev["eval_relation_acc"], ev["eval_pairs"],
                     ", ".join(f"{n} {ev['eval_recall_' + n]:.2f}" for n in RELATION_NAMES))
            (self.out / "eval.json").write_text(json.dumps({"step": step, **ev}, indent=2) + "\n")
        folder = self.save(step) if self.last_saved != step else ckpt.ckpt_root(self.out) / ckpt.tag_for(step)
        if self.cfg.checkpoint.export_final:
            self.export(folder, self.out / "hf")
        log.info("finished %d steps; checkpoint %s; skipped steps %d, non-finite losses %d", step, folder,
                 self.prog.skipped_total, self.prog.nonfinite_total)

    def close(self) -> None:
        self.loader.close()
        self.data.close()
        if self.writer is not None:
            self.writer.close()


@torch.no_grad()
def evaluate(engine, data: PretrainData, cfg: RunConfig, rank: int, world: int, device) -> dict:
    """MLM loss, relation accuracy and per-relation recall on the held-out pairs (every rank the same
    number of batches); accumulated on the device, one all-reduce, one read."""
    engine.eval()
    stats = EvalStats(device)
    for b in data.eval_batches(cfg.train.micro_batch_size, rank, world, cfg.metrics.eval_batches):
        inputs = b.to(device)
        stats.add_batch(engine(**inputs), inputs["masked_labels"], inputs["relation_labels"])
    stats.all_reduce()
    engine.train()
    return stats.summary()


def device_grad_norm(module) -> torch.Tensor:
    """Pre-clipping global L2 norm of the (already averaged) gradients, as a device tensor."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    # norms accumulated in fp32: an fp16 norm of loss-scaled gradients overflows at 65504
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0, dtype=torch.float32)), 2.0)


def _flops_fn(config, device, precision: str, mask_prob: float):
    """(FLOPs per token at a sequence length, peak FLOP/s of one device) from pretrain.flops."""
    try:
        from pretrain.flops import flops_per_token, peak_flops
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        peak = peak_flops(device, dtype)
        return (lambda seq_len: flops_per_token(config, seq_len, masked_fraction=mask_prob)), peak
    except Exception:   # no FLOP model: MFU is reported as null rather than guessed
        return None, None


def _peak_mem_mb(device) -> float:
    """Peak accelerator memory on CUDA (allocator statistics: no device sync); the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _finite(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _loss_scale(engine):
    if not engine.fp16_enabled():
        return None
    opt = engine.optimizer
    for name in ("cur_scale", "loss_scale"):
        v = getattr(opt, name, None)
        if v is not None:
            return v
    return None

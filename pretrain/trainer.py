"""The pretraining loop: wires config, data, model, optimizer, DeepSpeed, checkpoints and metrics.

Read top to bottom: set up ranks -> data -> model -> engine -> resume -> steps (forward/backward per
micro-batch, one optimizer step, one small all-reduce for metrics and the stop flag) -> save/export.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch

from pretrain import checkpoint as ckpt
from pretrain.config import ConfigError, RunConfig, fill_ds_config
from pretrain.data import BatchLoader, PretrainData
from pretrain.metrics import MetricsWriter
from pretrain.optim import build_optimizer, build_scheduler, guard_nonfinite
from pretrain.presets import RELATION_NAMES

log = logging.getLogger("linkbert-pretrain")


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. too many non-finite steps in a row); one line for the user."""


class StopFlag:
    """SIGTERM / SIGUSR1 (cluster preemption) ask for a save at the next step boundary and exit 0."""

    def __init__(self):
        self.signum = 0
        for s in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum


def _device():
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _setup_distributed(device):
    import deepspeed

    from pretrain import dist_env
    env = dist_env.discover()
    if env.world_size == 1 and "MASTER_PORT" not in os.environ:
        # alone: a free port, not the default 29500 that a neighbour's job may hold (we would join its store)
        import dataclasses
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            env = dataclasses.replace(env, master_addr="127.0.0.1", master_port=s.getsockname()[1])
    env.export()   # mpirun/srun-started ranks: torch.distributed reads these
    # A wrong or unreachable master is one clear line after LINKBERT_RENDEZVOUS_TIMEOUT seconds, not torch's
    # silent 30-minute store retry. (Collectives keep DeepSpeed's long timeout: ZeRO-3 saves can be slow.)
    dist_env.wait_for_master(env)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo",
                               auto_mpi_discovery=False, verbose=False)
    return env


def _tokenizer_dir(cfg: RunConfig, data: PretrainData) -> Path | None:
    """Where the tokenizer files live: data.tokenizer, else --init-from, else the manifest's path."""
    cands = [cfg.data.tokenizer, cfg.model.init_from]
    tok = data.datasets[0].manifest.get("tokenizer")
    base = data.datasets[0].path
    if isinstance(tok, dict):
        cands += [tok.get("path") and base / tok["path"], tok.get("source")]
    elif isinstance(tok, str):
        cands.append(base / tok)
    for c in cands:
        if c and Path(c).is_dir() and any((Path(c) / n).is_file() for n in ckpt.TOKENIZER_FILES):
            return Path(c)
    return None


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


def _flops_fn(config, device, precision: str, mask_prob: float):
    """(FLOPs per token at a sequence length, peak FLOP/s of one device) from pretrain.flops."""
    try:
        from pretrain.flops import flops_per_token, peak_flops
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        peak = peak_flops(device, dtype)
        return (lambda seq_len: flops_per_token(config, seq_len, masked_fraction=mask_prob)), peak
    except Exception:   # no FLOP model: MFU is reported as null rather than guessed
        return None, None


def train(cfg: RunConfig) -> int:
    """Run (or resume) the job. Returns 0 on success or on a preemption save."""
    logging.basicConfig(level=logging.INFO, format="[linkbert-pretrain] %(message)s")
    device = _device()
    env = _setup_distributed(device)
    import deepspeed
    import torch.distributed as dist
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank != 0:
        log.setLevel(logging.WARNING)
    stop = StopFlag()
    t, out = cfg.train, Path(cfg.train.output)
    if not t.output:
        raise ConfigError("no output folder: pass --output DIR")
    out.mkdir(parents=True, exist_ok=True)
    ds_config, client_opt = fill_ds_config(cfg, world, device.type)
    global_batch = ds_config["train_batch_size"]

    continuation = None
    data = PretrainData(cfg.data.paths, t.seed, cfg.data.weights, cfg.data.held_out, cfg.data.cache_mb,
                        cfg.data.max_predictions, cfg.data.mask_prob, cfg.data.mask_token_prob,
                        cfg.data.random_token_prob)
    tok_dir = _tokenizer_dir(cfg, data)
    if cfg.data.whole_word:
        from pretrain.masking import continuation_table
        if tok_dir is None:
            raise ConfigError("data.whole_word needs the tokenizer's vocabulary: set --data.tokenizer=DIR")
        continuation = continuation_table(tok_dir, data.attrs["vocab_size"])
        data.spec = type(data.spec)(**{**data.spec.__dict__, "continuation": continuation})

    # Same initial weights on every rank; dropout streams differ per rank.
    random.seed(t.seed)
    np.random.seed(t.seed)
    torch.manual_seed(t.seed)
    model = build_model(cfg, data.attrs["vocab_size"], data.attrs["max_seq_len"])
    last = ckpt.latest_complete(out)
    reshard = last is not None and ckpt.needs_reshard(last, world, t.zero_stage)
    if reshard:   # ZeRO state partitioned for another world size: load DeepSpeed's universal format
        ds_config.setdefault("checkpoint", {})["load_universal"] = True
    offload = bool(ds_config.get("zero_optimization", {}).get("offload_optimizer"))
    optimizer, opt_desc, scheduler = None, "DeepSpeed " + ds_config.get("optimizer", {}).get("type", ""), None
    if client_opt:
        optimizer, opt_desc = build_optimizer(cfg, model, device.type, offload)
        if t.zero_stage == 0 and t.precision == "fp32":
            guard_nonfinite(optimizer)
        scheduler = build_scheduler(cfg, optimizer)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config,
        model_parameters=None if client_opt else model.parameters())
    if not client_opt:
        scheduler = build_scheduler(cfg, optimizer)
        engine.lr_scheduler = scheduler
    torch.manual_seed(t.seed * 7919 + rank + 1)
    random.seed(t.seed * 7919 + rank + 1)

    step, consumed, skipped_total, nonfinite_total = 0, 0, 0, 0
    if last is not None:
        universal = ckpt.universal_dir(last) if reshard else None
        if reshard:
            err = [None]
            if rank == 0:
                log.info("re-partitioning %s for ZeRO-%d on %d ranks (DeepSpeed universal checkpoint)", last,
                         t.zero_stage, world)
                try:
                    ckpt.to_universal(last)
                except ckpt.CheckpointError as e:
                    err = [str(e)]
            dist.broadcast_object_list(err, src=0)   # every rank fails with rank 0's message, none hangs
            if err[0]:
                raise ckpt.CheckpointError(err[0])
        meta = ckpt.load(engine, last, rank, universal)
        if reshard:
            dist.barrier()
            if rank == 0:
                shutil.rmtree(universal.parent, ignore_errors=True)
        step, consumed = meta["step"], meta["consumed_samples"]
        skipped_total, nonfinite_total = meta.get("skipped_steps", 0), meta.get("nonfinite_losses", 0)
        if meta.get("world_size") != world:
            log.warning("resuming on %d ranks from a checkpoint written by %s: the data order is kept, "
                        "rank RNG streams %s", world, meta.get("world_size"),
                        "restored" if meta["rng_restored"] else "re-seeded")
        log.info("resuming from %s: step %d, %d samples consumed (epoch %.3f)", last, step, consumed,
                 consumed / data.order.epoch_size)
    else:
        log.info("starting fresh in %s (no complete checkpoint)", out)
    if rank == 0:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    log.info("world %d (launcher %s, %s), batch: micro %d x accum %d x world %d = %d pairs/step, "
             "ZeRO %d, %s, optimizer %s, %d training pairs/epoch (+%d held out), max_seq_len %d, "
             "%.1fM parameters", world, env.launcher, device.type, t.micro_batch_size, t.grad_accum, world,
             global_batch, t.zero_stage, t.precision, opt_desc, data.order.epoch_size,
             len(data.order.held_out()), data.attrs["max_seq_len"],
             sum(p.numel() for p in model.parameters()) / 1e6)

    loader = BatchLoader(data, t.micro_batch_size, rank, world, start=consumed, prefetch=cfg.data.prefetch)
    writer = MetricsWriter(out, step, t.max_steps, cfg.metrics.tensorboard, cfg.metrics.progress) if rank == 0 else None
    flops_fn, peak = _flops_fn(model.config, device, t.precision, cfg.data.mask_prob)
    # a GPU per rank; on CPU the ranks of a node share its cores, whose peak counts once per node
    peak_total = (peak or 0) * (world if device.type == "cuda" else max(1, world // env.local_world_size))
    model_config = model.config.to_dict()

    def meta_for(s):
        return {"step": s, "consumed_samples": loader.next_position, "world_size": world,
                "zero_stage": t.zero_stage, "precision": t.precision, "skipped_steps": skipped_total,
                "nonfinite_losses": nonfinite_total, "model_config": model_config, "config": cfg.to_dict(),
                "epoch_size": data.order.epoch_size}

    def save(s):
        return ckpt.save(engine, out, s, meta_for(s), rank, dist.barrier, tok_dir, cfg.checkpoint.keep_last)

    def export(folder, dest):
        if rank == 0:
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            ckpt.export_hf(folder, tmp)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
            log.info("Hugging Face export: %s", dest)
        dist.barrier()

    consecutive_skips, last_saved, exit_reason = 0, step if last is not None else -1, "done"
    try:
        while step < t.max_steps:
            t0 = time.perf_counter()
            engine.train()
            # loss, mlm, rel, rel_correct, rel_count, tokens, nonfinite micro-batches, stop flag
            sums = torch.zeros(8, dtype=torch.float64)
            lr = scheduler.get_last_lr()[0] if scheduler is not None else cfg.optim.lr
            seq_len_sum = 0
            grad_norm = None
            for micro in range(t.grad_accum):
                b = next(loader)
                outp = engine(**b.to(device))
                loss = outp.loss
                if step + 1 in t.nan_steps:
                    loss = loss * float("nan")
                engine.backward(loss)
                if t.zero_stage == 0 and micro == t.grad_accum - 1:
                    grad_norm = _grad_norm(engine.module)   # DeepSpeed reports none without ZeRO
                engine.step()
                lv = loss.detach().float()
                finite = bool(torch.isfinite(lv))
                sums[6] += 0 if finite else 1
                if finite:
                    sums[0] += lv.item()
                    sums[1] += outp.mlm_loss.detach().float().item()
                    sums[2] += outp.relation_loss.detach().float().item()
                rel = b.tensors["relation_labels"]
                sums[3] += (outp.relation_logits.detach().argmax(-1).cpu() == rel).sum().item()
                sums[4] += len(rel)
                sums[5] += b.n_tokens
                seq_len_sum += b.tensors["input_ids"].shape[1]
            sums[7] = 1.0 if stop.signum else 0.0
            dist.all_reduce(sums)
            step += 1
            applied = engine.was_step_applied()
            nonfinite = int(sums[6].item())
            nonfinite_total += nonfinite
            if not applied:
                skipped_total += 1
                consecutive_skips += 1
            else:
                consecutive_skips = 0
            dt = time.perf_counter() - t0
            ev = {}
            if cfg.metrics.eval_every and step % cfg.metrics.eval_every == 0 and step != t.max_steps:
                ev = evaluate(engine, data, cfg, rank, world, device)
            if rank == 0 and (step % cfg.metrics.log_every == 0 or step == t.max_steps or ev):
                n_ok = max(1.0, world * t.grad_accum - nonfinite)
                tokens = sums[5].item()
                rec = {"step": step, "loss": sums[0].item() / n_ok if nonfinite == 0 else float("nan"),
                       "mlm_loss": sums[1].item() / n_ok, "relation_loss": sums[2].item() / n_ok,
                       "relation_acc": sums[3].item() / max(1.0, sums[4].item()), "lr": lr,
                       "grad_norm": _float(grad_norm if t.zero_stage == 0 else engine.get_global_grad_norm()), "loss_scale": _loss_scale(engine),
                       "tokens_per_s": tokens / dt, "samples_per_s": global_batch / dt,
                       "consumed_samples": loader.next_position, "skipped": not applied,
                       "skipped_total": skipped_total, "nonfinite_losses": nonfinite_total,
                       "step_time_s": dt, "mfu": None, "peak_mem_mb": _peak_mem_mb(device)}
                if flops_fn is not None and peak:
                    mean_len = seq_len_sum / t.grad_accum
                    rec["mfu"] = tokens * flops_fn(int(mean_len)) / dt / peak_total
                rec.update(ev)
                writer.log(rec)
            if consecutive_skips >= t.max_consecutive_skips:
                raise TrainingError(f"{consecutive_skips} optimizer steps in a row were skipped (non-finite loss "
                                    f"or fp16 overflow) at step {step}; lower --lr, use --precision bf16, or "
                                    f"raise --train.max_consecutive_skips")
            if sums[7].item() > 0:
                log.info("signal received: saving at step %d and exiting", step)
                save(step)
                exit_reason = "preempted"
                break
            if cfg.checkpoint.save_every and step % cfg.checkpoint.save_every == 0 and step != t.max_steps:
                save(step)
                last_saved = step
                if cfg.checkpoint.hf_every and step % cfg.checkpoint.hf_every == 0:
                    export(ckpt.ckpt_root(out) / ckpt.tag_for(step), out / f"hf-step{step}")
        if exit_reason == "done":
            ev = evaluate(engine, data, cfg, rank, world, device)
            if rank == 0:
                log.info("held-out eval at step %d: mlm_loss %.4f, relation_acc %.4f (%d pairs; recall %s)",
                         step, ev["eval_mlm_loss"], ev["eval_relation_acc"], ev["eval_pairs"],
                         ", ".join(f"{n} {ev['eval_recall_' + n]:.2f}" for n in RELATION_NAMES))
                (out / "eval.json").write_text(json.dumps({"step": step, **ev}, indent=2) + "\n")
            folder = save(step) if last_saved != step else ckpt.ckpt_root(out) / ckpt.tag_for(step)
            if cfg.checkpoint.export_final:
                export(folder, out / "hf")
            log.info("finished %d steps; checkpoint %s; skipped steps %d, non-finite losses %d", step, folder,
                     skipped_total, nonfinite_total)
    finally:
        loader.close()
        data.close()
        if writer is not None:
            writer.close()
    dist.barrier()
    dist.destroy_process_group()
    return 0


@torch.no_grad()
def evaluate(engine, data: PretrainData, cfg: RunConfig, rank: int, world: int, device) -> dict:
    """MLM loss, relation accuracy and per-relation recall on the held-out pairs (every rank the same
    number of batches)."""
    import torch.distributed as dist
    engine.eval()
    k = len(RELATION_NAMES)
    # mlm_loss * masked, masked, relation correct, pairs, then correct and pairs per relation
    sums = torch.zeros(4 + 2 * k, dtype=torch.float64)
    for b in data.eval_batches(cfg.train.micro_batch_size, rank, world, cfg.metrics.eval_batches):
        outp = engine(**b.to(device))
        n = (b.tensors["masked_labels"] != -100).sum().item()
        labels = b.tensors["relation_labels"]
        hit = outp.relation_logits.argmax(-1).cpu() == labels
        sums[0] += outp.mlm_loss.float().item() * n
        sums[1] += n
        sums[2] += hit.sum().item()
        sums[3] += len(labels)
        sums[4:4 + k] += torch.bincount(labels[hit], minlength=k).double()
        sums[4 + k:] += torch.bincount(labels, minlength=k).double()
    dist.all_reduce(sums)
    engine.train()
    out = {"eval_mlm_loss": sums[0].item() / max(1.0, sums[1].item()),
           "eval_relation_acc": sums[2].item() / max(1.0, sums[3].item()), "eval_pairs": int(sums[3].item())}
    for i, name in enumerate(RELATION_NAMES):   # recall of each relation: which ones the head tells apart
        out[f"eval_recall_{name}"] = sums[4 + i].item() / max(1.0, sums[4 + k + i].item())
    return out


def _grad_norm(module) -> float:
    """Pre-clipping global L2 norm of the (already averaged) gradients, as DeepSpeed's ZeRO reports it."""
    sq = sum(float(p.grad.float().pow(2).sum()) for p in module.parameters() if p.grad is not None)
    return math.sqrt(sq)


def _peak_mem_mb(device) -> float:
    """Peak accelerator memory on CUDA; the process's peak RSS on CPU (rank 0's)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _float(x):
    if x is None:
        return None
    x = float(x.item() if torch.is_tensor(x) else x)
    return x if math.isfinite(x) else None


def _loss_scale(engine):
    if not engine.fp16_enabled():
        return None
    opt = engine.optimizer
    for name in ("cur_scale", "loss_scale"):
        v = getattr(opt, name, None)
        if v is not None:
            return _float(v)
    return None

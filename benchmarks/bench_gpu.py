"""The GPU check (`make gpu-check`): is the CUDA path right, and how fast is it? One H100/H200, < 10 min.

Sections (each independent: one that fails or raises does not hide the others):
  0 compile   every Triton kernel compiled for sm_80/sm_90 in fp32/bf16/fp16; registers/spills/shared
  1 env       versions, GPU, peak FLOP/s, what the model selects (attention, kernels, LayerNorm) and why
  2 kernels   each Triton kernel vs float64 and its PyTorch twin at real shapes; timed with CUDA events;
              the faster linear-CE implementation (triton vs chunked) printed
  3 parity    bf16 ragged batch: unpadded (flash varlen) vs padded SDPA vs transformers BertForPreTraining
  4 trainer   the CLI under torchrun on NCCL: ZeRO-2 bf16 (+ resume), ZeRO-2 fp16, ZeRO-3 bf16,
              ZeRO-0 fp32, ZeRO-2 offload; HF export loaded by transformers; one SLURM-style launch
  5 speed     non-pad tokens/s and MFU, BERT-base/large bf16 at 128/512, beside transformers (SDPA)
A final table; exit 1 if any section failed; everything also goes to --json.

  python benchmarks/bench_gpu.py --json gpu_check.json             # on a GPU
  python benchmarks/bench_gpu.py --device cpu --tiny               # smoke run of every section on a CPU
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pretrain.faults import NAN_STEPS_ENV  # noqa: E402  (light: no torch import)

sys.path.insert(0, str(ROOT / "benchmarks"))

SECTIONS = ("compile", "env", "kernels", "parity", "trainer", "speed")


def log(msg: str = "") -> None:
    print(msg, flush=True)


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("TRITON_INTERPRET", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_child(cmd, timeout, env=None, cwd=None) -> tuple[int, str]:
    """A child under a timeout; its whole process group is killed on expiry."""
    p = subprocess.Popen(cmd, env=env or child_env(), cwd=cwd or ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        out, _ = p.communicate()
        return 124, out + f"\n[timed out after {timeout}s]"


# ------------------------------------------------------------------------------------------ sections
def section_compile(args, device) -> dict:
    code = ("import json; from pretrain.kernels import aot; rows = aot.table(); "
            "print(aot.format_table(rows)); print('JSON' + json.dumps(rows))")
    rc, out = run_child([sys.executable, "-c", code], timeout=900, env=child_env(TRITON_DEFAULT_FP_FUSION=1))
    if "JSON" not in out:
        return {"ok": False, "reason": f"compile child exited {rc}: {out.strip().splitlines()[-1:]}"}
    table, payload = out.split("JSON", 1)
    log(table.rstrip())
    rows = json.loads(payload)
    bad = [r for r in rows if "error" in r or r.get("spill")]
    archs = sorted({r["arch"] for r in rows})
    return {"ok": not bad and archs == ["sm_80", "sm_90"], "rows": rows,
            "reason": f"{len(rows)} compilations ({', '.join(archs)}), {len(bad)} with an error or a spill"}


def section_env(args, device) -> dict:
    import torch
    import transformers

    from pretrain import flops, modeling
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "device": str(device)}
    for mod in ("triton", "deepspeed", "flash_attn", "apex"):
        try:
            info[mod] = getattr(__import__(mod), "__version__", "installed")
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            info[mod] = f"missing ({type(e).__name__})"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1),
                    capability=f"{p.major}.{p.minor}", gpus=torch.cuda.device_count())
    info["peak_tflops_bf16"] = flops.peak_flops(device, torch.bfloat16) / 1e12
    info["peak_tflops_fp32"] = flops.peak_flops(device, torch.float32) / 1e12
    info["selection_bf16"] = modeling.selection(None, device, torch.bfloat16)
    for k, v in info.items():
        log(f"  {k:<18} {v}")
    return {"ok": True, "info": info, "reason": info.get("gpu", "no GPU")}


def section_kernels(args, device) -> dict:
    import gpu_numerics
    return gpu_numerics.kernels_section(device, args.tiny, lambda m: log(m))


def section_parity(args, device) -> dict:
    import gpu_numerics
    return gpu_numerics.parity_section(device, args.tiny, lambda m: log(m))


def _metrics(out: Path) -> list[dict]:
    f = out / "metrics.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []


def _trainer_dry_run(args, work: Path, common: list, cases: list, case_env: dict) -> dict:
    """Every trainer command line of the check parses with today's CLI (no process is started)."""
    import shutil

    from pretrain.cli import config_from_args
    results, bad = {}, []
    for name, extra in cases:
        try:
            cfg, _ = config_from_args([*common, "--output", str(work / name), *extra])
            results[name] = {"zero_stage": cfg.train.zero_stage, "precision": cfg.train.precision,
                             "env": case_env.get(name, {})}
        except SystemExit as e:
            bad.append(f"{name}: the CLI refuses these flags (exit {e.code})")
        except Exception as e:  # noqa: BLE001 - a config error is a failed check, not a crash
            bad.append(f"{name}: {type(e).__name__}: {e}")
    log(f"  dry run: {len(results)} command lines parse" + (f"; {bad}" if bad else ""))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return {"ok": not bad, "runs": results, "reason": "dry run: " + ("; ".join(bad) or "flags parse")}


def _judge_trainer_run(name: str, rc: int, text: str, work: Path, first: str, steps_save: tuple[int, int],
                       resume) -> dict:
    """One trainer run's figures and problems: steps done, fp16 loss scaling, and for the first case the
    resumed run's losses and the HF export."""
    steps, save = steps_save
    out = work / name
    recs = [r for r in _metrics(out) if "loss" in r]
    r = {"rc": rc, "steps": len(recs), "final_loss": recs[-1]["loss"] if recs else None}
    problems = []
    if rc != 0 or len(recs) != steps:
        problems.append(f"exit {rc}, {len(recs)}/{steps} steps: {text.strip().splitlines()[-3:]}")
    if name == "zero2_fp16" and recs:
        scales = [x.get("loss_scale") for x in recs if x.get("loss_scale")]
        skipped = recs[-1].get("skipped_total", 0)
        r.update(loss_scales=scales, skipped_total=skipped)
        if not (scales and min(scales) < scales[0] and skipped >= 1):
            problems.append(f"fp16: loss scale {scales[:3]}..{scales[-1:]}, skipped {skipped}")
    if name == first and resume is not None:
        rc2, text2 = resume
        a = [x["loss"] for x in recs][save:]
        b = [x["loss"] for x in _metrics(work / f"{first}_resumed") if "loss" in x][save:]
        r["resume_max_diff"] = max((abs(x - y) for x, y in zip(a, b)), default=None)
        # fp32: equal to 1e-5. Half precision on a GPU: the first resumed step starts from the same
        # state, but atomics in attention backward kernels may round later steps differently.
        tol = 1e-5 if "fp32" in first else 2e-3
        r["resume_tolerance"] = tol
        if rc2 != 0 or len(a) != len(b) or r["resume_max_diff"] is None or r["resume_max_diff"] > tol:
            problems.append(f"resume: exit {rc2}, losses {a} vs {b}: {text2.strip().splitlines()[-2:]}")
        try:
            from transformers import AutoModelForMaskedLM
            AutoModelForMaskedLM.from_pretrained(out / "hf")
            r["hf_export_loads"] = True
        except Exception as e:  # noqa: BLE001
            problems.append(f"HF export does not load: {type(e).__name__}: {e}")
    r["problems"] = problems
    return r


def section_trainer(args, device) -> dict:
    """The CLI as users start it; only flags that exist in pretrain/cli.py today."""
    import shutil

    from tests.pretrain.engine_helpers import synthetic_dataset
    from tests.procs import free_port
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    data = synthetic_dataset(work / "data", n=160 if args.tiny else 600, max_seq_len=32 if not args.tiny else 16,
                             vocab=60)
    steps, save = (4, 2) if args.tiny else (10, 5)
    common = ["--data", str(data), "--model", "tiny", "--micro-batch-size", "8", "--lr", "1e-3", "--seed", "1",
              "--max-steps", str(steps), "--save-every", str(save), "--metrics.progress=false",
              "--metrics.tensorboard=false", "--data.held_out=32", "--metrics.eval_batches=2"]
    ds_env = {"DS_ACCELERATOR": "cuda" if device.type == "cuda" else "cpu", "OMP_NUM_THREADS": 2}
    full = [("zero2_bf16", ["--zero-stage", "2", "--precision", "bf16"]),
            ("zero2_fp16", ["--zero-stage", "2", "--precision", "fp16"]),
            ("zero3_bf16", ["--zero-stage", "3", "--precision", "bf16"]),
            ("zero0_fp32", ["--zero-stage", "0", "--precision", "fp32"]),
            ("zero2_offload", ["--zero-stage", "2", "--precision", "bf16", "--deepspeed-config",
                               str(ROOT / "ds_configs" / "zero2_offload.json")])]
    # fault injection (pretrain.faults): the fp16 case's loss is poisoned at steps 3 and 4
    case_env = {"zero2_fp16": {NAN_STEPS_ENV: "3,4"}}
    cases = [("zero2_fp32", ["--zero-stage", "2", "--precision", "fp32"])] if args.tiny else full
    timeout = 300 if args.tiny else 360  # offload JIT-builds DeepSpeed's CPUAdam on first use
    results, bad = {}, []
    if args.trainer_dry_run:  # the flags only: every command line parses with today's CLI
        return _trainer_dry_run(args, work, common, cases + full + [("slurm", ["--zero-stage", "2"])], case_env)

    import torch
    nproc = 2 if device.type == "cuda" and torch.cuda.device_count() >= 2 else 1

    def torchrun(out, extra, name=""):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(free_port()), "-m", "pretrain.cli", *common, "--output", str(out), *extra]
        return run_child(cmd, timeout, env=child_env(**ds_env, **case_env.get(name, {})))

    def slurm(out):
        """One task started the way srun starts it: no torchrun, no LOCAL_RANK/RANK/WORLD_SIZE."""
        env = child_env(**ds_env, SLURM_PROCID=0, SLURM_LOCALID=0, SLURM_NTASKS=1, SLURM_STEP_ID=0,
                        SLURM_STEP_NUM_TASKS=1, SLURM_STEP_NODELIST="localhost", SLURM_JOB_ID=1,
                        MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port())
        for k in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
            env.pop(k, None)
        return run_child([sys.executable, "-m", "pretrain.cli", *common, "--output", str(out), "--zero-stage", "2",
                          "--precision", "bf16" if device.type == "cuda" else "fp32"], timeout, env=env)

    # The runs are small and start-up bound: on a GPU they share it, several at a time.
    from concurrent.futures import ThreadPoolExecutor
    jobs = {name: (lambda out=work / name, extra=extra, name=name: torchrun(out, extra, name)) for name, extra in cases}
    jobs["slurm"] = lambda: slurm(work / "slurm")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=6 if device.type == "cuda" else 1) as pool:
        done = dict(zip(jobs, pool.map(lambda f: f(), jobs.values())))
    first = cases[0][0]
    resumed = work / f"{first}_resumed"
    rc_first = done[first][0]
    if rc_first == 0:  # resume from the step-`save` checkpoint equals the uninterrupted run
        shutil.copytree(work / first, resumed)
        shutil.rmtree(resumed / "checkpoints" / f"step{steps}", ignore_errors=True)
        shutil.rmtree(resumed / "hf", ignore_errors=True)
        done["resume"] = torchrun(resumed, cases[0][1])
    log(f"  {len(done)} runs in {time.perf_counter() - t0:.0f} s ({nproc} process(es) each)")
    for name, (rc, text) in done.items():
        if name == "resume":
            continue
        r = _judge_trainer_run(name, rc, text, work, first, (steps, save), done.get("resume"))
        results[name] = r
        bad += [f"{name}: {p}" for p in r["problems"]]
        log(f"  {name:<14} {'ok' if not r['problems'] else 'FAIL'}  {r['steps']} steps, loss {r['final_loss']}"
            + (f", resume diff {r['resume_max_diff']}" if "resume_max_diff" in r else "")
            + ("".join(f"\n      {p}" for p in r["problems"])))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return {"ok": not bad, "runs": results, "reason": "; ".join(bad)[:2000] if bad else f"{len(results)} runs"}


def section_speed(args, device) -> dict:
    import torch
    from gpu_numerics import _ragged_batch
    from transformers import BertForPreTraining

    from pretrain import flops, modeling
    if args.tiny:
        plan = [("tiny", 32, 8)]
        steps, warm = 2, 1
    else:
        plan = [("base", 128, 256), ("base", 512, 64), ("large", 128, 256), ("large", 512, 64)]
        steps, warm = 10, 3
    dtype = torch.bfloat16
    peak = flops.peak_flops(device, dtype)
    rows, notes = [], []
    for preset, s, b in plan:
        cfg = modeling.model_config(preset, max_position_embeddings=max(512, s))
        g = torch.Generator().manual_seed(0)
        p = int(0.15 * s) + 1
        ids, mask, tt, pos, labels, rel = _ragged_batch(b, s, cfg.vocab_size, device, g, p)
        tokens = int(mask.sum())
        torch.manual_seed(0)
        ours = modeling.LinkBertForPreTraining(cfg).to(device=device, dtype=dtype).train()
        hf_cfg = modeling.model_config(preset, attn_implementation="sdpa", max_position_embeddings=max(512, s))
        hf = BertForPreTraining(hf_cfg)
        hf.cls.seq_relationship = torch.nn.Linear(cfg.hidden_size, modeling.NUM_RELATIONS)
        hf.load_state_dict(ours.state_dict(), strict=True)
        hf = hf.to(device=device, dtype=dtype).train()
        dense = torch.full_like(ids, -100).scatter(1, pos, labels)
        fused = device.type == "cuda"
        # the unpadding metadata the trainer's loader gives the model (computed here once, outside the
        # timed steps): without it the unpadded path would do nonzero() and lens.max(), two host syncs a step
        lens = mask.sum(1).cpu()
        unpad = {"cu_seqlens": torch.nn.functional.pad(lens.cumsum(0, dtype=torch.int32), (1, 0)).to(device),
                 "max_seqlen": int(lens.max()),
                 "unpad_indices": mask.reshape(-1).bool().nonzero().squeeze(1)}
        n_masked = int((labels != -100).sum())

        batch = (ids, mask, tt, pos, labels, rel, dense)

        def step_ours(m=ours, opt=torch.optim.AdamW(ours.parameters(), lr=1e-5, fused=fused), batch=batch,
                      unpad=unpad):
            ids, mask, tt, pos, labels, rel, _ = batch
            out = m(ids, mask, tt, masked_positions=pos, masked_labels=labels, relation_labels=rel, **unpad)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def step_hf(m=hf, opt=torch.optim.AdamW(hf.parameters(), lr=1e-5, fused=fused), batch=batch):
            ids, mask, tt, _, _, rel, dense = batch
            out = m(input_ids=ids, attention_mask=mask, token_type_ids=tt)
            loss = torch.nn.functional.cross_entropy(out.prediction_logits.float().flatten(0, 1), dense.flatten())
            loss = loss + torch.nn.functional.cross_entropy(out.seq_relationship_logits.float(), rel)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        from gpu_numerics import time_ms
        ms_ours = time_ms(step_ours, device, steps, warm)
        ms_hf = time_ms(step_hf, device, steps, warm)
        # model FLOPs of the batch actually run: each sequence's own length in attention, the masked labels
        # present in the sparse head (ours) or every non-pad token in the dense one (HF)
        f_ours = flops.batch_flops(cfg, lens.tolist(), n_masked)
        f_hf = flops.batch_flops(cfg, lens.tolist(), tokens)
        r = {"model": preset, "seq": s, "batch": b, "tokens": tokens, "ours_tok_s": tokens / ms_ours * 1e3,
             "hf_tok_s": tokens / ms_hf * 1e3, "ratio": ms_hf / ms_ours,
             "ours_mfu": f_ours / (ms_ours * 1e-3) / peak, "hf_mfu": f_hf / (ms_hf * 1e-3) / peak,
             "attention": modeling.selection(ours, device, dtype)["attention"]}
        rows.append(r)
        log(f"  {preset:<5} S={s:<4} B={b:<4} ours {r['ours_tok_s']:>10.0f} tok/s (MFU {r['ours_mfu']:.1%}, "
            f"{r['attention']})  HF {r['hf_tok_s']:>10.0f} tok/s (MFU {r['hf_mfu']:.1%})  x{r['ratio']:.2f}")
        del ours, hf
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.tiny:
        base = next(r for r in rows if r["model"] == "base" and r["seq"] == 128)
        large = next(r for r in rows if r["model"] == "large" and r["seq"] == 128)
        if base["ratio"] < 1.5:
            notes.append(f"goal missed: base@128 {base['ratio']:.2f}x HF (goal >= 1.5x)")
        if large["ours_mfu"] < 0.5:
            notes.append(f"goal missed: large@128 MFU {large['ours_mfu']:.1%} (goal >= 50%)")
    for n in notes:
        log(f"  {n}")
    return {"ok": True, "rows": rows, "goals_missed": notes,
            "reason": "; ".join(notes) if notes else ("goals met" if not args.tiny else "smoke")}


# -------------------------------------------------------------------------------------------- driver
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    ap.add_argument("--tiny", action="store_true", help="small shapes: a smoke run (what the CPU test uses)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument("--json", help="write every result here")
    ap.add_argument("--trainer-dry-run", action="store_true",
                    help="trainer section: only check that each command line parses (no runs)")
    ap.add_argument("--workdir", help="keep the trainer runs here (default: a temporary folder, deleted)")
    args = ap.parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}: use {SECTIONS}")
    cuda = _cuda_available()
    dev_name = args.device or ("cuda" if cuda else "cpu")
    reason_no_gpu = None
    if dev_name == "cpu":
        # The Triton kernels run interpreted on CPU tensors; triton reads this when kernels are defined.
        os.environ["TRITON_INTERPRET"] = "1"
        if not args.tiny:
            reason_no_gpu = "no CUDA device (run with --device cpu --tiny for a smoke run)"
    elif not cuda:
        ap.error("--device cuda: no CUDA device visible")
    import torch
    device = torch.device(dev_name)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "device": dev_name, "tiny": args.tiny,
              "sections": {}}
    t_all = time.perf_counter()
    for name in SECTIONS:
        if name not in wanted:
            continue
        log(f"\n== {SECTIONS.index(name)} {name}")
        t0 = time.perf_counter()
        if reason_no_gpu and name not in ("compile", "env"):
            res = {"status": "skip", "reason": reason_no_gpu}
        else:
            try:
                res = globals()[f"section_{name}"](args, device)
                res["status"] = "pass" if res.pop("ok") else "FAIL"
            except Exception as e:  # noqa: BLE001 - a broken section is a failed section, the rest go on
                traceback.print_exc()
                res = {"status": "FAIL", "reason": f"{type(e).__name__}: {e}"[:1000]}
        res["seconds"] = round(time.perf_counter() - t0, 1)
        report["sections"][name] = res
        log(f"-- {name}: {res['status']} ({res['seconds']} s) {res.get('reason', '')}")
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    log("\n== summary")
    for name, res in report["sections"].items():
        log(f"  {name:<8} {res['status']:<5} {res['seconds']:>7.1f} s  {str(res.get('reason', ''))[:150]}")
    failed = [n for n, r in report["sections"].items() if r["status"] == "FAIL"]
    log(f"  total {report['seconds']} s; {'FAILED: ' + ', '.join(failed) if failed else 'no section failed'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
        log(f"  results in {args.json}")
    return 1 if failed else 0


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())

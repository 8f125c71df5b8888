"""Sections 2 and 3 of the GPU check (benchmarks/bench_gpu.py): Triton kernels against a float64 truth
and their PyTorch twins; the model's attention paths and transformers' BertForPreTraining in bf16.

Both run on CUDA at real shapes, or with ``tiny=True`` on a CPU (kernels under TRITON_INTERPRET=1,
which bench_gpu sets before triton is imported) so the code cannot rot where no GPU is present.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# An error bound when the twin itself is exact (fp32): half precision gets its rounding unit's reach.
FLOOR = {"fp32": 1e-4, "bf16": 3e-2, "fp16": 5e-3}


def rel_err(a: torch.Tensor, truth: torch.Tensor) -> float:
    a, truth = a.detach().double(), truth.detach().double()
    return ((a - truth).abs().max() / truth.abs().max().clamp_min(1e-30)).item()


def time_ms(fn, device: torch.device, iters: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters


def _fwd_bwd(fn, leaves, up):
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in leaves]
    out = fn(*leaves)
    out.backward(up.to(out.dtype))
    return out.detach(), [t.grad for t in leaves if t.requires_grad]


def _compare(name, dtype_name, fast, twin, leaves, up, device, iters):
    """fast (Triton) and twin (PyTorch) in ``dtype``, each against float64 on the same rounded inputs."""
    out_f, g_f = _fwd_bwd(fast, leaves, up)
    out_t, g_t = _fwd_bwd(twin, leaves, up)
    out_x, g_x = _fwd_bwd(twin, [t.double() if t.is_floating_point() else t for t in leaves], up.double())
    names = ["out"] + [f"grad{i}" for i in range(len(g_x))]
    finite = all(torch.isfinite(t).all().item() for t in [out_f, *g_f])
    errs = {}
    ok = finite
    for n, f, t, x in zip(names, [out_f, *g_f], [out_t, *g_t], [out_x, *g_x]):
        ef, et = rel_err(f, x), rel_err(t, x)
        errs[n] = (ef, et)
        ok &= ef <= max(2.0 * et, FLOOR[dtype_name])
    del out_x, g_x

    def step(fn):  # leaves made once: the timed loop is the op's forward + backward only
        own = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in leaves]
        upstream = up.to(out_f.dtype)

        def run():
            for t in own:
                t.grad = None
            fn(*own).backward(upstream)
        return run
    ms_f = time_ms(step(fast), device, iters)
    ms_t = time_ms(step(twin), device, iters)
    worst = max(errs.values(), key=lambda e: e[0])
    return {"name": name, "dtype": dtype_name, "ok": bool(ok), "finite": finite,
            "err_triton": worst[0], "err_torch": worst[1], "errors": errs,
            "ms_triton": ms_f, "ms_torch": ms_t, "speedup": ms_t / ms_f if ms_f else float("nan")}


def kernels_section(device: torch.device, tiny: bool, log) -> dict:
    from pretrain.kernels import reference, triton_ops
    if tiny:
        rows, hiddens, vocab, ce_rows, iters, chunk = 64, (48,), 300, 40, 1, 128
        dtypes = ("fp32", "fp16")  # the interpreter's tl.dot has no bf16
    else:
        rows, hiddens, vocab, ce_rows, iters, chunk = 16384, (768, 1024), 30522, 2458, 10, 8192
        dtypes = ("fp32", "bf16", "fp16")
    g = torch.Generator(device="cpu").manual_seed(0)
    results = []
    for dn in dtypes:
        dt = DTYPES[dn]
        for h in hiddens:
            inter = 4 * h

            def rnd(*shape, scale=1.0, dt=dt):
                return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dt)
            cases = [
                ("bias_gelu", triton_ops.bias_gelu, reference.bias_gelu,
                 [rnd(rows, inter, scale=2.0), rnd(inter)], rnd(rows, inter)),
                ("add_layer_norm", lambda *a: triton_ops.add_layer_norm(*a, 1e-12),
                 lambda *a: reference.add_layer_norm(*a, 1e-12),
                 [rnd(rows, h, scale=3.0), rnd(rows, h), rnd(h), rnd(h)], rnd(rows, h)),
            ]
            labels = torch.randint(0, vocab, (ce_rows,), generator=g)
            labels[::9] = -100
            labels[1] = vocab - 1
            labels = labels.to(device)
            up = torch.tensor(1.0 / int((labels != -100).sum()), device=device)
            ce_leaves = [rnd(ce_rows, h), rnd(vocab, h, scale=0.05), rnd(vocab, scale=0.1)]
            cases.append(("linear_ce[triton]",
                          lambda a, b, c, y=labels: triton_ops.linear_cross_entropy(a, b, c, y, chunk),
                          lambda a, b, c, y=labels: reference.linear_cross_entropy_chunked(a, b, c, y, chunk),
                          ce_leaves, up))
            for name, fast, twin, leaves, upstream in cases:
                r = _compare(name, dn, fast, twin, leaves, upstream, device, iters)
                r["hidden"] = h
                results.append(r)
                log(f"  {name:<18} {dn:<5} H={h:<5} err triton {r['err_triton']:.2e} torch {r['err_torch']:.2e}"
                    f"  {r['ms_triton']:8.3f} ms vs {r['ms_torch']:8.3f} ms ({r['speedup']:.2f}x)"
                    f"  {'ok' if r['ok'] else 'FAIL'}")
            ce = results[-1]
            faster = "triton" if ce["ms_triton"] <= ce["ms_torch"] else "chunked"
            log(f"  linear_ce {dn} H={h}: faster = {faster} (LINKBERT_CE={faster})")
            ce["faster"] = faster
    bad = [f"{r['name']} {r['dtype']} H={r['hidden']}" for r in results if not r["ok"]]
    return {"ok": not bad, "failed": bad, "results": results,
            "reason": f"{len(bad)} kernel checks failed: {bad}" if bad else f"{len(results)} kernel checks"}


def _ragged_batch(b, s, vocab, device, g, p):
    lens = torch.randint(s // 2, s + 1, (b,), generator=g)
    lens[0] = s
    ids = torch.randint(5, vocab, (b, s), generator=g)
    mask = (torch.arange(s)[None, :] < lens[:, None]).long()
    ids = ids * mask
    tt = torch.zeros_like(ids)
    pos = torch.stack([torch.randperm(int(n) - 1, generator=g)[:p] + 1 for n in lens])
    labels = ids.gather(1, pos)
    labels[1, -1] = -100
    rel = torch.randint(0, 3, (b,), generator=g)
    return [t.to(device) for t in (ids, mask, tt, pos, labels, rel)]


def parity_section(device: torch.device, tiny: bool, log) -> dict:
    """Ours unpadded (flash varlen where installed) and padded (SDPA) vs transformers BertForPreTraining
    (SDPA), all bf16, each against our model in float64 (PyTorch kernels) on the same weights."""
    from transformers import BertForPreTraining

    from pretrain import kernels, modeling
    if tiny:
        dims = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                    vocab_size=300, max_position_embeddings=64)
        b, s = 4, 32
    else:
        dims = dict(num_hidden_layers=4, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                    vocab_size=30522, max_position_embeddings=512)
        b, s = 8, 128
    dims.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    batch = _ragged_batch(b, s, dims["vocab_size"], device, g, p=max(2, int(0.15 * s)))
    ids, mask, tt, pos, labels, rel = batch
    base = modeling.LinkBertForPreTraining(modeling.model_config("tiny", **dims), fused_mlm_loss=True)
    with torch.no_grad():
        for name, prm in base.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                prm.add_(torch.randn_like(prm) * 0.1)
    state = base.state_dict()

    def ours(attention, dtype):
        m = modeling.LinkBertForPreTraining(modeling.model_config("tiny", **dims), attention=attention,
                                            fused_mlm_loss=True)
        m.load_state_dict(state)
        return m.to(device=device, dtype=dtype).train()

    def run_ours(m):
        m.zero_grad()
        out = m(ids, mask, tt, masked_positions=pos, masked_labels=labels, relation_labels=rel)
        out.loss.backward()
        grads = {n: p.grad.detach() for n, p in m.named_parameters() if p.grad is not None}
        return out.last_hidden_state.detach(), out.loss.detach(), grads

    def run_hf():
        cfg = modeling.model_config("tiny", attn_implementation="sdpa", **dims)
        m = BertForPreTraining(cfg)
        m.cls.seq_relationship = torch.nn.Linear(dims["hidden_size"], modeling.NUM_RELATIONS)
        m.load_state_dict(state, strict=True)
        m = m.to(device=device, dtype=torch.bfloat16).train()
        dense = torch.full_like(ids, -100).scatter(1, pos.clamp(min=0), labels)
        out = m(input_ids=ids, attention_mask=mask, token_type_ids=tt, output_hidden_states=True)
        # HF's own loss views the relation logits as 2 classes; the same loss as ours, from its logits:
        loss = F.cross_entropy(out.prediction_logits.float().flatten(0, 1), dense.flatten(), ignore_index=-100) \
            + F.cross_entropy(out.seq_relationship_logits.float(), rel)
        loss.backward()
        grads = {n: p.grad.detach() for n, p in m.named_parameters() if p.grad is not None}
        return out.hidden_states[-1].detach(), loss.detach(), grads

    old = kernels.kernel_mode()
    kernels.set_kernel_mode("torch")
    try:
        truth = run_ours(ours("sdpa", torch.float64))
    finally:
        kernels.set_kernel_mode(old)
    keep = mask.bool()
    top = max(t.abs().max().item() for t in truth[2].values())
    null = {n for n, t in truth[2].items() if t.abs().max().item() < 1e-9 * top}
    runs = {"ours_varlen": run_ours(ours("varlen", torch.bfloat16)),
            "ours_sdpa": run_ours(ours("sdpa", torch.bfloat16)), "hf_sdpa": run_hf()}
    sel = modeling.selection(ours("varlen", torch.bfloat16), device, torch.bfloat16)
    rows = {}
    for name, (hid, loss, grads) in runs.items():
        # Gradients that are zero in exact arithmetic (the key bias: softmax ignores a per-row shift)
        # are rounding noise in any precision; they are left out.
        per = {n: rel_err(grads[n], truth[2][n]) for n in truth[2] if n in grads and n not in null}
        gerr = max(per.values())
        rows[name] = {"hidden": rel_err(hid[keep], truth[0][keep]), "loss": rel_err(loss, truth[1]),
                      "grads": gerr,
                      "finite": bool(torch.isfinite(hid[keep]).all()) and all(
                          torch.isfinite(t).all().item() for t in grads.values())}
        log(f"  {name:<12} rel. error vs float64: hidden {rows[name]['hidden']:.2e}  loss {rows[name]['loss']:.2e}"
            f"  worst grad {gerr:.2e}")
    log(f"  attention of ours_varlen: {sel['attention']} ({sel['attention_why']})")
    hf = rows["hf_sdpa"]
    bad = []
    for name in ("ours_varlen", "ours_sdpa"):
        r = rows[name]
        for k in ("hidden", "loss", "grads"):
            if not r[k] <= max(2.0 * hf[k], 2e-2 if k != "loss" else 1e-2):
                bad.append(f"{name} {k} {r[k]:.2e} vs HF {hf[k]:.2e}")
        if not r["finite"]:
            bad.append(f"{name}: NaN/inf")
    return {"ok": not bad, "errors": rows, "attention": sel["attention"],
            "reason": "; ".join(bad) if bad else "within 2x of transformers' bf16 error"}

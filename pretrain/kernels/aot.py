"""Ahead-of-time compilation of every Triton kernel the model can launch, with no GPU present.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", 80|90, 32))`` runs the real GPU compiler
(the interpreter accepts code it rejects) down to a cubin; cuobjdump, shipped in Triton's NVIDIA
backend, reads registers, stack (spills) and shared memory from it. Block sizes come from
``configs.py``, the same functions the launchers call, at the shapes of BERT-base/large training.
Used by tests/pretrain/test_kernels_compile.py (``make test``) and ``make gpu-check``'s table.
Works with Triton 3.6 (the H200 image) through 3.9 (pinned here): only ASTSource, GPUTarget,
triton.compile and the compiled kernel's ``asm``/``metadata`` are used.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import torch

from . import configs

ARCHS = (80, 90)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# (hidden, intermediate, vocab): BERT-base uncased, BERT-large cased (LinkBERT's vocabularies).
MODEL_SHAPES = ((768, 3072, 30522), (1024, 4096, 28996))
ROWS = (16384, 2048)            # tokens per micro-batch: 128 x 128 and a small batch (other LN bwd config)
MASKED_ROWS = (2458, 300)       # 15% of 16384 tokens; a small batch
_PTR = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16"}


@dataclass
class Job:
    kernel: str
    dtype: torch.dtype
    fn: object
    args: dict        # name -> type string ("*fp32", "i32", "fp32") or (type string, example value)
    launch: configs.Launch

    def key(self):
        return (self.kernel, str(self.dtype), tuple(sorted(self.launch.meta.items())))


def jobs() -> list[Job]:
    """One job per distinct (kernel, dtype, launch configuration) over the shapes above."""
    from . import triton_ops as T
    out: dict = {}

    def add(job):
        out.setdefault(job.key(), job)

    for dt in DTYPES:
        p = _PTR[dt]
        for hidden, inter, vocab in MODEL_SHAPES:
            for rows in ROWS:
                for ncols in (hidden, inter):
                    n = rows * ncols
                    args = {"x_ptr": p, "b_ptr": p, "y_ptr": p, "numel": ("i32", n), "ncols": ("i32", ncols)}
                    add(Job("bias_gelu_fwd", dt, T._bias_gelu_fwd, args, configs.bias_gelu(n)))
                    args = {"dy_ptr": p, "x_ptr": p, "b_ptr": p, "dz_ptr": p, "numel": ("i32", n),
                            "ncols": ("i32", ncols)}
                    add(Job("bias_gelu_bwd", dt, T._bias_gelu_bwd, args, configs.bias_gelu(n)))
                args = {"x_ptr": p, "r_ptr": p, "w_ptr": p, "b_ptr": p, "y_ptr": p, "s_ptr": p,
                        "mean_ptr": "*fp32", "rstd_ptr": "*fp32", "ncols": ("i32", hidden), "eps": "fp32"}
                add(Job("add_ln_fwd", dt, T._add_ln_fwd, args, configs.add_ln_fwd(rows, hidden)))
                args = {"dy_ptr": p, "s_ptr": p, "w_ptr": p, "mean_ptr": "*fp32", "rstd_ptr": "*fp32",
                        "dx_ptr": p, "dw_ptr": "*fp32", "db_ptr": "*fp32", "nrows": ("i32", rows),
                        "ncols": ("i32", hidden)}
                add(Job("add_ln_bwd", dt, T._add_ln_bwd, args, configs.add_ln_bwd(rows, hidden)))
            for n in MASKED_ROWS:
                for ieee in ((True, False) if dt == torch.float32 else (False,)):
                    c = configs.linear_ce_fwd(n, vocab, hidden, dt, ieee=ieee)
                    args = {"h_ptr": p, "w_ptr": p, "b_ptr": p, "labels_ptr": "*i64", "max_ptr": "*fp32",
                            "sum_ptr": "*fp32", "tgt_ptr": "*fp32", "nrows": ("i32", n),
                            "vocab": ("i32", vocab), "hdim": ("i32", hidden), "vspan": ("i32", c.vspan)}
                    c.meta["HAS_BIAS"] = True
                    add(Job("linear_ce_fwd", dt, T._linear_ce_fwd, args, c))
                    chunk = 8192
                    c = configs.linear_ce_bwd(n, chunk, hidden, dt, ieee=ieee)
                    args = {"h_ptr": p, "w_ptr": p, "b_ptr": p, "labels_ptr": "*i64", "lse_ptr": "*fp32",
                            "scale_ptr": "*fp32", "g_ptr": p, "nrows": ("i32", n), "ncols": ("i32", chunk),
                            "hdim": ("i32", hidden), "start": ("i32", 0)}
                    c.meta["HAS_BIAS"] = True
                    add(Job("linear_ce_bwd", dt, T._linear_ce_bwd, args, c))
    return list(out.values())


def _signature(job: Job):
    """Signature, constexprs and divisibility attributes as the JIT would specialise a real launch:
    tensors are 16-byte aligned, integers divisible by 16 are marked so."""
    sig, attrs = {}, {}
    names = job.fn.arg_names
    for i, name in enumerate(names):
        if name in job.launch.constexprs:
            sig[name] = "constexpr"
            continue
        spec = job.args[name]
        typ, value = spec if isinstance(spec, tuple) else (spec, None)
        sig[name] = typ
        if typ.startswith("*") or (value is not None and value % 16 == 0):
            attrs[(i,)] = [["tt.divisibility", 16]]
    missing = set(names) - set(sig)
    assert not missing, f"{job.kernel}: no type for {missing}"
    return sig, dict(job.launch.constexprs), attrs


def compile_job(job: Job, arch: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sig, constexprs, attrs = _signature(job)
    target = GPUTarget("cuda", arch, 32)
    try:
        src = ASTSource(fn=job.fn, signature=sig, constexprs=constexprs, attrs=attrs)
        return triton.compile(src, target=target, options=dict(job.launch.options))
    except Exception:  # noqa: BLE001
        # The divisibility hints' format is Triton-version specific: once more without them. A kernel
        # that cannot compile fails this second time too, with its own message.
        src = ASTSource(fn=job.fn, signature=sig, constexprs=constexprs)
        return triton.compile(src, target=target, options=dict(job.launch.options))


def _tool(name: str) -> str:
    """The binary Triton ships (triton/backends/nvidia/bin), else the CUDA toolkit's on PATH."""
    import shutil

    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if os.access(path, os.X_OK):
        return path
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found in Triton's NVIDIA backend or on PATH")
    return found


def resource_usage(cubin: bytes) -> dict:
    """REG / STACK / SHARED / LOCAL of the cubin's kernel, read by the cuobjdump Triton ships."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True,
                              text=True, check=True, timeout=60).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if not m:
        raise RuntimeError(f"cuobjdump printed no resource line:\n{text}")
    return dict(zip(("regs", "stack", "static_shared", "local"), map(int, m.groups())))


def table(archs=ARCHS) -> list[dict]:
    """Compile every job for every arch. Rows: kernel, dtype, arch, meta, regs, spill bytes (stack +
    local), shared (Triton's dynamic shared memory), or error (the compiler's message)."""
    rows = []
    for job in jobs():
        for arch in archs:
            meta = " ".join(f"{k}={v}" for k, v in sorted(job.launch.meta.items()))
            row = {"kernel": job.kernel, "dtype": str(job.dtype).replace("torch.", ""), "arch": f"sm_{arch}",
                   "meta": meta}
            try:
                k = compile_job(job, arch)
                use = resource_usage(k.asm["cubin"])
                row.update(regs=use["regs"], spill=use["stack"] + use["local"],
                           shared=int(getattr(k.metadata, "shared", 0)) + use["static_shared"])
            except Exception as e:  # noqa: BLE001 - reported per row; the test fails on any
                row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e) else ''}"
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'kernel':<15} {'dtype':<9} {'arch':<6} {'regs':>4} {'spill B':>7} {'shared B':>8}  launch"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['kernel']:<15} {r['dtype']:<9} {r['arch']:<6} COMPILE ERROR {r['error']}")
        else:
            lines.append(f"{r['kernel']:<15} {r['dtype']:<9} {r['arch']:<6} {r['regs']:>4} {r['spill']:>7} "
                         f"{r['shared']:>8}  {r['meta']}")
    return "\n".join(lines)


if __name__ == "__main__":
    import time
    t0 = time.perf_counter()
    result = table()
    print(format_table(result))
    bad = [r for r in result if "error" in r or r["spill"]]
    print(f"{len(result)} compilations in {time.perf_counter() - t0:.1f} s; "
          f"{len(bad)} with a compile error or a spill")
    raise SystemExit(1 if bad else 0)

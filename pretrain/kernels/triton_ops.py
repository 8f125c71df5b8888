"""Triton kernels for the memory-bound parts of BERT, each an autograd.Function.

Written here rather than taken from a library: liger-kernel has GELU/LayerNorm/fused-linear-CE
kernels but only tanh-GELU (BERT uses erf GELU), LayerNorm without the residual add, and its fused
CE chunks over rows and needs a GPU even to import; apex is not installable here. Each op has a
PyTorch twin in reference.py, which tests compare against under TRITON_INTERPRET=1.

Every launch takes its block sizes from a ``*_config`` function below; ``aot.py`` compiles each kernel
for sm_80/sm_90 through the same functions, so what is compiled in the tests is what runs on a GPU.
Numeric constants inside kernels are literals: compiled Triton refuses module-level Python floats.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import configs


def _interpreter_index_compat() -> None:
    """Under TRITON_INTERPRET=1 only: let a scalar kernel argument bound a ``range`` on Triton 3.6 too.

    Triton 3.6's interpreter holds a scalar argument as a one-element array and turns it into an index
    with ``int(array)``, which NumPy 2 refuses ("only 0-dimensional arrays can be converted to Python
    scalars"), so every ``range(.., vspan/hdim, ..)`` here failed; Triton 3.9 squeezes the array first.
    This gives 3.6's interpreter 3.9's conversion, inside the same per-launch patch scope (restored after
    each launch). The kernels' source and the compiled code are untouched."""
    import os
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "squeezes_index", False):
        return

    def patch(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch.squeezes_index = True
    interpreter._patch_lang_tensor = patch


_interpreter_index_compat()


# ---------------------------------------------------------------- bias + GELU (erf), forward and backward
@triton.jit
def _bias_gelu_fwd(x_ptr, b_ptr, y_ptr, numel, ncols, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < numel
    z = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32) + \
        tl.load(b_ptr + offs % ncols, mask=m, other=0.0).to(tl.float32)
    y = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))  # 1/sqrt(2)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bias_gelu_bwd(dy_ptr, x_ptr, b_ptr, dz_ptr, numel, ncols, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < numel
    z = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32) + \
        tl.load(b_ptr + offs % ncols, mask=m, other=0.0).to(tl.float32)
    cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
    pdf = tl.exp(-0.5 * z * z) * 0.3989422804014327  # 1/sqrt(2*pi)
    dz = tl.load(dy_ptr + offs, mask=m, other=0.0).to(tl.float32) * (cdf + z * pdf)
    tl.store(dz_ptr + offs, dz.to(dz_ptr.dtype.element_ty), mask=m)


class BiasGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias):
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        c = configs.bias_gelu(n)
        _bias_gelu_fwd[c.grid](x, bias, y, n, x.shape[-1], **c.meta)
        ctx.save_for_backward(x, bias)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, bias = ctx.saved_tensors
        dz = torch.empty_like(x)
        n = x.numel()
        c = configs.bias_gelu(n)
        _bias_gelu_bwd[c.grid](dy.contiguous(), x, bias, dz, n, x.shape[-1], **c.meta)
        return dz, dz.reshape(-1, x.shape[-1]).sum(0, dtype=torch.float32).to(bias.dtype)


def bias_gelu(x, bias):
    return BiasGelu.apply(x, bias)


# ------------------------------------------------------ residual add + LayerNorm, forward and backward
@triton.jit
def _add_ln_fwd(x_ptr, r_ptr, w_ptr, b_ptr, y_ptr, s_ptr, mean_ptr, rstd_ptr, ncols, eps,
                BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    m = cols < ncols
    base = row.to(tl.int64) * ncols
    s = tl.load(x_ptr + base + cols, mask=m, other=0.0).to(tl.float32) + \
        tl.load(r_ptr + base + cols, mask=m, other=0.0).to(tl.float32)
    # The sum is rounded to the saved dtype first (what `x + r` gives in PyTorch), so the statistics,
    # the output and the backward all see the same x + r: memory of one input-dtype copy, and exact.
    s = s.to(s_ptr.dtype.element_ty)
    tl.store(s_ptr + base + cols, s, mask=m)
    s = s.to(tl.float32)
    mean = tl.sum(s, axis=0) / ncols
    d = tl.where(m, s - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / ncols + eps)
    w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(y_ptr + base + cols, (d * rstd * w + b).to(y_ptr.dtype.element_ty), mask=m)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _add_ln_bwd(dy_ptr, s_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr, nrows, ncols,
                ROWS: tl.constexpr, BLOCK: tl.constexpr):
    # One program owns ROWS consecutive rows and writes its partial dw/db row; torch sums those.
    # Every masked lane is forced to 0 before a reduction: a GPU leaves masked loads undefined.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    m = cols < ncols
    w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    db = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(ROWS):
        row = pid * ROWS + i
        if row < nrows:
            base = row.to(tl.int64) * ncols
            rstd = tl.load(rstd_ptr + row)
            s = tl.load(s_ptr + base + cols, mask=m, other=0.0).to(tl.float32)
            xhat = tl.where(m, (s - tl.load(mean_ptr + row)) * rstd, 0.0)
            dy = tl.where(m, tl.load(dy_ptr + base + cols, mask=m, other=0.0).to(tl.float32), 0.0)
            wdy = tl.where(m, w * dy, 0.0)
            c1 = tl.sum(xhat * wdy, axis=0) / ncols
            c2 = tl.sum(wdy, axis=0) / ncols
            dx = (wdy - (xhat * c1 + c2)) * rstd
            tl.store(dx_ptr + base + cols, dx.to(dx_ptr.dtype.element_ty), mask=m)
            dw += dy * xhat
            db += dy
    tl.store(dw_ptr + pid * ncols + cols, dw, mask=m)
    tl.store(db_ptr + pid * ncols + cols, db, mask=m)


class AddLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps):
        shape = x.shape
        n = shape[-1]
        x2, r2 = x.reshape(-1, n).contiguous(), residual.reshape(-1, n).contiguous()
        rows = x2.shape[0]
        y = torch.empty_like(x2)
        # x + r saved once, in the dtype PyTorch's `x + residual` has (bf16 in bf16 training), not fp32.
        s = torch.empty(rows, n, device=x.device, dtype=torch.promote_types(x.dtype, residual.dtype))
        mean = torch.empty(rows, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        c = configs.add_ln_fwd(rows, n)
        _add_ln_fwd[c.grid](x2, r2, weight, bias, y, s, mean, rstd, n, eps, **c.meta)
        ctx.save_for_backward(s, weight, mean, rstd)
        ctx.shape, ctx.x_dtype, ctx.r_dtype = shape, x.dtype, residual.dtype
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):
        s, weight, mean, rstd = ctx.saved_tensors
        rows, n = s.shape
        c = configs.add_ln_bwd(rows, n)
        programs = c.grid[0]
        dx = torch.empty(rows, n, device=s.device, dtype=ctx.x_dtype)
        dw = torch.empty(programs, n, device=s.device, dtype=torch.float32)
        db = torch.empty_like(dw)
        _add_ln_bwd[c.grid](dy.reshape(rows, n).contiguous(), s, weight, mean, rstd, dx, dw, db, rows, n,
                            **c.meta)
        dx = dx.view(ctx.shape)
        dr = dx if ctx.r_dtype == ctx.x_dtype else dx.to(ctx.r_dtype)
        return dx, dr, dw.sum(0).to(weight.dtype), db.sum(0).to(weight.dtype), None


def add_layer_norm(x, residual, weight, bias, eps):
    return AddLayerNorm.apply(x, residual, weight, bias, eps)


# ----------------------------------- decoder matmul fused with cross-entropy, chunked over the vocabulary
@triton.jit
def _logits_tile(h_ptr, w_ptr, b_ptr, rows, rmask, vs, vmask, hdim,
                 HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr,
                 BLOCK_K: tl.constexpr):
    # fp32 logits of one [BLOCK_M, BLOCK_V] tile; forward and backward share it, so both see the same
    # (unrounded) logits and the backward's softmax sums to one against the forward's logsumexp.
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_V), dtype=tl.float32)
    for k0 in range(0, hdim, BLOCK_K):
        kk = k0 + ks
        kmask = kk < hdim
        a = tl.load(h_ptr + rows[:, None].to(tl.int64) * hdim + kk[None, :],
                    mask=rmask[:, None] & kmask[None, :], other=0.0)
        wt = tl.load(w_ptr + vs[None, :].to(tl.int64) * hdim + kk[:, None],
                     mask=vmask[None, :] & kmask[:, None], other=0.0)
        if IEEE:
            acc += tl.dot(a, wt, input_precision="ieee")
        else:
            acc += tl.dot(a, wt)
    if HAS_BIAS:
        acc += tl.load(b_ptr + vs, mask=vmask, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _linear_ce_fwd(h_ptr, w_ptr, b_ptr, labels_ptr, max_ptr, sum_ptr, tgt_ptr, nrows, vocab, hdim, vspan,
                   HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr):
    # Program (i, j) streams vocabulary slice j (vspan ids) for BLOCK_M rows, keeping a running max,
    # sum of exponentials and target logit; the slices are combined in PyTorch (a logsumexp of [S, N]).
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    split = tl.program_id(1)
    rmask = rows < nrows
    labels = tl.load(labels_ptr + rows, mask=rmask, other=-100)
    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    target = tl.zeros((BLOCK_M,), dtype=tl.float32)
    v_lo = split * vspan
    v_hi = tl.minimum(v_lo + vspan, vocab)
    for v0 in range(v_lo, v_hi, BLOCK_V):
        vs = v0 + tl.arange(0, BLOCK_V)
        vmask = vs < v_hi
        acc = _logits_tile(h_ptr, w_ptr, b_ptr, rows, rmask, vs, vmask, hdim, HAS_BIAS, IEEE,
                           BLOCK_M, BLOCK_V, BLOCK_K)
        acc = tl.where(vmask[None, :], acc, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(acc, axis=1))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(acc - new_max[:, None]), axis=1)
        run_max = new_max
        target += tl.sum(tl.where(vs[None, :] == labels[:, None], acc, 0.0), axis=1)
    out = split * nrows + rows
    tl.store(max_ptr + out, run_max, mask=rmask)
    tl.store(sum_ptr + out, run_sum, mask=rmask)
    tl.store(tgt_ptr + out, target, mask=rmask)


@triton.jit
def _linear_ce_bwd(h_ptr, w_ptr, b_ptr, labels_ptr, lse_ptr, scale_ptr, g_ptr, nrows, ncols, hdim, start,
                   HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr):
    # g[:, start:start+ncols] = (softmax - onehot) * scale from fp32 logits recomputed exactly as the
    # forward computed them; written in the input dtype for the cuBLAS products that follow.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    rmask = rows < nrows
    cmask = cols < ncols
    acc = _logits_tile(h_ptr, w_ptr, b_ptr, rows, rmask, start + cols, cmask, hdim, HAS_BIAS, IEEE,
                       BLOCK_M, BLOCK_V, BLOCK_K)
    lse = tl.load(lse_ptr + rows, mask=rmask, other=0.0)
    labels = tl.load(labels_ptr + rows, mask=rmask, other=-100)
    scale = tl.load(scale_ptr + rows, mask=rmask, other=0.0)
    g = tl.exp(acc - lse[:, None]) - tl.where((start + cols)[None, :] == labels[:, None], 1.0, 0.0)
    g = g * scale[:, None]
    tl.store(g_ptr + rows[:, None].to(tl.int64) * ncols + cols[None, :], g.to(g_ptr.dtype.element_ty),
             mask=rmask[:, None] & cmask[None, :])


def _ieee(dtype) -> bool:
    # fp32 inputs: exact fp32 dots unless PyTorch itself is allowed TF32 for matmuls.
    return dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32


class LinearCrossEntropy(torch.autograd.Function):
    """sum over rows with label != -100 of CE(hidden @ weight.T + bias, label); see reference.py for
    the PyTorch twin. Forward: one Triton kernel over a (row block, vocabulary slice) grid. Backward:
    per vocabulary chunk of ``chunk_size`` ids, a Triton kernel forms d(loss)/d(logits) from the same
    fp32 logits the forward used, then cuBLAS multiplies it into the hidden and weight gradients."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size, sms):
        hidden, weight = hidden.contiguous(), weight.contiguous()
        n, hdim = hidden.shape
        vocab = weight.shape[0]
        labels = labels.contiguous()
        c = configs.linear_ce_fwd(n, vocab, hdim, hidden.dtype, sms=sms, ieee=_ieee(hidden.dtype))
        splits = c.grid[1]
        pmax = torch.empty(splits, n, device=hidden.device, dtype=torch.float32)
        psum, ptgt = torch.empty_like(pmax), torch.empty_like(pmax)
        _linear_ce_fwd[c.grid](hidden, weight, bias if bias is not None else weight, labels, pmax, psum, ptgt,
                               n, vocab, hdim, c.vspan, HAS_BIAS=bias is not None, **c.meta)
        top = pmax.max(0).values
        lse = top + torch.log((psum * torch.exp(pmax - top)).sum(0))
        valid = labels != -100
        ctx.save_for_backward(hidden, weight, bias if bias is not None else hidden.new_empty(0), labels,
                              valid, lse)
        ctx.has_bias, ctx.chunk_size, ctx.sms = bias is not None, chunk_size, sms
        return ((lse - ptgt.sum(0)) * valid).sum()

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, labels, valid, lse = ctx.saved_tensors
        n, hdim = hidden.shape
        vocab = weight.shape[0]
        scale = (grad_loss * valid).float().contiguous()
        grad_h = torch.zeros(hidden.shape, device=hidden.device, dtype=torch.float32)
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        grad_b = torch.empty_like(bias) if ctx.has_bias and ctx.needs_input_grad[2] else None
        chunk = min(ctx.chunk_size, vocab)
        buf = torch.empty(n * chunk, device=hidden.device, dtype=hidden.dtype)  # one chunk of d(logits)
        for start in range(0, vocab, chunk):
            end = min(start + chunk, vocab)
            gc = buf[:n * (end - start)].view(n, end - start)
            c = configs.linear_ce_bwd(n, end - start, hdim, hidden.dtype, ieee=_ieee(hidden.dtype))
            _linear_ce_bwd[c.grid](hidden, weight, bias if ctx.has_bias else weight, labels, lse, scale, gc,
                                   n, end - start, hdim, start, HAS_BIAS=ctx.has_bias, **c.meta)
            w = weight[start:end]
            grad_h += (gc @ w).float()
            if grad_w is not None:
                grad_w[start:end] = gc.t() @ hidden
            if grad_b is not None:
                grad_b[start:end] = gc.sum(0, dtype=torch.float32).to(bias.dtype)
        return grad_h.to(hidden.dtype), grad_w, grad_b, None, None, None


def linear_cross_entropy(hidden, weight, bias, labels, chunk_size: int = 8192, sms: int | None = None):
    """``sms``: multiprocessors to fill with the forward's (row block, vocabulary slice) grid; by default
    the current device's count (132 where none is known, e.g. under the interpreter)."""
    if sms is None:
        sms = configs.device_sms(hidden.device)
    return LinearCrossEntropy.apply(hidden, weight, bias, labels, chunk_size, sms)

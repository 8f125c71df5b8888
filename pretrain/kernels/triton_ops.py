"""Triton kernels for the memory-bound parts of BERT, each an autograd.Function.

Written here rather than taken from a library: liger-kernel has GELU/LayerNorm/fused-linear-CE
kernels but only tanh-GELU (BERT uses erf GELU), LayerNorm without the residual add, and its fused
CE chunks over rows and needs a GPU even to import; apex is not installable here. Each op has a
PyTorch twin in reference.py, which tests compare against under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_SQRT1_2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


# ---------------------------------------------------------------- bias + GELU (erf), forward and backward
@triton.jit
def _bias_gelu_fwd(x_ptr, b_ptr, y_ptr, numel, ncols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < numel
    z = tl.load(x_ptr + offs, mask=m).to(tl.float32) + tl.load(b_ptr + offs % ncols, mask=m).to(tl.float32)
    y = 0.5 * z * (1.0 + tl.math.erf(z * _SQRT1_2))
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bias_gelu_bwd(dy_ptr, x_ptr, b_ptr, dz_ptr, numel, ncols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < numel
    z = tl.load(x_ptr + offs, mask=m).to(tl.float32) + tl.load(b_ptr + offs % ncols, mask=m).to(tl.float32)
    cdf = 0.5 * (1.0 + tl.math.erf(z * _SQRT1_2))
    pdf = tl.exp(-0.5 * z * z) * _INV_SQRT_2PI
    dz = tl.load(dy_ptr + offs, mask=m).to(tl.float32) * (cdf + z * pdf)
    tl.store(dz_ptr + offs, dz.to(dz_ptr.dtype.element_ty), mask=m)


class BiasGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias):
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        _bias_gelu_fwd[(triton.cdiv(n, 1024),)](x, bias, y, n, x.shape[-1], BLOCK=1024)
        ctx.save_for_backward(x, bias)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, bias = ctx.saved_tensors
        dz = torch.empty_like(x)
        n = x.numel()
        _bias_gelu_bwd[(triton.cdiv(n, 1024),)](dy.contiguous(), x, bias, dz, n, x.shape[-1], BLOCK=1024)
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
    base = row * ncols
    s = tl.load(x_ptr + base + cols, mask=m, other=0.0).to(tl.float32) + \
        tl.load(r_ptr + base + cols, mask=m, other=0.0).to(tl.float32)
    mean = tl.sum(s, axis=0) / ncols
    d = tl.where(m, s - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / ncols + eps)
    w = tl.load(w_ptr + cols, mask=m).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=m).to(tl.float32)
    tl.store(y_ptr + base + cols, (d * rstd * w + b).to(y_ptr.dtype.element_ty), mask=m)
    tl.store(s_ptr + base + cols, s, mask=m)  # fp32 sum: the backward needs x_hat, not x and r apart
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _add_ln_bwd(dy_ptr, s_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr, nrows, ncols,
                ROWS: tl.constexpr, BLOCK: tl.constexpr):
    # One program owns ROWS consecutive rows and writes its partial dw/db row; torch sums those.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    m = cols < ncols
    w = tl.load(w_ptr + cols, mask=m).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    db = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(ROWS):
        row = pid * ROWS + i
        if row < nrows:
            base = row * ncols
            xhat = (tl.load(s_ptr + base + cols, mask=m, other=0.0) - tl.load(mean_ptr + row)) * \
                tl.load(rstd_ptr + row)
            xhat = tl.where(m, xhat, 0.0)
            dy = tl.load(dy_ptr + base + cols, mask=m, other=0.0).to(tl.float32)
            wdy = w * dy
            c1 = tl.sum(xhat * wdy, axis=0) / ncols
            c2 = tl.sum(wdy, axis=0) / ncols
            dx = (wdy - (xhat * c1 + c2)) * tl.load(rstd_ptr + row)
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
        s = torch.empty(rows, n, device=x.device, dtype=torch.float32)
        mean = torch.empty(rows, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        block = triton.next_power_of_2(n)
        _add_ln_fwd[(rows,)](x2, r2, weight, bias, y, s, mean, rstd, n, eps, BLOCK=block)
        ctx.save_for_backward(s, weight, mean, rstd)
        ctx.shape, ctx.block, ctx.x_dtype, ctx.r_dtype = shape, block, x.dtype, residual.dtype
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):
        s, weight, mean, rstd = ctx.saved_tensors
        rows, n = s.shape
        per = 64 if rows >= 64 * 64 else 8
        programs = triton.cdiv(rows, per)
        dx = torch.empty(rows, n, device=s.device, dtype=ctx.x_dtype)
        dw = torch.empty(programs, n, device=s.device, dtype=torch.float32)
        db = torch.empty_like(dw)
        _add_ln_bwd[(programs,)](dy.reshape(rows, n).contiguous(), s, weight, mean, rstd, dx, dw, db, rows, n,
                                 ROWS=per, BLOCK=ctx.block)
        dx = dx.view(ctx.shape)
        dr = dx if ctx.r_dtype == ctx.x_dtype else dx.to(ctx.r_dtype)
        return dx, dr, dw.sum(0).to(weight.dtype), db.sum(0).to(weight.dtype), None


def add_layer_norm(x, residual, weight, bias, eps):
    return AddLayerNorm.apply(x, residual, weight, bias, eps)


# ----------------------------------- decoder matmul fused with cross-entropy, chunked over the vocabulary
@triton.jit
def _linear_ce_fwd(h_ptr, w_ptr, b_ptr, labels_ptr, lse_ptr, tgt_ptr, nrows, vocab, hdim,
                   HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr):
    # Each program streams the whole vocabulary for BLOCK_M rows, keeping only a running max, sum of
    # exponentials and the target logit: logits exist one [BLOCK_M, BLOCK_V] tile at a time.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < nrows
    labels = tl.load(labels_ptr + rows, mask=rmask, other=-100)
    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    target = tl.zeros((BLOCK_M,), dtype=tl.float32)
    ks = tl.arange(0, BLOCK_K)
    for v0 in range(0, vocab, BLOCK_V):
        vs = v0 + tl.arange(0, BLOCK_V)
        vmask = vs < vocab
        acc = tl.zeros((BLOCK_M, BLOCK_V), dtype=tl.float32)
        for k0 in range(0, hdim, BLOCK_K):
            kk = k0 + ks
            kmask = kk < hdim
            a = tl.load(h_ptr + rows[:, None] * hdim + kk[None, :], mask=rmask[:, None] & kmask[None, :],
                        other=0.0)
            wt = tl.load(w_ptr + vs[None, :] * hdim + kk[:, None], mask=vmask[None, :] & kmask[:, None],
                         other=0.0)
            if IEEE:
                acc += tl.dot(a, wt, input_precision="ieee")
            else:
                acc += tl.dot(a, wt)
        if HAS_BIAS:
            acc += tl.load(b_ptr + vs, mask=vmask, other=0.0).to(tl.float32)[None, :]
        acc = tl.where(vmask[None, :], acc, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(acc, axis=1))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(acc - new_max[:, None]), axis=1)
        run_max = new_max
        target += tl.sum(tl.where(vs[None, :] == labels[:, None], acc, 0.0), axis=1)
    tl.store(lse_ptr + rows, run_max + tl.log(run_sum), mask=rmask)
    tl.store(tgt_ptr + rows, target, mask=rmask)


@triton.jit
def _ce_grad_chunk(logits_ptr, lse_ptr, labels_ptr, scale_ptr, nrows, ncols, start, BLOCK: tl.constexpr):
    # In place: logits of one vocabulary chunk -> (softmax - onehot) * scale, one row per program.
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    for c0 in range(0, ncols, BLOCK):
        c = c0 + cols
        m = c < ncols
        x = tl.load(logits_ptr + row * ncols + c, mask=m, other=0.0)
        g = tl.exp(x - tl.load(lse_ptr + row)) - tl.where(start + c == tl.load(labels_ptr + row), 1.0, 0.0)
        tl.store(logits_ptr + row * ncols + c, g * tl.load(scale_ptr + row), mask=m)


class LinearCrossEntropy(torch.autograd.Function):
    """sum over rows with label != -100 of CE(hidden @ weight.T + bias, label); see reference.py for
    the PyTorch twin. The backward recomputes logits one vocabulary chunk at a time with cuBLAS."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size):
        hidden, weight = hidden.contiguous(), weight.contiguous()
        n, hdim = hidden.shape
        vocab = weight.shape[0]
        labels = labels.contiguous()
        lse = torch.empty(n, device=hidden.device, dtype=torch.float32)
        tgt = torch.empty_like(lse)
        block_m = 16 if n <= 1024 else 64
        _linear_ce_fwd[(triton.cdiv(n, block_m),)](
            hidden, weight, bias if bias is not None else weight, labels, lse, tgt, n, vocab, hdim,
            HAS_BIAS=bias is not None, IEEE=hidden.dtype == torch.float32,
            BLOCK_M=block_m, BLOCK_V=64, BLOCK_K=32)
        valid = labels != -100
        ctx.save_for_backward(hidden, weight, bias if bias is not None else hidden.new_empty(0), labels,
                              valid, lse)
        ctx.has_bias, ctx.chunk_size = bias is not None, chunk_size
        return ((lse - tgt) * valid).sum()

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, labels, valid, lse = ctx.saved_tensors
        n = hidden.shape[0]
        scale = (grad_loss * valid).float().contiguous()
        grad_h = torch.zeros(hidden.shape, device=hidden.device, dtype=torch.float32)
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        grad_b = torch.empty_like(bias) if ctx.has_bias and ctx.needs_input_grad[2] else None
        for start in range(0, weight.shape[0], ctx.chunk_size):
            end = min(start + ctx.chunk_size, weight.shape[0])
            w = weight[start:end]
            g = torch.nn.functional.linear(hidden, w, bias[start:end] if ctx.has_bias else None)
            g = g.float().contiguous()
            _ce_grad_chunk[(n,)](g, lse, labels, scale, n, end - start, start, BLOCK=1024)
            gd = g.to(hidden.dtype)  # matmuls in the input precision (bf16 tensor cores on GPU)
            grad_h += (gd @ w).float()
            if grad_w is not None:
                grad_w[start:end] = gd.t() @ hidden
            if grad_b is not None:
                grad_b[start:end] = g.sum(0).to(bias.dtype)
        return grad_h.to(hidden.dtype), grad_w, grad_b, None, None


def linear_cross_entropy(hidden, weight, bias, labels, chunk_size: int = 8192):
    return LinearCrossEntropy.apply(hidden, weight, bias, labels, chunk_size)

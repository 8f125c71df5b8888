"""Plain PyTorch versions of the fused ops: the CPU path and the ground truth the Triton kernels are tested on."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """erf GELU(x + bias), BERT's activation."""
    return F.gelu(x + bias)


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float) -> torch.Tensor:
    """LayerNorm(x + residual), the post-LN residual of every BERT sub-layer."""
    return F.layer_norm(x + residual, (x.shape[-1],), weight, bias, eps)


def linear_cross_entropy_dense(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                               labels: torch.Tensor) -> torch.Tensor:
    """Sum of CE over rows whose label is not -100, through full [N, V] logits (the obvious way)."""
    logits = F.linear(hidden, weight, bias)
    return F.cross_entropy(logits.to(_acc_dtype(logits)), labels, ignore_index=-100, reduction="sum")


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum CE(hidden @ weight.T + bias, labels) over rows with label != -100, vocabulary in chunks.

    Written by hand because no installed library fuses the decoder with the loss on CPU: the forward
    keeps only a running logsumexp per row (online softmax), so [N, V] logits never exist; the
    backward recomputes each chunk's logits to form its slice of d(loss)/d(logits).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size: int):
        n, v = hidden.shape[0], weight.shape[0]
        acc = _acc_dtype(hidden)
        valid = labels != -100
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        run_max = hidden.new_full((n,), -math.inf, dtype=acc)
        run_sum = hidden.new_zeros((n,), dtype=acc)
        target = hidden.new_zeros((n,), dtype=acc)
        for start in range(0, v, chunk_size):
            end = min(start + chunk_size, v)
            logits = _chunk_logits(hidden, weight, bias, start, end)
            new_max = torch.maximum(run_max, logits.max(dim=1).values)
            run_sum = run_sum * torch.exp(run_max - new_max) + torch.exp(logits - new_max[:, None]).sum(1)
            run_max = new_max
            inside = (safe >= start) & (safe < end)
            idx = (safe - start).clamp(0, end - start - 1)
            target = torch.where(inside, logits.gather(1, idx[:, None]).squeeze(1), target)
        lse = run_max + torch.log(run_sum)
        loss = ((lse - target) * valid).sum()
        ctx.save_for_backward(hidden, weight, bias if bias is not None else hidden.new_empty(0), safe,
                              valid, lse)
        ctx.has_bias = bias is not None
        ctx.chunk_size = chunk_size
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, safe, valid, lse = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        acc = _acc_dtype(hidden)
        scale = (grad_loss * valid).to(acc)  # [N]; rows without a label get no gradient
        grad_h = torch.zeros_like(hidden, dtype=acc)
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        grad_b = torch.empty_like(bias) if ctx.has_bias and ctx.needs_input_grad[2] else None
        v = weight.shape[0]
        for start in range(0, v, ctx.chunk_size):
            end = min(start + ctx.chunk_size, v)
            g = softmax_grad_chunk(_chunk_logits(hidden, weight, bias, start, end), lse, safe, scale, start)
            grad_h.addmm_(g, weight[start:end].to(acc))
            if grad_w is not None:
                grad_w[start:end] = (g.t() @ hidden.to(acc)).to(weight.dtype)
            if grad_b is not None:
                grad_b[start:end] = g.sum(0).to(bias.dtype)
        return grad_h.to(hidden.dtype), grad_w, grad_b, None, None


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)  # fp32 accumulation for bf16/fp16 inputs


def _chunk_logits(hidden, weight, bias, start, end):
    b = bias[start:end] if bias is not None else None
    return F.linear(hidden, weight[start:end], b).to(_acc_dtype(hidden))


def softmax_grad_chunk(logits, lse, safe_labels, scale, start):
    """(softmax - onehot) * scale for one vocabulary chunk, computed in place on ``logits``."""
    g = torch.exp_(logits.sub_(lse[:, None]))
    cols = torch.arange(start, start + logits.shape[1], device=logits.device)
    g.sub_((cols[None, :] == safe_labels[:, None]).to(g.dtype))
    return g.mul_(scale[:, None])


def linear_cross_entropy_chunked(hidden, weight, bias, labels, chunk_size: int = 4096) -> torch.Tensor:
    return ChunkedLinearCrossEntropy.apply(hidden, weight, bias, labels, chunk_size)

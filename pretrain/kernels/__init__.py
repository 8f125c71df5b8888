"""Fused ops for the LinkBERT model: Triton kernels on CUDA, plain PyTorch elsewhere.

Every op has a PyTorch reference in ``reference.py``; the Triton version (``triton_ops.py``) is an
autograd.Function with its own forward and backward kernels. Selection: ``LINKBERT_KERNELS`` =
``auto`` (default: Triton when the tensor is on CUDA and triton imports), ``torch`` or ``triton``
(forced; on CPU tensors this needs ``TRITON_INTERPRET=1`` set before the first kernel is used, which is
how the tests run them). ``set_kernel_mode`` changes it at run time.
"""
from __future__ import annotations

import functools
import os

import torch

from . import reference

_MODES = ("auto", "torch", "triton")
_mode = os.environ.get("LINKBERT_KERNELS", "auto")


def set_kernel_mode(mode: str) -> None:
    global _mode
    if mode not in _MODES:
        raise ValueError(f"kernel mode {mode!r}: use one of {_MODES}")
    _mode = mode


def kernel_mode() -> str:
    return _mode


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(t: torch.Tensor) -> bool:
    if _mode == "torch":
        return False
    if _mode == "triton":
        return True
    return t.is_cuda and triton_available()


def _triton_ops():
    # Imported late: triton reads TRITON_INTERPRET when a kernel is defined, and CPU runs never need it.
    from . import triton_ops
    return triton_ops


def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    if use_triton(x):
        return _triton_ops().bias_gelu(x, bias)
    return reference.bias_gelu(x, bias)


def add_layer_norm(x, residual, weight, bias, eps: float) -> torch.Tensor:
    if use_triton(x):
        return _triton_ops().add_layer_norm(x, residual, weight, bias, eps)
    return reference.add_layer_norm(x, residual, weight, bias, eps)


def linear_cross_entropy(hidden, weight, bias, labels, fused: bool, chunk_size: int = 4096) -> torch.Tensor:
    """Sum over rows with label != -100 of CE(hidden @ weight.T + bias, label).

    fused=True never materialises [N, V] logits (vocabulary chunks, online logsumexp); fused=False is
    the dense path, fastest on CPU where the logits of masked rows are small.
    """
    if not fused:
        return reference.linear_cross_entropy_dense(hidden, weight, bias, labels)
    if use_triton(hidden):
        if weight.dtype != hidden.dtype:  # e.g. fp32 master weights under autocast: tl.dot needs one dtype
            weight = weight.to(hidden.dtype)
            bias = bias.to(hidden.dtype) if bias is not None else None
        return _triton_ops().linear_cross_entropy(hidden, weight, bias, labels)
    return reference.linear_cross_entropy_chunked(hidden, weight, bias, labels, chunk_size)


@functools.lru_cache(maxsize=1)
def layer_norm_class() -> type[torch.nn.Module]:
    """apex's FusedLayerNorm where installed (same parameter names, falls back to F.layer_norm off
    CUDA), else torch's LayerNorm."""
    try:
        from apex.normalization import FusedLayerNorm
    except Exception:  # apex missing or built without its CUDA extension
        return torch.nn.LayerNorm
    return FusedLayerNorm

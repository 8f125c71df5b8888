"""Fused ops for the LinkBERT model: Triton kernels on CUDA, plain PyTorch elsewhere.

Every op has a PyTorch reference in ``reference.py``; the Triton version (``triton_ops.py``) is an
autograd.Function with its own forward and backward kernels. Selection: ``LINKBERT_KERNELS`` =
``auto`` (default: Triton when the tensor is on CUDA and triton imports), ``torch`` or ``triton``
(forced; on CPU tensors this needs ``TRITON_INTERPRET=1`` set before the first kernel is used, which is
how the tests run them). ``set_kernel_mode`` changes it at run time.

The fused decoder + cross-entropy has two GPU implementations, chosen by ``LINKBERT_CE`` (or
``set_ce_impl``): ``triton`` (the default: a Triton forward over a (row block, vocabulary slice) grid,
backward kernel + cuBLAS per chunk) or ``chunked`` (PyTorch: cuBLAS logits per ``chunk_size`` vocabulary
chunk, online logsumexp). ``benchmarks/bench_gpu.py`` times both and prints the faster.
"""
from __future__ import annotations

import functools
import os

import torch

from . import reference

_MODES = ("auto", "torch", "triton")
_CE_IMPLS = ("triton", "chunked")
_mode = os.environ.get("LINKBERT_KERNELS", "auto")
_ce_impl = os.environ.get("LINKBERT_CE", "triton")


def set_kernel_mode(mode: str) -> None:
    global _mode
    if mode not in _MODES:
        raise ValueError(f"kernel mode {mode!r}: use one of {_MODES}")
    _mode = mode


def kernel_mode() -> str:
    return _mode


def set_ce_impl(impl: str) -> None:
    global _ce_impl
    if impl not in _CE_IMPLS:
        raise ValueError(f"cross-entropy implementation {impl!r}: use one of {_CE_IMPLS}")
    _ce_impl = impl


def ce_impl() -> str:
    return _ce_impl


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
    if use_triton(hidden) and _ce_impl == "triton":
        if weight.dtype != hidden.dtype:  # e.g. fp32 master weights under autocast: tl.dot needs one dtype
            weight = weight.to(hidden.dtype)
            bias = bias.to(hidden.dtype) if bias is not None else None
        return _triton_ops().linear_cross_entropy(hidden, weight, bias, labels, chunk_size)
    return reference.linear_cross_entropy_chunked(hidden, weight, bias, labels, chunk_size)


@functools.lru_cache(maxsize=1)
def apex_layer_norm_status() -> tuple[bool, str]:
    """(usable, why): apex's FusedLayerNorm needs its CUDA extension ``fused_layer_norm_cuda``; a
    Python-only apex imports ``apex.normalization`` fine and fails at the first CUDA forward."""
    try:
        from apex.normalization import FusedLayerNorm  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable"
        return False, f"apex.normalization not importable ({type(e).__name__})"
    try:
        import fused_layer_norm_cuda  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return False, f"apex without its CUDA extension fused_layer_norm_cuda ({type(e).__name__})"
    if not torch.cuda.is_available():
        return False, "apex with its CUDA extension, but no CUDA device"
    return True, "apex FusedLayerNorm with fused_layer_norm_cuda"


@functools.lru_cache(maxsize=1)
def layer_norm_class() -> type[torch.nn.Module]:
    """apex's FusedLayerNorm where it can run (its CUDA extension loads and a GPU is present; same
    parameter names), else torch's LayerNorm."""
    if apex_layer_norm_status()[0]:
        from apex.normalization import FusedLayerNorm
        return FusedLayerNorm
    return torch.nn.LayerNorm


def selection(device: torch.device | str | None = None) -> dict:
    """Which kernels run on ``device`` (default: cuda when available, else cpu), and why."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    if _mode == "torch":
        fused, why = False, "LINKBERT_KERNELS=torch"
    elif _mode == "triton":
        fused, why = True, "LINKBERT_KERNELS=triton (forced)"
    else:
        fused = on_cuda and triton_available()
        why = ("CUDA device and triton importable" if fused else
               "no CUDA device" if not on_cuda else "triton not importable")
    apex_ok, apex_why = apex_layer_norm_status()
    if fused:
        ce = ("triton" if _ce_impl == "triton" else "chunked", f"LINKBERT_CE={_ce_impl}")
    else:
        ce = ("chunked", "PyTorch path (dense CE on CPU unless fused_mlm_loss=True)")
    return {
        "kernels": "triton" if fused else "torch", "kernels_why": why,
        "linear_ce": ce[0], "linear_ce_why": ce[1],
        "layer_norm": "apex" if apex_ok else "torch",
        "layer_norm_why": apex_why,
        "residual_layer_norm": "triton" if fused else "torch",
    }

"""FLOPs per token of a LinkBERT training step (for MFU) and the peak FLOP/s of the device it runs on.

Counted: every matrix multiply (2 FLOPs per multiply-add), attention scores and values included;
element-wise work, softmax and embedding lookups are ignored (as in the PaLM/Megatron MFU convention).
A training step is 3x the forward (backward = grads w.r.t. inputs and weights, 2x forward).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

FORMULA = ("flops/token = k * [ L*(8H^2 + 4HI + 4SH) + m*(2H^2 + 2HV) + (2H^2 + 6H)/S ],  "
           "k = 3 training / 1 forward, m = masked fraction (1 for a dense MLM head)")


def flops_per_token(config, seq_len: int, masked_fraction: float = 0.15, sparse_mlm: bool = True,
                    training: bool = True) -> float:
    """Matmul FLOPs per (padded) token position of one sequence of ``seq_len`` tokens.

    Per layer: Q, K, V and output projections 8H^2, FFN 4HI, attention scores + weighted values 4SH.
    MLM head (transform + tied decoder) only at the masked fraction of positions when sparse.
    Pooler + relation head once per sequence, spread over its tokens.
    """
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    layers, s = config.num_hidden_layers, seq_len
    encoder = layers * (8 * h * h + 4 * h * i + 4 * s * h)
    predicted = masked_fraction if sparse_mlm else 1.0
    mlm = predicted * (2 * h * h + 2 * h * v)
    relation = (2 * h * h + 2 * h * 3) / s
    return (3.0 if training else 1.0) * (encoder + mlm + relation)


def batch_flops(config, lens, n_predicted: int, training: bool = True) -> float:
    """Matmul FLOPs of one step on a batch as it was run: sequences of the given non-pad lengths, and
    ``n_predicted`` positions through the MLM head (the masked labels actually present; every non-pad
    token for a dense head). The same terms as ``flops_per_token``, with attention from each sequence's
    own length instead of a padded width."""
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    lens = [int(n) for n in lens]
    tokens = sum(lens)
    encoder = config.num_hidden_layers * ((8 * h * h + 4 * h * i) * tokens + 4 * h * sum(n * n for n in lens))
    mlm = n_predicted * (2 * h * h + 2 * h * v)
    relation = len(lens) * (2 * h * h + 2 * h * 3)
    return (3.0 if training else 1.0) * (encoder + mlm + relation)


# Dense (no structured sparsity) peak tensor FLOP/s from the vendors' data sheets: (bf16/fp16, fp32).
# fp32 uses TF32 tensor cores where the GPU has them, as torch does with allow_tf32.
_GPU_PEAKS = [
    ("H200", 989e12, 494e12), ("GH200", 989e12, 494e12), ("H100 PCIe", 756e12, 378e12),
    ("H100", 989e12, 494e12), ("H800", 989e12, 494e12), ("B200", 2250e12, 1100e12),
    ("A100", 312e12, 156e12), ("A800", 312e12, 156e12), ("A40", 150e12, 75e12), ("A30", 165e12, 82e12),
    ("A10G", 70e12, 35e12), ("A10", 125e12, 62.5e12), ("L40S", 362e12, 183e12), ("L40", 181e12, 90.5e12),
    ("L4", 121e12, 60e12), ("V100", 125e12, 15.7e12), ("T4", 65e12, 8.1e12),
    ("RTX 4090", 165e12, 82.6e12), ("RTX 3090", 71e12, 35.6e12), ("RTX 2080 Ti", 53.8e12, 13.4e12),
]


def peak_flops(device: torch.device | str | None = None, dtype: torch.dtype = torch.bfloat16) -> float:
    """Peak FLOP/s of ``device`` for ``dtype`` (half precision or fp32); CPUs get an estimate."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    half = dtype in (torch.bfloat16, torch.float16)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, p_half, p_fp32 in _GPU_PEAKS:
            if key in name:
                return p_half if half else p_fp32
        props = torch.cuda.get_device_properties(device)
        # Unknown GPU: 1024 dense half FLOPs per SM per clock (Ampere-class tensor cores), clock ~1.4 GHz.
        return props.multi_processor_count * 1024 * 1.4e9 * (1.0 if half else 0.5)
    return cpu_peak_flops(dtype)


def cpu_peak_flops(dtype: torch.dtype = torch.float32) -> float:
    """cores x clock x SIMD FLOPs per cycle, from /proc/cpuinfo flags (2 FMA units assumed)."""
    flags, mhz = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if "avx512f" in flags:
        per_cycle = 64
    elif "avx2" in flags and "fma" in flags:
        per_cycle = 32
    else:
        per_cycle = 8
    if dtype == torch.bfloat16:
        if "amx_bf16" in flags:
            per_cycle = 1024
        elif "avx512_bf16" in flags:
            per_cycle = 128
    return cores * mhz * 1e6 * per_cycle


def _cpuinfo() -> tuple[set[str], float]:
    flags, mhz = set(), 2500.0
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return flags, mhz
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "cpu MHz":
            mhz = float(value)
    return flags, mhz


def flop_counter_mapping() -> dict:
    """Extra formulas for ``torch.utils.flop_counter.FlopCounterMode(custom_mapping=...)``.

    torch's counter has no formula for the CPU flash-attention kernels SDPA picks on larger inputs, so
    attention would count as zero there. Counted here like the matmuls: forward 2 bmm, backward 4
    (the kernel's recomputation of the scores is not useful work, as in the MFU convention).
    """
    from torch.utils.flop_counter import sdpa_flop_count

    aten = torch.ops.aten

    def fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return 2 * sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {}
    for name, fn in (("_scaled_dot_product_flash_attention_for_cpu", fwd),
                     ("_scaled_dot_product_flash_attention_for_cpu_backward", bwd)):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = fn
    return mapping

"""Launch configurations of the Triton kernels: grid, block sizes, warps.

Pure Python (no triton import), used by the launchers in triton_ops.py and by aot.py, which compiles
every kernel for sm_80/sm_90 at the configurations chosen here: change a block size here and the
compile test and the register/spill table follow. Block sizes were picked so that no kernel spills
registers on sm_80 or sm_90 in any dtype (see ``make gpu-check``'s table and docs/gpu-check.md).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

DEFAULT_SMS = 132  # H100 SXM / H200: what configs assume where no device can be asked


@dataclass
class Launch:
    grid: tuple
    meta: dict                       # keyword arguments of the launch: constexprs + num_warps/num_stages
    vspan: int = 0                   # linear_ce_fwd: vocabulary ids per slice (a runtime argument)
    notes: dict = field(default_factory=dict)

    @property
    def constexprs(self) -> dict:
        return {k: v for k, v in self.meta.items() if k not in ("num_warps", "num_stages")}

    @property
    def options(self) -> dict:
        return {k: v for k, v in self.meta.items() if k in ("num_warps", "num_stages")}


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@functools.lru_cache(maxsize=16)
def _sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def device_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return _sms(device.index if device.index is not None else torch.cuda.current_device())
    return DEFAULT_SMS


def bias_gelu(numel: int) -> Launch:
    return Launch((cdiv(numel, 1024),), {"BLOCK": 1024, "num_warps": 4})


def add_ln_fwd(rows: int, ncols: int) -> Launch:
    block = next_power_of_2(ncols)
    return Launch((rows,), {"BLOCK": block, "num_warps": 4 if block <= 1024 else 8})


def add_ln_bwd(rows: int, ncols: int) -> Launch:
    per = 64 if rows >= 64 * 64 else 8  # rows per program: partial dw/db rows stay few
    block = next_power_of_2(ncols)
    return Launch((cdiv(rows, per),), {"ROWS": per, "BLOCK": block, "num_warps": 4 if block <= 1024 else 8})


def _ce_blocks(dtype: torch.dtype, ieee: bool) -> dict:
    if dtype == torch.float32:
        # fp32 operands take twice the registers: BLOCK_M=64 x BLOCK_V=64 x BLOCK_K=32 on 4 warps spilled
        # (255 registers + 240 B of stack on sm_80 with ieee dots); 32x64x32 on 4 warps sat at 255.
        # 64x64x16 on 8 warps: 128/122 registers (sm_80/sm_90), no spill.
        return {"IEEE": ieee, "BLOCK_M": 64, "BLOCK_V": 64, "BLOCK_K": 16, "num_warps": 8, "num_stages": 2}
    return {"IEEE": False, "BLOCK_M": 64, "BLOCK_V": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}


def linear_ce_fwd(nrows: int, vocab: int, hdim: int, dtype: torch.dtype, sms: int = DEFAULT_SMS,
                  ieee: bool = True) -> Launch:
    """Grid (row blocks, vocabulary slices): slices are added until the grid fills ~2 waves of ``sms``
    programs, each slice keeping at least 8 vocabulary tiles so the logsumexp combine stays cheap."""
    meta = _ce_blocks(dtype, ieee)
    row_blocks = cdiv(nrows, meta["BLOCK_M"])
    tiles = cdiv(vocab, meta["BLOCK_V"])
    splits = max(1, min(cdiv(2 * sms, row_blocks), tiles // 8))
    vspan = cdiv(tiles, splits) * meta["BLOCK_V"]
    splits = cdiv(vocab, vspan)
    return Launch((row_blocks, splits), meta, vspan=vspan)


def linear_ce_bwd(nrows: int, ncols: int, hdim: int, dtype: torch.dtype, ieee: bool = True) -> Launch:
    meta = _ce_blocks(dtype, ieee)
    return Launch((cdiv(nrows, meta["BLOCK_M"]), cdiv(ncols, meta["BLOCK_V"])), meta)

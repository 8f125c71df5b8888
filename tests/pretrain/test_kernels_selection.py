"""What the model selects (attention, kernels, cross-entropy, LayerNorm) and why, asked once."""
import sys
import types

import torch

from pretrain import kernels, modeling


def test_flash_attn_status_is_asked_once():
    modeling.flash_attn_status.cache_clear()
    for _ in range(3):
        modeling.flash_attn_available()
    info = modeling.flash_attn_status.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_selection_on_cpu_names_each_choice_and_why():
    cfg = modeling.model_config("tiny", num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                intermediate_size=48, vocab_size=70)
    model = modeling.LinkBertForPreTraining(cfg)
    sel = modeling.selection(model, device="cpu", dtype=torch.bfloat16)
    assert sel["attention"] == "sdpa" and "not CUDA" in sel["attention_why"]
    assert sel["kernels"] == "torch" and sel["mlm_loss"] == "dense"
    assert sel["layer_norm"] in ("apex", "torch") and sel["layer_norm_why"]
    assert sel["dtype"] == "bfloat16" and sel["ce_chunk_size"] == 4096
    forced = modeling.selection(modeling.LinkBertForPreTraining(cfg, attention="varlen"), device="cpu")
    if not modeling.flash_attn_available():
        assert forced["attention"] == "varlen_torch"
    kernels.set_kernel_mode("triton")
    try:
        assert kernels.selection("cpu")["kernels"] == "triton"
    finally:
        kernels.set_kernel_mode("auto")


def test_python_only_apex_falls_back_to_torch_layernorm(monkeypatch):
    """apex.normalization importable but its CUDA extension missing: torch's LayerNorm, reason given."""
    apex = types.ModuleType("apex")
    norm = types.ModuleType("apex.normalization")
    norm.FusedLayerNorm = type("FusedLayerNorm", (torch.nn.LayerNorm,), {})
    apex.normalization = norm
    monkeypatch.setitem(sys.modules, "apex", apex)
    monkeypatch.setitem(sys.modules, "apex.normalization", norm)
    monkeypatch.setitem(sys.modules, "fused_layer_norm_cuda", None)  # import raises ImportError
    kernels.apex_layer_norm_status.cache_clear()
    kernels.layer_norm_class.cache_clear()
    try:
        ok, why = kernels.apex_layer_norm_status()
        assert not ok and "fused_layer_norm_cuda" in why
        assert kernels.layer_norm_class() is torch.nn.LayerNorm
    finally:
        kernels.apex_layer_norm_status.cache_clear()
        kernels.layer_norm_class.cache_clear()


def test_ce_impl_is_selectable():
    assert kernels.ce_impl() in ("triton", "chunked")
    old = kernels.ce_impl()
    kernels.set_ce_impl("chunked")
    try:
        assert kernels.ce_impl() == "chunked"
    finally:
        kernels.set_ce_impl(old)
    try:
        kernels.set_ce_impl("cublas")
    except ValueError as e:
        assert "triton" in str(e)
    else:
        raise AssertionError("unknown implementation accepted")

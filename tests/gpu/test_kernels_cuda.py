"""The Triton kernels compiled and run on a real GPU (marked ``gpu``: skipped without CUDA). Small
shapes, seconds; benchmarks/bench_gpu.py checks the real shapes and times them. Each check is also fed a
deliberately wrong kernel on CPU (unmarked tests at the end), so it is shown to fail when its subject is
broken."""
import pytest
import torch

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
FLOOR = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def _run(fn, leaves, up):
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    out = fn(*leaves)
    out.backward(up.to(out.dtype))
    return [out.detach()] + [t.grad for t in leaves]


def _check(fast, twin, leaves, up, dtype):
    got, ref = _run(fast, leaves, up), _run(twin, leaves, up)
    exact = _run(twin, [t.double() for t in leaves], up.double())
    for i, (a, b, x) in enumerate(zip(got, ref, exact)):
        assert torch.isfinite(a).all(), f"output {i}: NaN/inf"
        scale = x.abs().max().clamp_min(1e-30)
        ea, eb = ((a.double() - x).abs().max() / scale).item(), ((b.double() - x).abs().max() / scale).item()
        assert ea <= max(2 * eb, FLOOR[dtype]), f"output {i}: error {ea:.2e} vs PyTorch {eb:.2e}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernels_on_cuda_match_float64(dtype):
    from pretrain.kernels import reference, triton_ops
    torch.manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, device="cuda") * scale).to(dtype)
    _check(triton_ops.bias_gelu, reference.bias_gelu, [rnd(1000, 3072, scale=2), rnd(3072)], rnd(1000, 3072), dtype)
    for h in (768, 1000):  # 1000: masked lanes in a 1024 block
        _check(lambda *a: triton_ops.add_layer_norm(*a, 1e-12), lambda *a: reference.add_layer_norm(*a, 1e-12),
               [rnd(777, h, scale=3), rnd(777, h), rnd(h), rnd(h)], rnd(777, h), dtype)
    v = 30522
    labels = torch.randint(0, v, (333,), device="cuda")
    labels[::5], labels[1] = -100, v - 1
    up = torch.tensor(1.0 / int((labels != -100).sum()), device="cuda")
    _check(lambda a, b, c: triton_ops.linear_cross_entropy(a, b, c, labels, 4096),
           lambda a, b, c: reference.linear_cross_entropy_chunked(a, b, c, labels, 4096),
           [rnd(333, 768), rnd(v, 768, scale=0.05), rnd(v, scale=0.1)], up, dtype)


@pytest.mark.gpu
def test_layer_norm_backward_ignores_garbage_after_the_row():
    """Weight and rows followed by NaN/inf in memory (what a masked lane may read on a GPU)."""
    from pretrain.kernels import triton_ops
    _check_garbage_tail(lambda *a: triton_ops.add_layer_norm(*a, 1e-12), "cuda")


def _check_garbage_tail(add_layer_norm, device, n=1000, rows=64):
    from pretrain.kernels import reference

    def tail(t):
        buf = torch.full((t.numel() + 1024,), float("nan"), device=device, dtype=t.dtype)
        buf[t.numel() + 1::2] = float("inf")
        buf[:t.numel()] = t.reshape(-1)
        return buf[:t.numel()].view(t.shape)
    x, r, dy = (torch.randn(rows, n, device=device, dtype=torch.bfloat16) for _ in range(3))
    w, b = torch.randn(n, device=device, dtype=torch.bfloat16), torch.randn(n, device=device, dtype=torch.bfloat16)
    leaves = [tail(t).requires_grad_() for t in (x, r, w, b)]
    out = add_layer_norm(*leaves)
    out.backward(tail(dy))
    for t in [out] + [t.grad for t in leaves]:
        assert torch.isfinite(t).all()
    ref = [t.detach().float().requires_grad_() for t in (x, r, w, b)]
    want = reference.add_layer_norm(*ref, 1e-12)
    want.backward(dy.float())
    torch.testing.assert_close(out.float(), want, atol=3e-2, rtol=3e-2)


@pytest.mark.gpu
def test_model_step_triton_equals_torch_path_on_cuda():
    from pretrain import kernels
    res = {}
    for mode in ("torch", "triton"):
        kernels.set_kernel_mode(mode)
        try:
            res[mode] = _model_step("cuda")
        finally:
            kernels.set_kernel_mode("auto")
    _assert_same_step(res["triton"], res["torch"])


def _model_step(device):
    """(loss, {name: grad}) of one forward/backward of a small model with the fused MLM loss."""
    from pretrain.modeling import LinkBertForPreTraining, model_config
    torch.manual_seed(0)
    cfg = model_config("tiny", num_hidden_layers=2, hidden_size=256, num_attention_heads=4, intermediate_size=1024,
                       vocab_size=1000, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = LinkBertForPreTraining(cfg, fused_mlm_loss=True, ce_chunk_size=256).to(device)
    ids = torch.randint(5, 1000, (4, 64), device=device)
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0
    pos = torch.randint(1, 40, (4, 10), device=device)
    labels = torch.randint(5, 1000, (4, 10), device=device)
    rel = torch.tensor([0, 1, 2, 1], device=device)
    out = model(ids, mask, masked_positions=pos, masked_labels=labels, relation_labels=rel)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _assert_same_step(got, want):
    torch.testing.assert_close(got[0], want[0], atol=1e-4, rtol=1e-4)
    for n, g in want[1].items():
        torch.testing.assert_close(got[1][n], g, atol=1e-4, rtol=2e-3, msg=lambda m, n=n: f"{n}: {m}")


# --- the same checks fed deliberately wrong kernels on CPU: each must fail ---------------------------------

def test_float64_check_catches_a_wrong_kernel_on_cpu():
    from pretrain.kernels import reference
    torch.manual_seed(0)
    leaves, up = [torch.randn(64, 256) * 2, torch.randn(256)], torch.randn(64, 256)
    _check(reference.bias_gelu, reference.bias_gelu, leaves, up, torch.float32)   # the right kernel passes
    for wrong, what in ((lambda x, b: reference.bias_gelu(x, b) * 1.01, "error"),      # 1% off
                        (lambda x, b: reference.bias_gelu(x, b) / (x != x[0, 0]), "NaN/inf")):  # one inf
        with pytest.raises(AssertionError, match=what):
            _check(wrong, reference.bias_gelu, leaves, up, torch.float32)


def test_garbage_tail_check_catches_a_kernel_reading_past_the_row_on_cpu():
    from pretrain.kernels import reference
    _check_garbage_tail(lambda *a: reference.add_layer_norm(*a, 1e-12), "cpu", n=100, rows=8)

    def reads_one_past(x, r, w, b):   # the weight vector read one element too far: the NaN after it
        w_over = torch.as_strided(w, (w.numel() + 1,), (1,))
        return reference.add_layer_norm(x, r, w, b, 1e-12) + w_over[-1] * 0
    with pytest.raises(AssertionError):
        _check_garbage_tail(reads_one_past, "cpu", n=100, rows=8)


def test_model_step_comparison_catches_one_wrong_gradient_on_cpu():
    want = _model_step("cpu")
    loss, grads = _model_step("cpu")
    _assert_same_step((loss, grads), want)   # the same computation passes
    # one kernel's backward 1% off in one parameter (the one with the largest gradient: the tolerance
    # atol=1e-4 would let a 1% error through where gradients are below ~1e-2)
    name = max(grads, key=lambda n: grads[n].abs().max().item())
    grads[name] = grads[name] * 1.01
    with pytest.raises(AssertionError, match=name):
        _assert_same_step((loss, grads), want)

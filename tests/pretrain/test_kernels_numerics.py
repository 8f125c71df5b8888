"""Numerical properties of the Triton kernels that a plain comparison with the reference misses, under
TRITON_INTERPRET=1 in a child process (triton reads the variable when a kernel is defined):

- masked lanes: a GPU leaves the lanes of a masked load without ``other`` undefined, the interpreter
  zero-fills them; here the interpreter is made to fill them with NaN, so a kernel that lets such a lane
  into a reduction fails as it would on a GPU;
- linear+CE in fp16: the gradient's error against a float64 truth stays within the error of the PyTorch
  chunked path (forward and backward both on the same logits), not ~2x it as with bf16/fp16-rounded
  logits in the backward against an fp32 logsumexp;
- the residual LayerNorm keeps one input-dtype copy of x + r for the backward, not an fp32 one.
"""
import sys

import pytest
import torch

from tests.needs import need_module


def _poison_masked_loads():
    """Masked loads without ``other`` return NaN (floats) / -1 (ints) instead of 0, as garbage would."""
    import numpy as np
    from triton.runtime import interpreter as itp

    original = itp.InterpreterBuilder.create_masked_load

    def load(self, ptrs, mask, other, cache_policy, is_volatile):
        if other is None:
            dtype_np = itp._get_np_dtype(ptrs.get_element_ty())
            fill = np.nan if np.issubdtype(dtype_np, np.floating) else -1
            other = itp.TensorHandle(np.full(ptrs.data.shape, fill, dtype=dtype_np), ptrs.get_element_ty())
        return original(self, ptrs, mask, other, cache_policy, is_volatile)

    itp.InterpreterBuilder.create_masked_load = load


def _nan_tail(t: torch.Tensor, extra: int = 64) -> torch.Tensor:
    """t's values in a buffer whose memory after the tensor holds NaN and inf (read by no valid lane)."""
    buf = torch.full((t.numel() + extra,), float("nan"), dtype=t.dtype)
    buf[t.numel() + 1::2] = float("inf")
    buf[:t.numel()] = t.reshape(-1)
    return buf[:t.numel()].view(t.shape).detach().requires_grad_(t.requires_grad)


def check_masked_lanes():
    from pretrain.kernels import reference, triton_ops
    _poison_masked_loads()
    g = torch.Generator().manual_seed(5)
    rows, cols = 9, 50  # BLOCK 64: 14 masked lanes per row
    x, r, dy = (torch.randn(rows, cols, generator=g) for _ in range(3))
    w, b = torch.randn(cols, generator=g), torch.randn(cols, generator=g)
    leaves = [_nan_tail(t.clone().requires_grad_()) for t in (x, r, w, b)]
    ref_leaves = [t.detach().clone().requires_grad_() for t in (x, r, w, b)]
    out = triton_ops.add_layer_norm(*leaves, 1e-12)
    out.backward(_nan_tail(dy))
    want = reference.add_layer_norm(*ref_leaves, 1e-12)
    want.backward(dy)
    for name, a, e in [("out", out, want)] + [(f"grad {i}", t.grad, u.grad)
                                               for i, (t, u) in enumerate(zip(leaves, ref_leaves))]:
        assert torch.isfinite(a).all(), f"add_layer_norm {name}: NaN/inf from masked lanes"
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"add_ln {name}: {m}")

    xg, bg = torch.randn(3, 40, generator=g, requires_grad=True), torch.randn(40, generator=g, requires_grad=True)
    out = triton_ops.bias_gelu(xg, bg)  # 120 elements in a 1024 block
    out.backward(torch.ones_like(out))
    assert torch.isfinite(out).all() and torch.isfinite(xg.grad).all() and torch.isfinite(bg.grad).all()

    n, h, v = 10, 24, 75  # no dimension a multiple of a block
    hid, wt, bias = (torch.randn(*s, generator=g, requires_grad=True) for s in ((n, h), (v, h), (v,)))
    labels = torch.randint(0, v, (n,), generator=g)
    labels[0], labels[3] = -100, v - 1
    loss = triton_ops.linear_cross_entropy(hid, wt, bias, labels, 32)
    loss.backward()
    ref = [t.detach().clone().requires_grad_() for t in (hid, wt, bias)]
    want = reference.linear_cross_entropy_dense(*ref, labels)
    want.backward()
    torch.testing.assert_close(loss, want, atol=1e-4, rtol=1e-5)
    for i, (a, e) in enumerate(zip((hid, wt, bias), ref)):
        torch.testing.assert_close(a.grad, e.grad, atol=1e-5, rtol=1e-5, msg=lambda m, i=i: f"linear_ce grad {i}: {m}")


def _grads(fn, leaves, labels, chunk):
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    fn(*leaves, labels, chunk).backward()
    return [t.grad.double() for t in leaves]


def check_ce_fp16_consistent():
    from pretrain.kernels import reference, triton_ops
    g = torch.Generator().manual_seed(6)
    n, h, v = 48, 64, 400
    hid = (torch.randn(n, h, generator=g) * 2).half()
    wt = (torch.randn(v, h, generator=g) * 0.5).half()
    bias = torch.randn(v, generator=g).half()
    labels = torch.randint(0, v, (n,), generator=g)
    labels[::7] = -100
    labels[1] = v - 1
    truth = _grads(lambda *a: reference.linear_cross_entropy_chunked(*a[:3], a[3], a[4]),
                   [t.double() for t in (hid, wt, bias)], labels, 128)
    ours = _grads(triton_ops.linear_cross_entropy, (hid, wt, bias), labels, 128)
    twin = _grads(reference.linear_cross_entropy_chunked, (hid, wt, bias), labels, 128)
    for i, (a, b, t) in enumerate(zip(ours, twin, truth)):
        err_ours = ((a - t).abs().max() / t.abs().max()).item()
        err_twin = ((b - t).abs().max() / t.abs().max()).item()
        print(f"grad {i}: relative max error triton {err_ours:.2e}, PyTorch chunked {err_twin:.2e}")
        assert err_ours <= 1.25 * err_twin + 1e-4, \
            f"fp16 linear_ce grad {i}: error {err_ours:.2e} vs {err_twin:.2e} of the consistent reference"
    # d(loss)/d(logits) of each row sums to 0 when softmax sums to one: the bias gradient shows it.
    total = ours[2].sum().abs().item()
    assert total < 2e-3 * (labels != -100).sum().item(), f"sum of the bias gradient {total:.2e}: softmax != 1"


def check_ln_saves_input_dtype():
    from pretrain.kernels import reference, triton_ops
    g = torch.Generator().manual_seed(7)
    rows, cols = 16, 96
    x, r = (torch.randn(rows, cols, generator=g).half().requires_grad_() for _ in range(2))
    w, b = torch.randn(cols, generator=g).requires_grad_(), torch.randn(cols, generator=g).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = triton_ops.add_layer_norm(x, r, w, b, 1e-12)
    big = [(tuple(t.shape), t.dtype) for t in saved if t.numel() >= rows * cols]
    assert big == [((rows, cols), torch.float16)], f"saved for the backward: {big}"
    # Same numbers as LayerNorm of the fp16 sum (what PyTorch's x + r is), computed in float64.
    s = (x.detach() + r.detach()).double().requires_grad_()
    w64, b64 = w.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    want = reference.add_layer_norm(s, torch.zeros_like(s), w64, b64, 1e-12)
    up = torch.randn(rows, cols, generator=g).half()
    out.backward(up)
    want.backward(up.double())
    torch.testing.assert_close(out.double(), want, atol=4e-3, rtol=4e-3)
    for name, a, e in (("dx", x.grad, s.grad), ("dr", r.grad, s.grad), ("dw", w.grad, w64.grad),
                       ("db", b.grad, b64.grad)):
        torch.testing.assert_close(a.double(), e, atol=4e-3, rtol=4e-3, msg=lambda m, name=name: f"{name}: {m}")


def check_ce_vocab_split():
    """The forward's (row block, vocabulary slice) grid with several slices and a short last one: the
    logsumexp combine across slices and the target taken from the one slice that holds the label."""
    from pretrain.kernels import configs, reference, triton_ops
    g = torch.Generator().manual_seed(8)
    n, h, v = 30, 40, 2000
    c = configs.linear_ce_fwd(n, v, h, torch.float32)
    assert c.grid[1] >= 3 and v % c.vspan, f"want several slices and a partial last one: {c}"
    leaves = [torch.randn(n, h, generator=g), torch.randn(v, h, generator=g) * 0.3, torch.randn(v, generator=g)]
    labels = torch.randint(0, v, (n,), generator=g)
    labels[0], labels[1], labels[2] = -100, v - 1, c.vspan  # ignored, last id, first id of slice 1
    ours = [t.clone().requires_grad_() for t in leaves]
    ref = [t.clone().requires_grad_() for t in leaves]
    loss = triton_ops.linear_cross_entropy(*ours, labels, 512)
    want = reference.linear_cross_entropy_dense(*ref, labels)
    loss.backward()
    want.backward()
    torch.testing.assert_close(loss, want, atol=1e-4, rtol=1e-5)
    for i, (a, b) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5, msg=lambda m, i=i: f"grad {i}: {m}")


CHECKS = {f.__name__[len("check_"):]: f for f in (check_masked_lanes, check_ce_fp16_consistent,
                                                  check_ln_saves_input_dtype, check_ce_vocab_split)}


@pytest.mark.parametrize("name", list(CHECKS))
def test_kernel_numerics_interpreted(name):
    need_module("triton")
    from tests.procs import child_env, run
    cp = run([sys.executable, __file__, name], timeout=180, check=False,
             env=child_env(TRITON_INTERPRET=1, LINKBERT_KERNELS="triton", OMP_NUM_THREADS=1))
    assert cp.stdout.strip().endswith(f"OK {name}"), cp.stdout[-3000:]


if __name__ == "__main__":
    CHECKS[sys.argv[1]]()
    print(f"OK {sys.argv[1]}")

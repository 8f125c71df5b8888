"""Triton kernels against their PyTorch references, forward and backward, under TRITON_INTERPRET=1.

Triton reads TRITON_INTERPRET when a kernel is defined, so each check runs in a child process
(this file run as a script) with the variable set; the pytest side only starts it and reads the verdict.
"""
import sys

import pytest
import torch

ATOL, RTOL = 1e-5, 1e-5


def _compare(name, got, want):
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


def _grads(fn, inputs, upstream):
    for t in inputs:
        t.grad = None
    out = fn(*inputs)
    out.backward(upstream)
    return out.detach(), [t.grad.clone() for t in inputs]


def _check_pair(name, fast, ref, inputs, upstream):
    out_f, g_f = _grads(fast, inputs, upstream)
    out_r, g_r = _grads(ref, inputs, upstream)
    _compare(f"{name} forward", out_f, out_r)
    for i, (a, b) in enumerate(zip(g_f, g_r)):
        assert b.abs().sum() > 0, f"{name}: reference gradient {i} is zero; the check would prove nothing"
        _compare(f"{name} grad {i}", a, b)


def assert_no_logits_saved(fn, args, n, v, weight):
    """Apart from the weight itself, nothing kept for the backward is as large as [N, V] logits."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fn(*args)
    assert saved, "nothing saved: the hook did not see the op"
    big = [tuple(t.shape) for t in saved if t.numel() >= n * v and t.data_ptr() != weight.data_ptr()]
    assert not big, f"tensors as large as the [{n}, {v}] logits kept for the backward: {big}"


def _leaf(*shape, gen):
    t = torch.randn(*shape, generator=gen)
    t = torch.where(t.abs() < 1e-3, torch.full_like(t, 0.5), t)  # never zero
    return t.requires_grad_()


def check_bias_gelu():
    from pretrain.kernels import reference, triton_ops
    g = torch.Generator().manual_seed(0)
    x, b = _leaf(3, 5, 40, gen=g), _leaf(40, gen=g)  # 600 elements: a partial last block
    _check_pair("bias_gelu", triton_ops.bias_gelu, reference.bias_gelu, [x, b], torch.randn(3, 5, 40, generator=g))


def check_add_layer_norm():
    from pretrain.kernels import reference, triton_ops
    g = torch.Generator().manual_seed(1)
    for rows, cols in [(2 * 7, 50), (3, 64)]:
        x, r, w, b = _leaf(rows, cols, gen=g), _leaf(rows, cols, gen=g), _leaf(cols, gen=g), _leaf(cols, gen=g)
        with torch.no_grad():
            x.mul_(3).add_(1)  # a non-zero mean and non-unit variance per row
        _check_pair(f"add_layer_norm {rows}x{cols}", lambda *a: triton_ops.add_layer_norm(*a, 1e-12),
                    lambda *a: reference.add_layer_norm(*a, 1e-12), [x, r, w, b],
                    torch.randn(rows, cols, generator=g))


def check_linear_cross_entropy():
    from pretrain.kernels import reference, triton_ops
    g = torch.Generator().manual_seed(2)
    for n, h, v, chunk in [(20, 40, 150, 64), (5, 16, 33, 16)]:
        hid, w, b = _leaf(n, h, gen=g), _leaf(v, h, gen=g), _leaf(v, gen=g)
        labels = torch.randint(0, v, (n,), generator=g)
        labels[1], labels[2] = -100, v - 1  # an ignored row and the last vocabulary id
        _check_pair(f"linear_ce n={n} v={v}",
                    lambda *a, labels=labels, chunk=chunk: triton_ops.linear_cross_entropy(*a, labels, chunk),
                    lambda *a, labels=labels: reference.linear_cross_entropy_dense(*a, labels),
                    [hid, w, b], torch.tensor(1.7))
        assert_no_logits_saved(triton_ops.linear_cross_entropy, (hid, w, b, labels, chunk), n, v, w)
        _compare("linear_ce without bias", triton_ops.linear_cross_entropy(hid, w, None, labels, chunk),
                 reference.linear_cross_entropy_dense(hid, w, None, labels))


def check_model():
    """A whole training step of the tiny model: Triton kernels forced vs the PyTorch path."""
    from pretrain import kernels
    from pretrain.modeling import LinkBertForPreTraining, model_config
    torch.manual_seed(0)
    cfg = model_config("tiny", num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=48,
                       vocab_size=70, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = LinkBertForPreTraining(cfg, fused_mlm_loss=True, ce_chunk_size=32)
    ids = torch.randint(1, 70, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    pos = torch.tensor([[1, 3, 5], [2, 4, 0]])
    labels = torch.tensor([[5, 69, 7], [8, 9, -100]])
    results = {}
    for mode in ("torch", "triton"):
        kernels.set_kernel_mode(mode)
        model.zero_grad()
        out = model(ids, mask, masked_positions=pos, masked_labels=labels, relation_labels=torch.tensor([2, 1]))
        out.loss.backward()
        results[mode] = (out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    _compare("model loss", results["triton"][0], results["torch"][0])
    for name, grad in results["torch"][1].items():
        _compare(f"model grad {name}", results["triton"][1][name], grad)


CHECKS = {f.__name__[len("check_"):]: f for f in (check_bias_gelu, check_add_layer_norm,
                                                  check_linear_cross_entropy, check_model)}


@pytest.mark.parametrize("name", list(CHECKS))
def test_triton_kernel_matches_reference_interpreted(name):
    pytest.importorskip("triton")
    from tests.procs import child_env, run
    cp = run([sys.executable, __file__, name], timeout=180,
             env=child_env(TRITON_INTERPRET=1, LINKBERT_KERNELS="triton", OMP_NUM_THREADS=1))
    assert cp.stdout.strip().endswith(f"OK {name}"), cp.stdout[-3000:]


if __name__ == "__main__":
    CHECKS[sys.argv[1]]()
    print(f"OK {sys.argv[1]}")

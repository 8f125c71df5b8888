"""Triton kernels against their PyTorch references, forward and backward, under TRITON_INTERPRET=1.

Triton reads TRITON_INTERPRET when a kernel is defined, so each check runs in a child process
(this file run as a script) with the variable set; the pytest side only starts it and reads the verdict.
"""
import sys

import pytest
import torch

from tests.needs import need_module

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


def check_linear_ce_splits():
    """The forward kernel with several vocabulary slices, the last one cut short by the vocabulary: two
    of its three tiles hold no valid id (masked tiles must change neither max, sum nor target)."""
    from pretrain.kernels import triton_ops
    g = torch.Generator().manual_seed(4)
    n, h, bv = 20, 16, 16
    vspan, vocab = 3 * bv, 6 * bv + 3                       # slices [0, 48), [48, 96), [96, 99)
    splits = -(-vocab // vspan)
    hid, w, b = (torch.randn(*shape, generator=g) for shape in ((n, h), (vocab, h), (vocab,)))
    labels = torch.randint(0, vocab, (n,), generator=g)
    labels[0], labels[1] = vocab - 1, 97                     # targets inside the short slice
    pmax, psum, ptgt = (torch.empty(splits, n) for _ in range(3))
    triton_ops._linear_ce_fwd[(-(-n // 16), splits)](hid, w, b, labels, pmax, psum, ptgt, n, vocab, h, vspan,
                                                     HAS_BIAS=True, IEEE=True, BLOCK_M=16, BLOCK_V=bv,
                                                     BLOCK_K=16)
    logits = hid.double() @ w.double().T + b.double()
    for j in range(splits):
        sl = logits[:, j * vspan:min((j + 1) * vspan, vocab)]
        _compare(f"slice {j} max", pmax[j].double(), sl.max(1).values)
        _compare(f"slice {j} sum", psum[j].double(), (sl - sl.max(1, keepdim=True).values).exp().sum(1))
        inside = (labels >= j * vspan) & (labels < j * vspan + sl.shape[1])
        want = torch.where(inside, logits.gather(1, labels[:, None]).squeeze(1), torch.zeros(n, dtype=torch.double))
        _compare(f"slice {j} target", ptgt[j].double(), want)


def check_half_precision():
    """fp16 inputs (what bf16 training feeds the kernels; the interpreter's tl.dot cannot do bf16) against
    the fp32 reference on the same rounded values: the kernels accumulate in fp32."""
    from pretrain.kernels import reference, triton_ops
    g = torch.Generator().manual_seed(3)

    def pair(*shapes, half=()):
        leaves = []
        for i, shape in enumerate(shapes):
            t = torch.randn(*shape, generator=g)
            leaves.append((t.half() if i in half else t).requires_grad_())
        return leaves, [t.detach().float().requires_grad_() for t in leaves]

    def run(fn, leaves, up):
        out = fn(*leaves)
        out.backward(up.to(out.dtype))
        return out.detach().float(), [t.grad.float() for t in leaves]

    cases = [("bias_gelu", triton_ops.bias_gelu, reference.bias_gelu, ((6, 40), (40,)), (0, 1), (6, 40)),
             ("add_layer_norm", lambda *a: triton_ops.add_layer_norm(*a, 1e-12),
              lambda *a: reference.add_layer_norm(*a, 1e-12), ((6, 40), (6, 40), (40,), (40,)), (0, 1), (6, 40))]
    labels = torch.randint(0, 70, (20,), generator=g)
    cases.append(("linear_ce", lambda h, w, b: triton_ops.linear_cross_entropy(h, w, b, labels, 32),
                  lambda h, w, b: reference.linear_cross_entropy_dense(h, w, b, labels),
                  ((20, 32), (70, 32), (70,)), (0, 1, 2), ()))
    for name, fast, ref, shapes, half, up_shape in cases:
        leaves, ref_leaves = pair(*shapes, half=half)
        up = torch.randn(up_shape, generator=g)
        out_f, g_f = run(fast, leaves, up)
        out_r, g_r = run(ref, ref_leaves, up)
        torch.testing.assert_close(out_f, out_r, atol=2e-3, rtol=2e-3, msg=lambda m, name=name: f"{name} fp16: {m}")
        for i, (a, b) in enumerate(zip(g_f, g_r)):
            torch.testing.assert_close(a, b, atol=5e-3, rtol=5e-3,
                                       msg=lambda m, name=name, i=i: f"{name} fp16 grad {i}: {m}")


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
                                                  check_linear_cross_entropy, check_linear_ce_splits,
                                                  check_half_precision, check_model)}


@pytest.mark.parametrize("name", list(CHECKS))
def test_triton_kernel_matches_reference_interpreted(name):
    need_module("triton")
    from tests.procs import child_env, run
    cp = run([sys.executable, __file__, name], timeout=180,
             env=child_env(TRITON_INTERPRET=1, LINKBERT_KERNELS="triton", OMP_NUM_THREADS=1))
    assert cp.stdout.strip().endswith(f"OK {name}"), cp.stdout[-3000:]


if __name__ == "__main__":
    CHECKS[sys.argv[1]]()
    print(f"OK {sys.argv[1]}")

"""LAMB against a NumPy transcription of You et al. 2020 (Alg. 2); schedules; no-decay groups; skip guard."""
import numpy as np
import torch

from pretrain.config import build
from pretrain.optim import Lamb, build_optimizer, guard_nonfinite, lr_lambda, param_groups


def lamb_reference(w, grads, lr, b1, b2, eps, wd):
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        r = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * w
        wn, rn = np.linalg.norm(w), np.linalg.norm(r)
        ratio = min(wn / rn, 10.0) if wn > 0 and rn > 0 else 1.0
        w = w - lr * ratio * r
    return w


def test_lamb_matches_reference():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 7))
    grads = [rng.normal(size=(5, 7)) for _ in range(6)]
    p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = Lamb([p], lr=0.01, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    want = lamb_reference(w0, grads, 0.01, 0.9, 0.98, 1e-6, 0.01)
    assert np.allclose(p.detach().numpy(), want, rtol=1e-5, atol=1e-7)
    # zero weights: the trust ratio falls back to 1 (plain Adam step)
    z = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = Lamb([z], lr=0.1, weight_decay=0.0)
    z.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    opt.step()
    assert np.allclose(z.detach().numpy(), -0.1 * np.sign([1.0, -2.0, 0.5]), atol=1e-5)


def test_lamb_trains_a_regression():
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1)
    model = torch.nn.Linear(8, 1)
    opt = Lamb(model.parameters(), lr=0.05, weight_decay=0.0)
    first = None
    for _ in range(200):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 100


def test_no_decay_on_bias_and_layernorm():
    from pretrain.modeling import LinkBertForPreTraining, model_config
    model = LinkBertForPreTraining(model_config("tiny", vocab_size=100))
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    dn = {names[id(p)] for p in decay["params"]}
    nn_ = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(not n.endswith("bias") and "LayerNorm" not in n for n in dn)
    assert "bert.encoder.layer.0.attention.self.query.weight" in dn
    assert "bert.embeddings.LayerNorm.weight" in nn_ and "bert.encoder.layer.0.output.dense.bias" in nn_
    assert len(dn) + len(nn_) == len(list(model.parameters()))


def test_schedules():
    cfg = build(flags={"train": {"max_steps": 100}, "schedule": {"warmup_steps": 10}})
    f = lr_lambda(cfg)
    assert f(0) == 0.1 and f(9) == 1.0
    assert abs(f(10) - 1.0) < 1e-12 and abs(f(55) - 0.5) < 1e-12 and f(100) == 0.0
    cfg = build(flags={"train": {"max_steps": 100}, "schedule": {"warmup_steps": 0, "decay": "polynomial",
                                                                   "power": 2.0, "min_lr_ratio": 0.1}})
    f = lr_lambda(cfg)
    assert abs(f(50) - (0.1 + 0.9 * 0.25)) < 1e-12 and abs(f(100) - 0.1) < 1e-12
    cfg = build(preset="biolinkbert-base")
    assert cfg.warmup_steps() == 6250   # 10% of 62,500


def test_optimizer_selection_on_cpu():
    model = torch.nn.Linear(4, 4)
    cfg = build(flags={"optim": {"name": "lamb"}})
    opt, desc = build_optimizer(cfg, model, "cpu")
    assert isinstance(opt, Lamb) and "PyTorch" in desc
    cfg = build(flags={"optim": {"name": "adamw", "betas": [0.9, 0.98]}})
    opt, desc = build_optimizer(cfg, model, "cpu")
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.98)


def test_guard_skips_nonfinite_steps():
    p = torch.nn.Parameter(torch.ones(3))
    opt = guard_nonfinite(torch.optim.SGD([p], lr=1.0))
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    opt.step()
    assert opt.overflow and (p.detach() == 1).all()
    p.grad = torch.tensor([1.0, 1.0, 0.0])
    opt.step()
    assert not opt.overflow and (p.detach() == torch.tensor([0.0, 0.0, 1.0])).all()
    assert isinstance(opt, torch.optim.SGD)


def test_fused_optimizers_that_fail_to_build_fall_back(monkeypatch):
    """DeepSpeed's fused ops compile in their constructor: a node without nvcc/ninja fails there."""
    import sys
    import types

    from pretrain import optim

    class Unbuildable(torch.optim.Optimizer):
        def __init__(self, params, **kw):
            raise RuntimeError("Ninja is required to load C++ extensions")

    class Working(torch.optim.SGD):
        def __init__(self, params, lr, betas, eps, weight_decay, max_grad_norm):
            self.max_grad_norm = max_grad_norm
            super().__init__(params, lr=lr)

    Unbuildable.__name__, Working.__name__ = "FusedLamb", "FusedLAMB"
    model = torch.nn.Linear(4, 4)
    cfg = build(flags={"optim": {"name": "lamb"}, "train": {"zero_stage": 0}})
    monkeypatch.setattr(optim, "_fused_lamb_classes", lambda: [Unbuildable])
    opt, desc = build_optimizer(cfg, model, "cuda")
    assert isinstance(opt, Lamb) and desc == "Lamb (PyTorch)"
    monkeypatch.setattr(optim, "_fused_lamb_classes", lambda: [Unbuildable, Working])
    opt, desc = build_optimizer(cfg, model, "cuda")
    # apex's own clip (max_grad_norm 1.0 by default) is off: DeepSpeed clips the global norm once
    assert isinstance(opt, Working) and desc == "FusedLAMB (fused)" and opt.max_grad_norm == 0.0
    # offload: DeepSpeedCPUAdam builds a C++ op in its constructor
    import deepspeed.ops.adam as ds_adam
    monkeypatch.setattr(ds_adam, "DeepSpeedCPUAdam", Unbuildable)
    opt, desc = build_optimizer(build(), model, "cuda", offload=True)
    assert type(opt) is torch.optim.AdamW and "did not build" in desc
    # apex without its CUDA extension (a Python-only install) is not offered at all
    monkeypatch.undo()
    fake_apex = types.ModuleType("apex")
    fake_apex.optimizers = types.SimpleNamespace(FusedLAMB=Working)
    monkeypatch.setitem(sys.modules, "apex", fake_apex)
    monkeypatch.setitem(sys.modules, "apex.optimizers", fake_apex.optimizers)
    monkeypatch.setitem(sys.modules, "amp_C", None)   # import amp_C -> ImportError
    assert Working not in optim._fused_lamb_classes()
    monkeypatch.setitem(sys.modules, "amp_C", types.ModuleType("amp_C"))
    assert Working in optim._fused_lamb_classes()

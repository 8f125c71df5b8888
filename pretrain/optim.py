"""Optimizers and learning-rate schedules: AdamW, LAMB (fused on CUDA, PyTorch elsewhere), warmup + decay.

LAMB is written here because no CPU implementation ships with torch or DeepSpeed (DeepSpeed's
FusedLamb and apex's are CUDA kernels); it follows You et al. 2020, Algorithm 2 with decoupled weight
decay and the trust ratio ||w|| / ||update|| (1 where either norm is 0), as the fused kernels do.
"""
from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR

from pretrain.config import RunConfig

NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm", "norm.weight", "norm.bias")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on biases or LayerNorm (BERT's rule)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or any(k in name for k in NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Lamb(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, bias_correction=True,
                 max_trust: float = 10.0):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, max_trust=max_trust)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                st["step"] += 1
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                if g["bias_correction"]:
                    mh = m / (1 - b1 ** st["step"])
                    vh = v / (1 - b2 ** st["step"])
                else:
                    mh, vh = m, v
                w = p.float()
                update = mh / (vh.sqrt() + g["eps"])
                if g["weight_decay"]:
                    update = update.add(w, alpha=g["weight_decay"])
                w_norm, u_norm = w.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), (w_norm / u_norm).clamp(max=g["max_trust"]),
                                    torch.ones_like(w_norm))
                p.add_((update * trust * -g["lr"]).to(p.dtype))
        return loss


def _fused_lamb_classes():
    """Fused LAMB implementations whose CUDA code is actually present: DeepSpeed's (JIT-built on first
    construction), then apex's (only if its `amp_C` extension was compiled: a Python-only apex install
    imports fine and fails at the first step)."""
    found = []
    try:
        from deepspeed.ops.lamb import FusedLamb
        found.append(FusedLamb)
    except Exception:
        pass
    try:
        import amp_C  # noqa: F401  (apex's multi-tensor CUDA kernels)
        from apex.optimizers import FusedLAMB
        found.append(FusedLAMB)
    except Exception:
        pass
    return found


def _construct(candidates, groups, log_fallback, **kw):
    """The first candidate whose constructor succeeds. DeepSpeed's fused ops compile their CUDA code in
    the constructor (nvcc + ninja): a node without a toolchain fails there, not at import."""
    for cls in candidates:
        try:
            return cls(groups, **kw)
        except Exception as e:   # missing nvcc/ninja, no matching CUDA arch, ...
            log_fallback(f"{cls.__name__} unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "falling back")
    return None


def _log_fallback(msg: str) -> None:
    import logging
    logging.getLogger("linkbert-pretrain").warning(msg)


def build_optimizer(cfg: RunConfig, model: torch.nn.Module, device_type: str, offload: bool = False):
    """Returns (optimizer, description). CUDA gets fused kernels when they build; CPU gets PyTorch."""
    o = cfg.optim
    groups = param_groups(model, o.weight_decay)
    cuda = device_type == "cuda"
    fused = o.impl == "fused" or (o.impl == "auto" and cuda)
    common = dict(lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    if o.name == "lamb":
        for cls in (_fused_lamb_classes() if fused and cuda else []):
            # no optimizer-side clipping: DeepSpeed clips the global norm (apex defaults to its own 1.0)
            extra = {"max_grad_norm": 0.0} if cls.__name__ == "FusedLAMB" else {}
            opt = _construct([cls], groups, _log_fallback, **common, **extra)
            if opt is not None:
                return opt, f"{cls.__name__} (fused)"
        return Lamb(groups, **common), "Lamb (PyTorch)"
    if offload and cuda and fused:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        opt = _construct([DeepSpeedCPUAdam], groups, _log_fallback, adamw_mode=True, **common)
        if opt is not None:
            return opt, "DeepSpeedCPUAdam (offload)"
        # torch AdamW on the offloaded CPU master weights: slower, same result
        return torch.optim.AdamW(groups, **common), "torch AdamW (offload; DeepSpeedCPUAdam did not build)"
    use_fused = fused and cuda and not offload
    opt = torch.optim.AdamW(groups, fused=use_fused or None, **common)
    return opt, "torch AdamW" + (" (fused)" if use_fused else "")


def lr_lambda(cfg: RunConfig):
    """Multiplier of the peak lr at optimizer step s (s counts applied steps from 0)."""
    total, warm = cfg.train.max_steps, cfg.warmup_steps()
    s = cfg.schedule

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if s.decay == "constant":
            return 1.0
        frac = min(1.0, (step - warm) / max(1, total - warm))
        p = 1.0 if s.decay == "linear" else s.power
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * (1 - frac) ** p

    return f


def build_scheduler(cfg: RunConfig, optimizer) -> LambdaLR:
    return LambdaLR(optimizer, lr_lambda(cfg))


def reapply_schedule(scheduler: LambdaLR) -> list[float]:
    """Set the lr of the scheduler's current step from its (this run's) schedule; returns the new lrs.

    A resumed scheduler restores its step count and the lr it last computed, which came from the
    horizon (max_steps) of the run that saved it. The schedule is a function of the step and this
    run's horizon, so after a resume the lr is recomputed: with an unchanged --max-steps that is the
    same value; with a larger one (continuing a finished run) the next step trains at the new
    schedule's lr instead of the old schedule's final value (0 for a decay to 0)."""
    step = scheduler.last_epoch
    lrs = [base * f(step) for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)
    return lrs


def guard_nonfinite(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Make a plain optimizer skip a step whose gradients are not finite and say so via ``.overflow``,
    the attribute DeepSpeed's engine reads to skip the scheduler and count the step as skipped. ZeRO
    optimizers do this themselves; stage 0 in fp32 hands the client optimizer over unwrapped."""
    base = type(optimizer)

    class Guarded(base):
        def step(self, closure=None):
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            # one host read per step (the skip decision is the host's): norms of all grads in one kernel
            ok = bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()) if grads else True
            self.overflow = not ok
            if ok:
                return base.step(self, closure)
            return None

    Guarded.__name__ = base.__name__
    optimizer.__class__ = Guarded
    optimizer.overflow = False
    return optimizer


"""Continuing a finished run with a larger --max-steps: the lr of the next step comes from the new
horizon's schedule (never the old schedule's final 0), and an unchanged horizon restores the same lr."""
import pytest
import torch

from pretrain.config import build
from pretrain.optim import build_scheduler, lr_lambda, reapply_schedule


def _finished(max_steps: int, steps: int, decay: str = "linear"):
    cfg = build(flags={"train": {"max_steps": max_steps}, "optim": {"lr": 1e-3},
                       "schedule": {"decay": decay, "warmup_steps": 2}})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    sched = build_scheduler(cfg, opt)
    for _ in range(steps):
        opt.step()
        sched.step()
    return sched.state_dict(), opt.state_dict()


@pytest.mark.parametrize("decay", ["linear", "polynomial"])
def test_larger_horizon_recomputes_the_lr(decay):
    sched_state, opt_state = _finished(10, 10, decay)
    assert sched_state["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)   # the finished run ended at lr 0
    cfg = build(flags={"train": {"max_steps": 30}, "optim": {"lr": 1e-3},
                       "schedule": {"decay": decay, "warmup_steps": 2}})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    sched = build_scheduler(cfg, opt)
    opt.load_state_dict(opt_state)
    sched.load_state_dict(sched_state)
    assert sched.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)    # what a plain resume would train at
    lrs = reapply_schedule(sched)
    want = 1e-3 * lr_lambda(cfg)(10)
    assert want > 0 and lrs[0] == pytest.approx(want) and opt.param_groups[0]["lr"] == pytest.approx(want)
    assert sched.get_last_lr()[0] == pytest.approx(want)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(x > 0 for x in seen) and seen == sorted(seen, reverse=True)


def test_unchanged_horizon_restores_the_same_lr():
    sched_state, opt_state = _finished(10, 6)
    cfg = build(flags={"train": {"max_steps": 10}, "optim": {"lr": 1e-3}, "schedule": {"warmup_steps": 2}})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    sched = build_scheduler(cfg, opt)
    opt.load_state_dict(opt_state)
    sched.load_state_dict(sched_state)
    before = sched.get_last_lr()[0]
    assert reapply_schedule(sched)[0] == pytest.approx(before) and before > 0

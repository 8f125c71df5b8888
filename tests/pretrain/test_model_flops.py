"""The MFU formula (pretrain/flops.py) against torch's own FLOP counter on real training steps."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pretrain import flops
from pretrain.modeling import LinkBertForPreTraining, model_config


def _counted_step(model, b, s, p, sparse, training=True):
    torch.manual_seed(0)
    v = model.config.vocab_size
    ids = torch.randint(1, v, (b, s))
    kw = dict(relation_labels=torch.zeros(b, dtype=torch.long))
    if sparse:
        kw["masked_positions"] = torch.stack([torch.randperm(s - 1)[:p] + 1 for _ in range(b)])
        kw["masked_labels"] = torch.randint(0, v, (b, p))
    else:  # dense head: every position predicted
        kw["masked_labels"] = torch.randint(0, v, (b, s))
    with FlopCounterMode(display=False, custom_mapping=flops.flop_counter_mapping()) as counter:
        out = model(ids, torch.ones_like(ids), **kw)
        if training:
            out.loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("spec,extra,b,s,p", [
    ("tiny", dict(vocab_size=1000), 2, 32, 5),
    ("tiny", dict(vocab_size=777, num_hidden_layers=3, hidden_size=96, num_attention_heads=4,
                  intermediate_size=200), 3, 24, 4),
])
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "forward"])
def test_formula_equals_profiler_count(spec, extra, b, s, p, sparse, training):
    cfg = model_config(spec, **extra)
    model = LinkBertForPreTraining(cfg, fused_mlm_loss=False)  # the chunked loss recomputes logits
    counted = _counted_step(model, b, s, p, sparse, training)
    predicted = flops.flops_per_token(cfg, s, masked_fraction=p / s, sparse_mlm=sparse, training=training) * b * s
    assert counted == pytest.approx(predicted, rel=1e-9)


def test_sparse_head_saves_what_the_formula_says():
    cfg = model_config("tiny")
    dense = flops.flops_per_token(cfg, 128, sparse_mlm=False)
    sparse = flops.flops_per_token(cfg, 128, masked_fraction=0.15)
    # tiny: the 30522-word decoder dominates, so predicting 15% of positions is a large saving
    assert 3.5 < dense / sparse < 5.0
    base = model_config("base")
    assert 1.1 < flops.flops_per_token(base, 128, sparse_mlm=False) / flops.flops_per_token(base, 128) < 1.3


def test_peak_flops_table_and_cpu_estimate(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 PCIe")
    assert flops.peak_flops("cuda:0", torch.bfloat16) == 756e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 80GB HBM3")
    assert flops.peak_flops("cuda:0", torch.bfloat16) == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA A100-SXM4-40GB")
    assert flops.peak_flops("cuda:0", torch.float32) == 156e12
    cpu = flops.peak_flops("cpu", torch.float32)
    assert 1e9 < cpu < 1e14


def test_batch_flops_of_a_ragged_batch_is_the_sum_of_its_sequences():
    """benchmarks/bench_gpu.py's MFU: attention from each sequence's own length and the masked labels
    actually present, i.e. what torch counts running each sequence alone, without padding."""
    model = LinkBertForPreTraining(model_config("tiny", vocab_size=500)).train()
    lens, p = [20, 13, 7], 3
    total = sum(_counted_step(model, 1, n, p, sparse=True) for n in lens)
    assert flops.batch_flops(model.config, lens, p * len(lens)) == pytest.approx(total, rel=0.02)
    # equal lengths: the per-token formula at the batch's masked fraction
    s, b = 16, 4
    assert flops.batch_flops(model.config, [s] * b, 8) == pytest.approx(
        flops.flops_per_token(model.config, s, masked_fraction=8 / (s * b)) * s * b)

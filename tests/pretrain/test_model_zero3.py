"""The model under DeepSpeed ZeRO-3 with every parameter partitioned: the fused ops must see gathered
weights (each parameter is used inside its owning module's forward), so loss and update equal a plain run.

Runs as a child process (this file as a script) because DeepSpeed initialises torch.distributed.
"""
import sys

import pytest
import torch

from tests.needs import need_module

STEPS_LR = 0.5


def _model_and_batch():
    from pretrain.modeling import LinkBertForPreTraining, model_config
    torch.manual_seed(0)
    cfg = model_config("tiny", num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=48,
                       vocab_size=90, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = LinkBertForPreTraining(cfg, fused_mlm_loss=True, ce_chunk_size=32)
    ids = torch.randint(1, 90, (3, 10))
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0
    batch = dict(input_ids=ids, attention_mask=mask, masked_positions=torch.tensor([[1, 2], [3, 0], [5, 6]]),
                 masked_labels=torch.tensor([[4, 80], [7, -100], [9, 10]]), relation_labels=torch.tensor([0, 1, 2]))
    return model, batch


def child() -> None:
    import deepspeed

    model, batch = _model_and_batch()
    plain, _ = _model_and_batch()
    opt = torch.optim.SGD(plain.parameters(), lr=STEPS_LR)
    want = plain(**batch).loss
    want.backward()
    opt.step()

    deepspeed.init_distributed(dist_backend="gloo")
    ds_config = {"train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 1,
                 "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
                 "zero_allow_untested_optimizer": True, "steps_per_print": 10**9,
                 "gradient_clipping": 0.0}  # DeepSpeed 0.19 otherwise clips at 1.0
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=STEPS_LR),
                                      config=ds_config)
    assert engine.module.bert.encoder.layer[0].output.LayerNorm.weight.numel() == 0, "not partitioned"
    loss = engine(**batch).loss
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)
    engine.backward(loss)
    engine.step()
    params = dict(engine.module.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values())):
        bad = [name for name, p in plain.named_parameters()
               if not torch.allclose(params[name].detach(), p.detach(), atol=1e-5, rtol=1e-5)]
        assert not bad, f"parameters differ from the plain run after one step: {bad}"
    torch.distributed.destroy_process_group()
    print("OK zero3")


@pytest.mark.slow
def test_zero3_partitioned_training_step_equals_plain(tmp_path):
    need_module("deepspeed")
    from tests.procs import child_env, free_port, run
    env = child_env(RANK=0, LOCAL_RANK=0, WORLD_SIZE=1, LOCAL_WORLD_SIZE=1, MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=free_port(), DS_ACCELERATOR="cpu", OMP_NUM_THREADS=1)
    cp = run([sys.executable, __file__], timeout=300, env=env, cwd=tmp_path)
    assert cp.stdout.strip().endswith("OK zero3"), cp.stdout[-3000:]


if __name__ == "__main__":
    child()

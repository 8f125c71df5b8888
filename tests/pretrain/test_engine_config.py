"""The typed config: presets, files (JSON/YAML/TOML), flags, --section.key=value, errors, DeepSpeed filling."""
import json

import pytest

from pretrain.cli import config_from_args, main
from pretrain.config import RUN_PRESETS, ConfigError, build, check_batch, fill_ds_config


def test_precedence_preset_file_flags_overrides(tmp_path, minilm_dir):
    f = tmp_path / "run.yaml"
    f.write_text("preset: linkbert-base\noptim:\n  lr: 1.0e-4\n  name: lamb\ntrain:\n  max_steps: 50\n")
    cfg, _ = config_from_args(["--config", str(f), "--data", "d1", "d2", "--output", "o", "--max-steps", "7",
                               "--init-from", str(minilm_dir),
                               "--optim.betas=0.8,0.9", "--schedule.decay", "polynomial", "--lr", "2e-4"])
    assert cfg.model.name == "base"                     # from the preset named in the file
    assert cfg.train.global_batch_size == 2048          # preset
    assert cfg.optim.name == "lamb"                     # file
    assert cfg.train.max_steps == 7 and cfg.optim.lr == 2e-4   # flags beat the file
    assert cfg.optim.betas == (0.8, 0.9) and cfg.schedule.decay == "polynomial"
    assert cfg.data.paths == ["d1", "d2"]


@pytest.mark.parametrize("suffix,text", [
    (".json", '{"train": {"seed": 5}, "data": {"whole_word": true}}'),
    (".toml", "[train]\nseed = 5\n[data]\nwhole_word = true\n"),
])
def test_file_formats(tmp_path, suffix, text):
    f = tmp_path / f"c{suffix}"
    f.write_text(text)
    cfg = build(file=str(f))
    assert cfg.train.seed == 5 and cfg.data.whole_word is True


def test_paper_presets(minilm_dir):
    assert RUN_PRESETS["linkbert-tiny"]["optim"]["lr"] == 5e-3
    cfg = build(preset="linkbert-large", flags={"model": {"init_from": str(minilm_dir)}})
    assert (cfg.optim.lr, cfg.train.max_steps, cfg.optim.betas, cfg.optim.weight_decay) == (2e-4, 40000, (0.9, 0.98), 0.01)
    cfg = build(preset="biolinkbert-large")
    assert cfg.warmup_steps() == 12500 and cfg.train.global_batch_size == 8192 and cfg.optim.lr == 4e-4


@pytest.mark.parametrize("override,msg", [
    ("--optim.lrr=1", "unknown key optim.lrr"),
    ("--foo.bar=1", "unknown section 'foo'"),
    ("--train.max_steps=abc", "train.max_steps: expected int"),
    ("--train.precision=fp8", "train.precision must be"),
    ("--data.whole_word=maybe", "expected true/false"),
])
def test_config_errors_are_one_line(override, msg, capsys):
    assert main(["--data", "x", "--output", "y", override]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1


def test_batch_size_check():
    cfg = build(flags={"train": {"micro_batch_size": 8, "grad_accum": 2, "global_batch_size": 2048}})
    with pytest.raises(ConfigError, match=r"micro 8 x accum 2 x world 4 = 64; use --grad-accum 64"):
        check_batch(cfg, 4)
    cfg.train.grad_accum = 64
    assert check_batch(cfg, 4) == 2048
    cfg = build(flags={"train": {"micro_batch_size": 3, "global_batch_size": 100}})
    with pytest.raises(ConfigError, match="micro x accum = 50"):
        check_batch(cfg, 2)


def test_ds_config_autos_filled(tmp_path):
    cfg = build(flags={"train": {"micro_batch_size": 4, "grad_accum": 3, "precision": "bf16", "zero_stage": 3},
                       "optim": {"grad_clip": 0.5}})
    ds, client = fill_ds_config(cfg, world=2)
    assert ds["train_batch_size"] == 24 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == 3 and ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    assert ds["zero_optimization"]["stage"] == 3 and client and "optimizer" not in ds
    assert "auto" not in json.dumps(ds)
    cfg = build(flags={"train": {"deepspeed_config": "ds_configs/zero2_offload.json"}})
    ds, _ = fill_ds_config(cfg, world=1)
    assert cfg.train.zero_stage == 2 and ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_force_ds_cpu_optimizer"] is False
    custom = tmp_path / "ds.json"
    custom.write_text(json.dumps({"train_micro_batch_size_per_gpu": 16, "zero_optimization": {"stage": 1},
                                  "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}))
    with pytest.raises(ConfigError, match=r"stage=1 contradicts --zero-stage 2; drop one of them"):
        build(flags={"train": {"deepspeed_config": str(custom), "micro_batch_size": 8, "zero_stage": 2}})
    cfg = build(flags={"train": {"deepspeed_config": str(custom), "micro_batch_size": 8}})
    assert cfg.train.zero_stage == 1   # taken from the file at build time, not changed later
    with pytest.raises(ConfigError, match="contradicts"):
        fill_ds_config(cfg, world=1)
    cfg.train.micro_batch_size = 16
    ds, client = fill_ds_config(cfg, world=1)
    assert not client and ds["optimizer"]["params"]["lr"] == cfg.optim.lr


def test_fp16_needs_cuda():
    cfg = build(flags={"train": {"precision": "fp16"}})
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        fill_ds_config(cfg, world=1, device_type="cpu")
    ds, _ = fill_ds_config(cfg, world=1, device_type="cuda")
    assert ds["fp16"]["enabled"] is True and ds["bf16"]["enabled"] is False


def test_print_config(capsys):
    assert main(["--preset", "linkbert-tiny", "--data", "d", "--output", "o", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["optim"]["lr"] == 5e-3 and cfg["schedule"]["warmup_steps"] == 5000


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_lamb_under_zero_is_refused(stage):
    # ZeRO >= 1 hands the optimizer flat partitions: LAMB's per-tensor trust ratios would be computed
    # over slices that cut across tensors
    cfg = build(flags={"optim": {"name": "lamb"}, "train": {"zero_stage": stage}})
    with pytest.raises(ConfigError, match=f"LAMB with ZeRO-{stage}:.*--zero-stage 0"):
        fill_ds_config(cfg, world=2)
    cfg = build(flags={"optim": {"name": "lamb"}, "train": {"zero_stage": 0}})
    fill_ds_config(cfg, world=2)   # per-tensor LAMB at ZeRO-0 is fine


def test_bf16_zero123_accumulates_gradients_in_fp32():
    # stage 0: DeepSpeed refuses a bf16 model with fp32 accumulation without ZeRO
    for stage, want in ((0, None), (1, "fp32"), (2, "fp32"), (3, "fp32")):
        cfg = build(flags={"train": {"zero_stage": stage, "precision": "bf16"}})
        ds, _ = fill_ds_config(cfg, world=2)
        assert ds.get("data_types", {}).get("grad_accum_dtype") == want, stage
    ds, _ = fill_ds_config(build(flags={"train": {"zero_stage": 2}}), world=2)
    assert "data_types" not in ds   # fp32 runs accumulate in fp32 anyway

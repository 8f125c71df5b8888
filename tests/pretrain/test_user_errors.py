"""Every user error of a pretraining run is one line with the path/value and the fix (issue 11): bad
config values, a full or unwritable disk during a save or for the metrics file, a shard that cannot be
read mid-run. Real bugs keep their traceback."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from pretrain import checkpoint as ckpt
from pretrain import storage
from pretrain.cli import main
from pretrain.metrics import MetricsWriter
from pretrain.storage import StorageError
from tests.pretrain.engine_helpers import synthetic_dataset

FULL = "/dev/full"   # every write fails with ENOSPC: a disk that is full, without filling one
needs_dev_full = pytest.mark.skipif(not os.path.exists(FULL), reason="needs /dev/full (Linux)")


@pytest.mark.parametrize("argv,msg", [
    (["--lr", "-1"], "optim.lr=-1.0: the learning rate must be > 0"),
    (["--lr", "0"], "optim.lr=0.0"),
    (["--save-every", "-5"], "checkpoint.save_every=-5: must be >= 0"),
    (["--checkpoint.hf_every=-1"], "checkpoint.hf_every=-1"),
    (["--data.held_out=-3"], "data.held_out=-3"),
    (["--data.verify=sometimes"], "data.verify='sometimes': use full, quick or none"),
    (["--train.zero_stage=7"], "train.zero_stage=7: ZeRO stages are 0, 1, 2 or 3"),
    (["--schedule.warmup_steps=-2"], "schedule.warmup_steps=-2"),
    (["--metrics.log_every=0"], "metrics.log_every"),
])
def test_bad_values_are_one_line_exit_2(argv, msg, tmp_path, capsys):
    assert main(["--data", "x", "--output", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err


def test_zero_stage_7_in_a_deepspeed_config_is_one_line(tmp_path, capsys):
    from pretrain.config import ConfigError, build, fill_ds_config
    f = tmp_path / "ds.json"
    f.write_text(json.dumps({"zero_optimization": {"stage": 7}}))
    with pytest.raises(ConfigError, match=r"ds.json: zero_optimization.stage=7; ZeRO stages are 0, 1, 2 or 3"):
        build(flags={"train": {"deepspeed_config": str(f)}})   # found when the config is built
    cfg = build()
    cfg.train.deepspeed_config = str(f)
    with pytest.raises(ConfigError, match=r"ds.json: zero_optimization.stage=7; ZeRO stages are 0, 1, 2 or 3"):
        fill_ds_config(cfg, world=1)


def test_cli_catches_user_errors_once_and_keeps_bug_tracebacks(tmp_path, monkeypatch, capsys):
    from pretrain import trainer
    d = synthetic_dataset(tmp_path / "d", n=20, shards=1)
    args = ["--data", str(d), "--output", str(tmp_path / "o")]

    def user_error(cfg):
        raise StorageError(f"{tmp_path}/o: writing x failed: the disk is full")
    monkeypatch.setattr(trainer, "train", user_error)
    assert main(args) == 3
    assert capsys.readouterr().err.strip() == f"linkbert-pretrain: error: {tmp_path}/o: writing x failed: the disk is full"

    def bug(cfg):
        raise FileNotFoundError("/some/internal/file")   # our own code's bug: a traceback, not a one-liner
    monkeypatch.setattr(trainer, "train", bug)
    with pytest.raises(FileNotFoundError):
        main(args)


class FakeEngine:
    """The slice of a DeepSpeed engine that checkpoint.save uses; writes with torch.save like DeepSpeed."""

    def __init__(self, target=None):
        self.target = target

    def save_checkpoint(self, root, tag, client_state, save_latest):
        folder = os.path.join(root, tag)
        os.makedirs(folder, exist_ok=True)
        torch.save({"w": torch.zeros(4096)}, self.target or os.path.join(folder, "mp_rank_00_model_states.pt"))


def _save(out, step, engine, **kw):
    return ckpt.save(engine, out, step, {"step": step}, 0, lambda: None, None, keep_last=1, **kw)


@needs_dev_full
def test_disk_full_during_a_save_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    first = _save(out, 1, FakeEngine())
    assert (first / ckpt.COMPLETE).is_file()
    with pytest.raises(StorageError) as e:   # was RuntimeError: [enforce fail at inline_container.cc]
        _save(out, 2, FakeEngine(target=FULL))
    msg = str(e.value)
    assert "\n" not in msg and str(out / "checkpoints" / "step2") in msg and "disk" in msg
    assert f"the last complete checkpoint {first} is kept" in msg
    assert ckpt.latest_complete(out) == first and (first / ckpt.COMPLETE).is_file()
    # an output whose parent vanished (was: `Parent directory ... does not exist`, naming no disk)
    with pytest.raises(StorageError, match="writing checkpoint step3 failed"):
        _save(out, 3, FakeEngine(target=str(tmp_path / "gone" / "x.pt")))
    assert ckpt.latest_complete(out) == first


def test_free_space_is_checked_before_a_save(tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = _save(out, 1, FakeEngine())
    monkeypatch.setattr(storage, "free_bytes", lambda path: 100)
    with pytest.raises(StorageError, match=r"needed for checkpoint step2, but the disk mounted at .* has only "
                                           r"100 B free.*the last complete checkpoint .*step1 is kept"):
        _save(out, 2, FakeEngine())
    assert not (out / "checkpoints" / "step2").exists() and ckpt.latest_complete(out) == first


@needs_dev_full
def test_metrics_file_on_a_full_disk(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").symlink_to(FULL)
    w = MetricsWriter(out, 0, 10, tensorboard=False, progress=False)
    with pytest.raises(StorageError, match=r"metrics.jsonl: writing the metrics file failed: the disk is full"):
        w.log({"step": 1, "loss": 1.0})
    w.close()
    # a rerun while the disk is still full: dropping the dead run's records must be written too
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}) + "\n")
    (out / "metrics.jsonl.tmp").symlink_to(FULL)
    with pytest.raises(StorageError, match="metrics.jsonl: writing the metrics file failed: the disk is full"):
        MetricsWriter(out, 1, 10, tensorboard=False, progress=False)


def test_a_shard_damaged_after_start_names_the_shard_and_rows(tmp_path):
    from data_prep.shards import ShardError
    from pretrain.data import PairDataset
    d = synthetic_dataset(tmp_path / "d", n=200, shards=2)
    ds = PairDataset(d, cache_mb=8)
    good = ds.read(np.arange(150, 160))
    assert good["input_ids"].shape == (10, 16)
    ds.close()
    (d / "shard_00001.h5").write_bytes(b"\0" * 4096)   # replaced behind the run's back
    with pytest.raises(ShardError, match=r"shard_00001.h5: cannot read rows 50..59 .*linkbert-prep verify"):
        ds.read(np.arange(150, 160))


def test_first_save_checks_space_from_the_parameter_count(tmp_path, monkeypatch):
    engine = FakeEngine()
    engine.module = torch.nn.Linear(100, 100)   # 10,100 parameters -> ~160 KB at 16 bytes each
    monkeypatch.setattr(storage, "free_bytes", lambda path: 100_000)
    with pytest.raises(StorageError, match=r"about 161.6 KB needed for checkpoint step1"):
        _save(tmp_path / "run", 1, engine)
    monkeypatch.setattr(storage, "free_bytes", lambda path: 10**9)
    assert (_save(tmp_path / "run", 1, engine) / ckpt.COMPLETE).is_file()


def test_export_to_an_unwritable_place_is_one_line(tmp_path, monkeypatch):
    from pretrain.modeling import LinkBertForPreTraining, model_config
    config = model_config("tiny", vocab_size=50)
    folder = tmp_path / "checkpoints" / "step1"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"step": 1, "model_config": config.to_dict()}))
    state = LinkBertForPreTraining(config).state_dict()
    monkeypatch.setattr(ckpt, "consolidated_state_dict", lambda f: state)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError, match=r"afile/hf: writing the Hugging Face export failed: .*step1 is complete"):
        ckpt.export_hf(folder, tmp_path / "afile" / "hf")
    assert (ckpt.export_hf(folder, tmp_path / "hf") / "model.safetensors").is_file()

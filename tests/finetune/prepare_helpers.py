"""Shared by tests/finetune/test_prepare_*.py: run `prepare`, then a few fine-tuning steps with a preset."""
from __future__ import annotations

from pathlib import Path

import torch

from finetune import cli
from finetune.prepare import main as prepare_main
from tests.finetune.helpers import FIX, outputs

RAW = FIX / "raw"


def prepare(capsys, *argv) -> tuple[int, list[str], list[str]]:
    """(exit code, stdout lines, stderr lines) of `linkbert-finetune prepare ARGV` run in-process."""
    code = cli.main(["prepare", *map(str, argv)])
    cap = capsys.readouterr()
    return code, cap.out.splitlines(), cap.err.splitlines()


def finetune_preset(preset: str, model, out: Path, train=None, validation=None, test=None,
                    save_model: bool = False, **flags) -> dict:
    """A few steps of `linkbert-finetune --preset PRESET` on prepared files, at test speed: one thread
    (on the shared 2-core box a tiny model's step took 6x longer with two contending threads)."""
    opts = {"max_steps": 2, "max_seq_length": 32, "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 8, "logging_steps": 1, "warmup_steps": 0, **flags}
    argv = ["--preset", preset, "--model", str(model), "--output", str(out), "--disable_tqdm"]
    if not save_model:
        argv.append("--no_save_model")
    for flag, path in (("--train", train), ("--validation", validation), ("--test", test)):
        if path is not None:
            argv += [flag, str(path)]
    for k, v in opts.items():
        argv += [f"--{k}", str(v)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return outputs(out)


def split_files(folder: Path) -> dict:
    """train/validation/test keyword arguments for the data.zip-style train.json, dev.json, test.json."""
    return {"train": folder / "train.json", "validation": folder / "dev.json", "test": folder / "test.json"}


__all__ = ["RAW", "prepare", "prepare_main", "finetune_preset", "split_files"]

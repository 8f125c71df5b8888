"""Checkpoint bookkeeping: only complete checkpoints count, retention, resolving a user's path."""
import pytest

from pretrain.checkpoint import COMPLETE, CheckpointError, latest_complete, list_tags, prune, resolve


def make(root, step, complete=True):
    d = root / "checkpoints" / f"step{step}"
    d.mkdir(parents=True)
    (d / "mp_rank_00_model_states.pt").write_bytes(b"x")
    if complete:
        (d / COMPLETE).write_text("{}")
    return d


def test_latest_complete_skips_interrupted_saves(tmp_path):
    assert latest_complete(tmp_path) is None
    make(tmp_path, 10)
    make(tmp_path, 20)
    make(tmp_path, 30, complete=False)     # DeepSpeed's `latest` would point here
    (tmp_path / "checkpoints" / "latest").write_text("step30")
    assert latest_complete(tmp_path).name == "step20"
    assert resolve(tmp_path).name == "step20"
    assert resolve(tmp_path / "checkpoints").name == "step20"
    assert resolve(tmp_path / "checkpoints" / "step10").name == "step10"
    with pytest.raises(CheckpointError, match="interrupted"):
        resolve(tmp_path / "checkpoints" / "step30")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        resolve(tmp_path / "nothing")


def test_prune_keeps_last_k_and_drops_stale_incomplete(tmp_path):
    for s in (1, 2, 3, 4):
        make(tmp_path, s)
    make(tmp_path, 0, complete=False)
    root = tmp_path / "checkpoints"
    removed = prune(root, keep_last=2)
    assert sorted(p.name for p in removed) == ["step0", "step1", "step2"]
    assert [s for s, _ in list_tags(root)] == [3, 4]
    make(tmp_path, 9, complete=False)      # newer than the newest complete: a save in flight elsewhere
    prune(root, keep_last=2)
    assert (root / "step9").is_dir()


def test_one_tokenizer_file_list_for_builds_checkpoints_and_exports():
    # three copies had drifted: the checkpoint's lacked added_tokens.json, so exports made from a checkpoint
    # dropped a tokenizer's added tokens
    from data_prep import build, hub, shards
    from pretrain import checkpoint, hf_io
    assert "added_tokens.json" in shards.TOKENIZER_FILES
    assert build.TOKENIZER_FILES is checkpoint.TOKENIZER_FILES is hf_io.TOKENIZER_FILES is shards.TOKENIZER_FILES
    assert set(shards.TOKENIZER_FILES) <= set(hub.TOKENIZER_PATTERNS)

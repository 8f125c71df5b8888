"""Start-up checks (issue 11): vocabulary identity, shards as the manifest says, held-out size, output disk;
each problem one line naming the file and the fix, before any engine is built."""
from __future__ import annotations

import json
import shutil

import pytest

from pretrain import storage
from pretrain.cli import main
from pretrain.config import build
from pretrain.preflight import PreflightError, PreflightReport, agree, preflight
from tests.pretrain.engine_helpers import build_jargon, synthetic_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory, minilm_dir):
    return build_jargon(minilm_dir, tmp_path_factory.mktemp("pf") / "data", max_seq_len=64)


@pytest.fixture
def data_copy(data, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(data, dst)
    return dst


def other_vocab(minilm_dir, dst):
    """MiniLM's tokenizer and config with two tokens' ids swapped: same size, another vocabulary."""
    dst.mkdir()
    for name in ("config.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, dst / name)
    lines = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    lines[2000], lines[2001] = lines[2001], lines[2000]
    (dst / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
    tj = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    v = tj["model"]["vocab"]
    a, b = lines[2001], lines[2000]   # the original order's tokens 2000 and 2001
    v[a], v[b] = v[b], v[a]
    (dst / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    return dst


def cfg_for(data, out, **flags):
    sections = {"data": {"paths": [str(data)]}, "train": {"output": str(out)}}
    for k, v in flags.items():
        sec, key = k.split("__")
        sections.setdefault(sec, {})[key] = v
    return build(flags=sections)


def one_problem(report: PreflightReport, *needles):
    assert len(report.problems) == 1, report.text()
    msg = str(report.problems[0])
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_matching_run_passes(data, minilm_dir, tmp_path):
    r = preflight(cfg_for(data, tmp_path / "run", model__init_from=str(minilm_dir)))
    assert r.ok, r.text()
    assert r.vocab_sha256 == json.loads((data / "manifest.json").read_text())["tokenizer"]["vocab_sha256"]
    text = r.text()
    for what in ("vocabulary: the data's is the one of --init-from", "shards: 1 shard(s)", "checked (full)",
                 "held-out: 256 of", "model: --init-from", "output", "devices:", "batch: micro 8"):
        assert what in text
    assert not (tmp_path / "run").exists(), "a preflight creates nothing"


def test_init_from_same_size_other_vocabulary_is_refused(data, minilm_dir, tmp_path, capsys):
    other = other_vocab(minilm_dir, tmp_path / "other")
    r = preflight(cfg_for(data, tmp_path / "run", model__init_from=str(other)))
    one_problem(r, f"--init-from {other}", "vocabulary", "rebuild the data with --tokenizer")
    r = preflight(cfg_for(data, tmp_path / "run", data__tokenizer=str(other)))
    one_problem(r, f"--data.tokenizer {other}")
    rc = main(["--data", str(data), "--output", str(tmp_path / "run"), "--init-from", str(other), "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1 and "vocabulary" in err[0] and str(other) in err[0]


def make_checkpoint(out, step, tokenizer_dir=None, meta=None):
    d = out / "checkpoints" / f"step{step}"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"step": step, "model_config": {"vocab_size": 30522}, **(meta or {})}))
    (d / "mp_rank_00_model_states.pt").write_bytes(b"x" * 1000)
    if tokenizer_dir is not None:
        for name in ("vocab.txt", "tokenizer.json"):
            shutil.copy(tokenizer_dir / name, d / name)
    (d / "COMPLETE").write_text("{}")
    return d


def test_resume_on_data_of_another_vocabulary_is_refused(data, minilm_dir, tmp_path):
    other = other_vocab(minilm_dir, tmp_path / "other")
    out = tmp_path / "run"
    make_checkpoint(out, 5, tokenizer_dir=minilm_dir)
    r = preflight(cfg_for(data, out))
    assert r.ok and "resume: step 5" in r.text() and "(same vocabulary)" in r.text()
    make_checkpoint(out, 10, tokenizer_dir=other)
    one_problem(preflight(cfg_for(data, out)), "step10", "refused")
    # a hash recorded in run.json wins over the tokenizer files
    make_checkpoint(out, 15, tokenizer_dir=minilm_dir, meta={"vocab_sha256": "0" * 64})
    one_problem(preflight(cfg_for(data, out)), "step15/run.json", "refused")
    # nothing recorded: the sizes must agree at least (was a `size mismatch` traceback)
    make_checkpoint(out, 20, meta={"model_config": {"vocab_size": 1000}})
    one_problem(preflight(cfg_for(data, out)), "1000-token vocabulary", "refused")


def test_old_manifest_without_vocab_hash(data_copy, minilm_dir, tmp_path):
    m = json.loads((data_copy / "manifest.json").read_text())
    del m["tokenizer"]["vocab_sha256"]
    (data_copy / "manifest.json").write_text(json.dumps(m))
    r = preflight(cfg_for(data_copy, tmp_path / "run", model__init_from=str(minilm_dir)))
    assert r.ok and any("no vocabulary hash" in n and "tokenizer copy" in n for n in r.notes), r.text()
    shutil.rmtree(data_copy / "tokenizer")
    r = preflight(cfg_for(data_copy, tmp_path / "run", model__init_from=str(minilm_dir)))
    one_problem(r, "records no vocabulary hash", "rebuild the data with `linkbert-prep build`")


def test_swapped_and_damaged_shards(tmp_path):
    d = synthetic_dataset(tmp_path / "syn", n=400, shards=4)
    m = json.loads((d / "manifest.json").read_text())
    for s in m["shards"]:
        s["size"] = (d / s["path"]).stat().st_size
    (d / "manifest.json").write_text(json.dumps(m))
    cfg = cfg_for(d, tmp_path / "run", data__held_out=10)
    assert preflight(cfg).ok
    p = d / "shard_00002.h5"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x40
    p.write_bytes(bytes(b))
    one_problem(preflight(cfg), "shard_00002.h5: sha256")
    cfg.data.verify = "none"
    assert preflight(cfg).ok          # size and pair count cannot see a flipped byte: what `full` is for
    # ranks share the hashing: only the rank that hashes shard 2 sees it; agree() gives it to all
    cfg.data.verify = "full"
    reports = [preflight(cfg, rank=r, world=2) for r in range(2)]
    assert [len(x.problems) for x in reports] == [1, 0]

    class FakeDist:
        def get_world_size(self):
            return 2

        def all_gather_object(self, out, obj):
            out[:] = [[(type(e).__name__, str(e)) for e in x.problems] for x in reports]

    merged = agree(reports[1], FakeDist())
    assert len(merged.problems) == 1 and "shard_00002.h5" in str(merged.problems[0])
    # valid shards swapped in under other names (same pair count here, same size even): the sha256 sees it
    shutil.copy(d / "shard_00000.h5", p)
    shutil.copy(d / "shard_00003.h5", d / "shard_00000.h5")
    r = preflight(cfg)
    assert [("shard_00000.h5" in str(e), "shard_00002.h5" in str(e)) for e in r.problems] == [(1, 0), (0, 1)]


def test_held_out_larger_than_the_data(tmp_path, capsys):
    d = synthetic_dataset(tmp_path / "syn", n=40, shards=1)
    one_problem(preflight(cfg_for(d, tmp_path / "run")), "data.held_out=256", "only 40 pairs",
                "lower --data.held_out")
    rc = main(["--data", str(d), "--output", str(tmp_path / "run"), "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1 and "data.held_out=256" in err[0]


def test_output_free_space_and_writability(tmp_path, monkeypatch):
    d = synthetic_dataset(tmp_path / "syn", n=100, shards=1)
    monkeypatch.setattr(storage, "free_bytes", lambda path: 1000)
    one_problem(preflight(cfg_for(d, tmp_path / "run", data__held_out=10)), f"{tmp_path / 'run'}",
                "has only 1.0 KB free", "mounted at", "free space there")
    monkeypatch.undo()
    (tmp_path / "afile").write_text("x")
    one_problem(preflight(cfg_for(d, tmp_path / "afile" / "run", data__held_out=10)), "cannot write there")


def test_preflight_error_is_a_pretrain_error():
    from data_prep.errors import PrepError
    from data_prep.shards import ShardError
    from pretrain.checkpoint import CheckpointError
    from pretrain.config import ConfigError
    from pretrain.dist_env import RendezvousError
    from pretrain.errors import PretrainError
    from pretrain.presets import ConfigError as ModelConfigError
    for cls in (PreflightError, CheckpointError, ConfigError, RendezvousError, ModelConfigError,
                storage.StorageError):
        assert issubclass(cls, PretrainError), cls
    assert issubclass(ShardError, PrepError)
    assert not issubclass(FileNotFoundError, PretrainError)


def test_check_or_raise_combines_ranks_and_raises_on_every_rank(tmp_path):
    import logging

    from pretrain.preflight import check_or_raise
    d = synthetic_dataset(tmp_path / "syn", n=200, shards=2)
    cfg = cfg_for(d, tmp_path / "run", data__held_out=10)
    assert check_or_raise(cfg).vocab_sha256 is None   # a synthetic manifest records no vocabulary
    p = d / "shard_00001.h5"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x40
    p.write_bytes(bytes(b))
    own = [preflight(cfg, rank=r, world=2).problems for r in range(2)]
    assert [len(x) for x in own] == [0, 1]    # rank 1 hashes shard 1

    class FakeDist:
        def get_world_size(self):
            return 2

        def all_gather_object(self, out, obj):
            out[:] = [[(type(e).__name__, str(e)) for e in x] for x in own]

    records = []

    class Log(logging.Handler):
        def emit(self, rec):
            records.append(rec.getMessage())
    log = logging.getLogger("test-preflight")
    log.addHandler(Log())
    log.setLevel(logging.INFO)
    with pytest.raises(PreflightError, match="shard_00001.h5: sha256"):
        check_or_raise(cfg, rank=0, world=2, dist=FakeDist(), log=log)   # rank 0 raises rank 1's finding
    assert any(r.startswith("preflight: shards: 2 shard(s)") for r in records)


def test_dry_run_reports_batch_arithmetic_for_the_job_world(data, minilm_dir, tmp_path, capsys):
    args = ["--data", str(data), "--output", str(tmp_path / "run"), "--init-from", str(minilm_dir), "--dry-run"]
    assert main(args + ["--world", "4"]) == 0
    out = capsys.readouterr().out
    assert "batch: micro 8 x accum 1 x world 4 = 32 pairs/step" in out and "every start-up check passed" in out
    rc = main(args + ["--world", "4", "--train.global_batch_size=2048"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "use --grad-accum 64" in err[0]
    assert not (tmp_path / "run").exists()

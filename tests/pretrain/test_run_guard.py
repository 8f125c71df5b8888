"""Runs that share a folder or resume with other settings (issue 19), in-process: the lock of --output,
--output/--data overlap, a lying manifest, unlisted shards, another model shape, another global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pretrain import run_guard
from pretrain.cli import main
from pretrain.config import build
from pretrain.preflight import preflight
from tests.pretrain.engine_helpers import synthetic_dataset
from tests.procs import child_env


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return synthetic_dataset(tmp_path_factory.mktemp("guard") / "syn", n=200, shards=2)


def cfg_for(data, out, **sections):
    s = {"data": {"paths": [str(data)], "held_out": 10}, "train": {"output": str(out)}}
    for k, v in sections.items():
        sec, key = k.split("__")
        s.setdefault(sec, {})[key] = v
    return build(flags=s)


def problems(report):
    return [str(p) for p in report.problems]


def test_refused_run_leaves_no_empty_output(syn, tmp_path):
    """A run stopped before it wrote anything (preflight) removes the --output it created, only that."""
    fresh, kept, wrote = tmp_path / "a" / "fresh", tmp_path / "kept", tmp_path / "wrote"
    kept.mkdir()
    for out in (fresh, kept, wrote):
        run_guard.hold(cfg_for(syn, out), rank=0, world=1)
        assert out.is_dir()
        if out == wrote:
            (out / "config.json").write_text("{}")
        run_guard.release()
    assert not fresh.exists() and fresh.parent.is_dir()   # only the folder itself, not its parents
    assert kept.is_dir() and not any(kept.iterdir())     # it existed before the run: left alone
    assert (wrote / "config.json").exists()


def test_output_and_data_must_not_overlap(syn, tmp_path, capsys):
    for out, needle in ((syn, "is the --data folder"), (syn / "run", "is inside the --data folder")):
        probs = problems(preflight(cfg_for(syn, out)))
        assert len(probs) == 1 and needle in probs[0], probs
    outer = tmp_path / "run"
    inner = synthetic_dataset(outer / "data", n=100, shards=1)
    probs = problems(preflight(cfg_for(inner, outer)))
    assert len(probs) == 1 and "is inside --output" in probs[0]
    rc = main(["--data", str(syn), "--output", str(syn), "--dry-run", "--data.held_out=10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1 and "is the --data folder" in err[0]


def test_lock_of_output(syn, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = cfg_for(syn, out)
    lock = run_guard.hold(cfg, rank=0, world=1)
    try:
        assert "output lock: held by this process" in preflight(cfg).text()
        with pytest.raises(run_guard.OutputInUse) as e:   # a second run (same host, a live pid: this one)
            run_guard.hold(cfg, rank=0, world=1)
        assert "\n" not in str(e.value) and f"pid {os.getpid()}" in str(e.value) and "--force-unlock" in str(e.value)
        assert lock.still_ours()
    finally:
        run_guard.release()
    assert not lock.path.exists() and not out.exists()   # the folder this run made, left empty: removed
    # a live owner on another host: --dry-run names it; its lease lapsed: it will be taken over
    out.mkdir()
    lock.path.write_text(json.dumps({"host": "gpu-node-17", "pid": 4242, "started": None, "since": time.time(),
                                     "lease_s": 60, "token": "x", "what": "linkbert-pretrain"}))
    rc = main(["--data", str(syn), "--output", str(out), "--data.held_out=10", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1 and "in use by linkbert-pretrain on host gpu-node-17, pid 4242" in err[0]
    old = time.time() - 3600
    os.utime(lock.path, (old, old))
    r = preflight(cfg)
    assert r.ok and "will be taken over" in r.text()


def test_manifest_that_lies(syn, tmp_path, capsys):
    import shutil

    from data_prep.cli import main as prep_main
    d = tmp_path / "syn"
    shutil.copytree(syn, d)
    m = json.loads((d / "manifest.json").read_text())
    m["max_seq_len"] = 64   # the shards are 16 wide
    (d / "manifest.json").write_text(json.dumps(m))
    probs = problems(preflight(cfg_for(d, tmp_path / "run")))
    assert probs and all("attribute max_seq_len=16 but the manifest says 64" in p for p in probs), probs
    assert prep_main(["verify", str(d)]) == 2
    assert "max_seq_len=16 but the manifest says 64" in capsys.readouterr().err
    # a shard entry removed: its file is unlisted; training refuses unless told to ignore it
    m["max_seq_len"] = 16
    del m["shards"][1]
    (d / "manifest.json").write_text(json.dumps(m))
    probs = problems(preflight(cfg_for(d, tmp_path / "run")))
    assert len(probs) == 1 and "shard_00001.h5 not named in manifest.json" in probs[0]
    assert "--data.ignore_unlisted=true" in probs[0]
    r = preflight(cfg_for(d, tmp_path / "run", data__ignore_unlisted=True))
    assert r.ok and any("ignored" in n for n in r.notes), r.text()
    assert prep_main(["verify", str(d)]) == 2
    assert "not named in manifest.json" in capsys.readouterr().err


def _checkpoint(out, step, meta):
    d = out / "checkpoints" / f"step{step}"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"step": step, **meta}))
    (d / "mp_rank_00_model_states.pt").write_bytes(b"x" * 100)
    (d / "COMPLETE").write_text("{}")


def test_resume_with_another_model_or_batch(syn, tmp_path):
    import torch

    from pretrain.modeling import LinkBertForPreTraining, model_config
    out = tmp_path / "run"
    cfg = cfg_for(syn, out, model__name="tiny")
    fresh = preflight(cfg).model_config
    with torch.device("meta"):   # what a run saves: the built module's config
        saved = LinkBertForPreTraining(model_config("tiny", vocab_size=50)).config.to_dict()
    assert run_guard.model_shape_diff(saved, fresh) == []
    train = {"micro_batch_size": 8, "grad_accum": 1}
    _checkpoint(out, 4, {"model_config": saved, "world_size": 1, "config": {"train": train}})
    r = preflight(cfg)
    assert r.ok and not [n for n in r.notes if "global batch" in n], r.text()
    # another size: one line naming both values
    r = preflight(cfg_for(syn, out, model__name="base"))
    probs = problems(r)
    assert len(probs) == 1 and "resuming with another model is refused" in probs[0]
    assert f"hidden_size {saved['hidden_size']} in the checkpoint but 768 for model base" in probs[0]
    # another micro batch: the global batch changes: one warning with old and new
    r = preflight(cfg_for(syn, out, model__name="tiny", train__micro_batch_size=4))
    notes = [n for n in r.notes if "global batch" in n]
    assert r.ok and len(notes) == 1 and "global batch changes on this resume: 8 pairs/step" in notes[0]
    assert "4 now" in notes[0]


SCRIPT = """
import os, signal, sys, time
from pretrain import run_guard
from pretrain.config import build
from pretrain.trainer import StopFlag
cfg = build(flags={"data": {"paths": []}, "train": {"output": sys.argv[1]}})
run_guard.hold(cfg, 0, 1)
flag = StopFlag()
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.2)
print("flag", flag.signum == signal.SIGINT, flush=True)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(5)
print("not reached", flush=True)
"""


def test_ctrl_c_twice_stops_at_once_and_gives_the_lock_back(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=child_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 130, p.stderr
    assert "flag True" in p.stdout and "not reached" not in p.stdout
    err = p.stderr.strip().splitlines()
    assert len(err) == 2 and "saving a checkpoint at the next step" in err[0] and "second Ctrl-C" in err[1], err
    assert not (out / ".linkbert.lock").exists()

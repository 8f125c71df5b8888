"""The typed manifest (data_prep.shards.Manifest): the one reader and writer of manifest.json."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from data_prep.cli import main as prep_main
from data_prep.shards import MANIFEST, Manifest, ShardEntry, ShardError, SpecialIds, TokenizerRecord
from tests.data_prep.build_checks import JARGON, read_jsonl, run_build, write_jsonl
from tests.procs import ROOT


@pytest.fixture(scope="module")
def built(tmp_path_factory, minilm_dir):
    tmp = tmp_path_factory.mktemp("manifest")
    corpus = write_jsonl(tmp / "c.jsonl", read_jsonl(JARGON)[:80])
    out = tmp / "data"
    returned = run_build(corpus, minilm_dir, out, max_seq_len=64, num_shards=2)
    return out, returned


def test_build_returns_what_it_wrote(built):
    out, returned = built
    raw = json.loads((out / MANIFEST).read_text())
    # the file is exactly the typed manifest's dict: nothing is written that the type does not know
    assert Manifest.from_dict(raw).to_dict() == raw
    assert (out / MANIFEST).read_text() == json.dumps(raw, indent=1) + "\n"
    read = Manifest.read(out)
    assert read.folder == out and returned.folder == out
    assert read.shard_paths == returned.shard_paths == [str(out / s["path"]) for s in raw["shards"]]
    assert read.stats == returned.stats and read.num_pairs == raw["stats"]["pairs"]["total"] > 0
    assert read.tokenizer == returned.tokenizer and read.tokenizer.vocab_size == 30522
    assert len(read.vocab_sha256) == 64 and read.special_ids == returned.special_ids
    assert returned.timings_s and "timings_s" not in raw       # returned, never written (reproducible file)
    assert read.tokenizer_dir() == out / "tokenizer"


def test_round_trip_of_a_hand_made_manifest(tmp_path):
    m = Manifest(shards=[ShardEntry("shard_00000.h5", 7, "ab" * 32, 123)], max_seq_len=128, seed=3,
                 tokenizer=TokenizerRecord("bert", "/src", "tokenizer", 30522, "cd" * 32),
                 special_ids=SpecialIds(30522, 101, 102, 0, 103), options={"pair_mix": [1, 1, 1]},
                 stats={"tokens": 9})
    (tmp_path / "shard_00000.h5").write_bytes(b"")
    m.write(tmp_path)
    back = Manifest.read(tmp_path)
    assert back.shards == [ShardEntry(str(tmp_path / "shard_00000.h5"), 7, "ab" * 32, 123)]
    assert (back.max_seq_len, back.seed, back.tokenizer, back.special_ids, back.options, back.stats) == (
        m.max_seq_len, m.seed, m.tokenizer, m.special_ids, m.options, m.stats)


def test_older_and_minimal_manifests_still_read(tmp_path):
    """Fields that older builds (or hand-made datasets) lack are None, not errors."""
    (tmp_path / "s.h5").write_bytes(b"")
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "linkbert-pairs", "version": 1, "tokenizer": "bert",
                                                 "shards": [{"path": "s.h5", "num_pairs": 4}]}))
    m = Manifest.read(tmp_path)
    assert m.tokenizer is None and m.vocab_size is None and m.vocab_sha256 is None and m.max_seq_len is None
    assert m.shards[0].sha256 is None and m.shards[0].size is None and m.num_pairs == 4
    assert m.tokenizer_dir() is None and m.tokenizer_copy() == tmp_path / "tokenizer"


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["shards"][1].update(num_pairs="12"), "shards[1].num_pairs"),
    (lambda m: m["shards"][0].pop("path"), "shards[0].path"),
    (lambda m: m["shards"][1].update(size=-1), "shards[1].size"),
    (lambda m: m.update(shards={"a": 1}), "shards must be a list"),
    (lambda m: m.update(max_seq_len=64.5), "max_seq_len"),
    (lambda m: m["tokenizer"].update(vocab_size="big"), "tokenizer.vocab_size"),
    (lambda m: m["special_ids"].pop("mask_id"), "special_ids"),
    (lambda m: m.update(stats=[1]), "stats must be an object"),
    (lambda m: m.update(version=2), "format/version"),
])
def test_a_wrong_field_is_one_line_naming_it(built, tmp_path, edit, field):
    out, _ = built
    copy = tmp_path / "data"
    shutil.copytree(out, copy)
    raw = json.loads((copy / MANIFEST).read_text())
    edit(raw)
    (copy / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ShardError, match=r"manifest\.json: .*" + field.replace("[", r"\[").replace("]", r"\]")):
        Manifest.read(copy)


def test_verify_cli_reports_a_bad_manifest_in_one_line(built, tmp_path, capsys):
    out, _ = built
    copy = tmp_path / "data"
    shutil.copytree(out, copy)
    (copy / MANIFEST).write_text("[1, 2]")
    assert prep_main(["verify", str(copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a JSON object" in err[0] and "Traceback" not in err[0]
    (copy / MANIFEST).write_text("{")
    assert prep_main(["verify", str(copy)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_tokenizer_lookup_prefers_the_datasets_copy(tmp_path):
    ds, src = tmp_path / "ds", tmp_path / "src"
    (ds / "tok").mkdir(parents=True)
    src.mkdir()
    (src / "vocab.txt").write_text("[PAD]\n")
    m = Manifest(shards=[], tokenizer=TokenizerRecord("t", str(src), "tok"), folder=ds)
    assert m.tokenizer_copy() == ds / "tok"
    assert m.tokenizer_dir() == src                    # the copy has no tokenizer files: the source
    (ds / "tok" / "tokenizer.json").write_text("{}")
    assert m.tokenizer_dir() == ds / "tok"             # the dataset's own copy wins
    with pytest.raises(ValueError, match="Manifest.read"):
        Manifest(shards=[]).tokenizer_dir()            # not read from a folder: no silent guess


def test_only_the_manifest_module_names_the_file():
    """No module but data_prep/shards.py spells "manifest.json" as a path: every reader uses Manifest.read."""
    offenders = []
    for pkg in ("data_prep", "pretrain", "finetune", "launch", "tools", "benchmarks"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path == ROOT / "data_prep" / "shards.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value == MANIFEST:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
    assert Path(ROOT / "data_prep" / "shards.py").read_text().count(f'"{MANIFEST}"') == 1

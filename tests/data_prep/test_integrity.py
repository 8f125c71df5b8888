"""Data integrity of prepared datasets (issue 11): verify catches swapped, truncated and damaged shards;
a failed rebuild keeps the finished build; damaged input and a one-document corpus are one error line."""
from __future__ import annotations

import gzip
import json
import shutil
import zlib

import h5py
import pytest

from data_prep.cli import main as prep_main
from data_prep.errors import PrepError
from data_prep.verify import tokenizer_vocab_sha256, verify_dataset
from tests.data_prep.build_checks import JARGON, read_jsonl, run_build, write_jsonl


@pytest.fixture(scope="module")
def built(tmp_path_factory, minilm_dir):
    out = tmp_path_factory.mktemp("integrity") / "data"
    run_build(JARGON, minilm_dir, out, max_seq_len=64, num_shards=2)
    return out


@pytest.fixture
def copy(built, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(built, dst)
    return dst


def _manifest(d):
    return json.loads((d / "manifest.json").read_text())


def _snapshot(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_manifest_records_size_pairs_sha_and_vocab_hash(built, minilm_dir, tmp_path):
    m = _manifest(built)
    for s in m["shards"]:
        p = built / s["path"]
        assert s["size"] == p.stat().st_size and len(s["sha256"]) == 64
        with h5py.File(p) as f:
            assert len(f["seq_lens"]) == s["num_pairs"]
    # the hash is of the vocabulary itself: tokenizer.json and a vocab.txt-only folder agree ...
    assert tokenizer_vocab_sha256(minilm_dir) == m["tokenizer"]["vocab_sha256"]
    only_txt = tmp_path / "txt"
    only_txt.mkdir()
    shutil.copy(minilm_dir / "vocab.txt", only_txt / "vocab.txt")
    assert tokenizer_vocab_sha256(only_txt) == m["tokenizer"]["vocab_sha256"]
    # ... and the same size with two tokens swapped is another vocabulary
    lines = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    lines[2000], lines[2001] = lines[2001], lines[2000]
    (only_txt / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
    assert tokenizer_vocab_sha256(only_txt) != m["tokenizer"]["vocab_sha256"]


def test_verify_clean_dataset_ok(built, capsys):
    assert prep_main(["verify", str(built)]) == 0
    assert "2 shard(s)" in capsys.readouterr().out
    r = verify_dataset(built, "full")
    assert r.ok and r.hashed_bytes == r.bytes > 0


def test_verify_swapped_shard(copy, capsys):
    shutil.copy(copy / "shard_00001.h5", copy / "shard_00000.h5")   # a valid shard under another's name
    assert prep_main(["verify", str(copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shard_00000.h5" in err[0] and "bytes, the manifest says" in err[0]
    # an older manifest without sizes: the pair count or the sha256 still catches it
    m = _manifest(copy)
    for s in m["shards"]:
        del s["size"]
    (copy / "manifest.json").write_text(json.dumps(m))
    r = verify_dataset(copy, "full")
    assert len(r.problems) == 1 and "shard_00000.h5" in r.problems[0]
    assert "pairs, the manifest says" in r.problems[0] or "sha256" in r.problems[0]
    assert any("no shard sizes" in n for n in r.notes)


def test_verify_flipped_byte_needs_full(copy):
    p = copy / "shard_00001.h5"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01   # inside compressed data: HDF5 metadata still reads
    p.write_bytes(bytes(b))
    assert verify_dataset(copy, "none").ok                  # size and pair count cannot see it
    r = verify_dataset(copy, "full")
    assert len(r.problems) == 1 and "shard_00001.h5: sha256" in r.problems[0]


def test_verify_truncated_shard(copy):
    p = copy / "shard_00000.h5"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    r = verify_dataset(copy, "none")
    assert len(r.problems) == 1 and "shard_00000.h5" in r.problems[0] and "truncated" in r.problems[0]
    m = _manifest(copy)
    for s in m["shards"]:
        del s["size"]
    (copy / "manifest.json").write_text(json.dumps(m))
    r = verify_dataset(copy, "quick")
    assert len(r.problems) == 1 and "shard_00000.h5: not a readable HDF5 shard" in r.problems[0]


def test_failed_rebuild_keeps_the_finished_build(copy, minilm_dir, tmp_path, capsys):
    (copy / "notes.txt").write_text("mine")
    before = _snapshot(copy)
    # a typo in the corpus path
    rc = prep_main(["build", "--corpus", str(tmp_path / "typo.jsonl"), "--tokenizer", str(minilm_dir),
                    "--out", str(copy), "--quiet"])
    assert rc == 2 and "typo.jsonl" in capsys.readouterr().err
    assert _snapshot(copy) == before
    # a failure mid-way (a bad line after good ones)
    docs = read_jsonl(JARGON)[:50]
    bad = write_jsonl(tmp_path / "bad.jsonl", docs)
    with open(bad, "a") as f:
        f.write("{not json\n")
    with pytest.raises(PrepError, match="bad.jsonl:51"):
        run_build(bad, minilm_dir, copy, max_seq_len=64)
    assert _snapshot(copy) == before
    assert not list(tmp_path.glob(".data.*")), "the work folder is removed after a failure"
    # a successful rebuild replaces the build (one shard now), keeps files that are not the build's
    good = write_jsonl(tmp_path / "good.jsonl", docs)
    run_build(good, minilm_dir, copy, max_seq_len=64, num_shards=1)
    assert sorted(p.name for p in copy.glob("shard_*.h5")) == ["shard_00000.h5"]
    assert (copy / "notes.txt").read_text() == "mine" and verify_dataset(copy).ok
    assert _manifest(copy)["stats"]["documents"]["in"] == 50
    assert not list(tmp_path.glob(".data.*"))


def test_failed_convert_keeps_the_old_output(tmp_path, capsys):
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.html").write_text("<html><title>A</title><body><p>Alpha text here.</p><a href='b.html'>b</a>"
                                 "</body></html>")
    out = tmp_path / "corpus.jsonl"
    assert prep_main(["convert", "html", str(site), "--out", str(out), "--no-progress"]) == 0
    before = out.read_bytes()
    assert prep_main(["convert", "html", str(tmp_path / "nosuch"), "--out", str(out), "--no-progress"]) == 2
    assert out.read_bytes() == before and not (tmp_path / "corpus.jsonl.partial").exists()
    capsys.readouterr()


def _corrupt_gzip(tmp_path):
    """A gzip corpus whose deflate stream is damaged so that zlib itself fails (not just the CRC)."""
    docs = [{"id": f"d{i}", "text": f"Document {i} says {' '.join(str(i * j) for j in range(40))}."}
            for i in range(400)]
    data = gzip.compress("".join(json.dumps(d) + "\n" for d in docs).encode(), mtime=0)
    for pos in range(len(data) // 3, len(data) - 20):
        b = bytearray(data)
        b[pos] ^= 0xA5
        try:
            gzip.decompress(bytes(b))
        except zlib.error:
            p = tmp_path / "broken.jsonl.gz"
            p.write_bytes(bytes(b))
            return p
        except Exception:  # noqa: BLE001 -- CRC or length errors: keep looking for a zlib.error
            continue
    raise AssertionError("no position gave a zlib.error")


@pytest.mark.parametrize("skip", [False, True])
def test_corrupt_gzip_stream_is_one_line(tmp_path, minilm_dir, capsys, skip):
    corpus = _corrupt_gzip(tmp_path)
    argv = ["build", "--corpus", str(corpus), "--tokenizer", str(minilm_dir), "--out", str(tmp_path / "o"),
            "--quiet"] + (["--skip-bad-lines"] if skip else [])
    assert prep_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.jsonl.gz: damaged or truncated after line" in err[0]
    assert "compressed byte" in err[0] and "error" in err[0]


def test_one_document_corpus_is_an_error(tmp_path, minilm_dir, capsys):
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    corpus = write_jsonl(tmp_path / "one.jsonl", [{"id": "only", "text": text}])
    rc = prep_main(["build", "--corpus", str(corpus), "--tokenizer", str(minilm_dir), "--out",
                    str(tmp_path / "o"), "--max-seq-len", "64", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "only one usable document" in err[0]
    assert not (tmp_path / "o").exists()



def test_inspect_reports_startup_checks_and_fails_on_a_problem(copy, capsys):
    assert prep_main(["inspect", str(copy), "--num-pairs", "0", "--verify", "full"]) == 0
    out = capsys.readouterr().out
    sha = _manifest(copy)["tokenizer"]["vocab_sha256"][:12]
    assert "start-up checks: vocabulary" in out and sha in out
    assert "start-up checks: shards 2 shard(s)" in out and "checked (full)" in out and ": OK" in out
    p = copy / "shard_00001.h5"
    p.write_bytes(p.read_bytes()[:-100])
    assert prep_main(["inspect", str(copy), "--num-pairs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shard_00001.h5" in err[0] and "truncated" in err[0]


def test_verify_catches_a_lying_manifest(copy, capsys):
    """Fields a shard records itself (max_seq_len here) and a removed shard entry fail verify by name."""
    m = _manifest(copy)
    m["max_seq_len"] = 128   # the shards are 64 wide
    (copy / "manifest.json").write_text(json.dumps(m))
    assert prep_main(["verify", str(copy), "--mode", "none"]) == 2
    assert "attribute max_seq_len=64 but the manifest says 128" in capsys.readouterr().err
    m["max_seq_len"] = 64
    gone = m["shards"].pop()
    (copy / "manifest.json").write_text(json.dumps(m))
    report = verify_dataset(copy, "none")
    assert len(report.problems) == 2, report.problems
    assert "stats.pairs.total" in report.problems[0] and f"{gone['path']} not named in" in report.problems[1]

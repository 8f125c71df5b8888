"""Same arrays whatever --workers or the number of MPI ranks (processes run under timeouts, by PID)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.data_prep.build_checks import DATASETS, JARGON, load, read_jsonl, run_build, write_jsonl
from tests.needs import missing
from tests.procs import VENV_BIN, child_env, run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 900 documents: several tokenize batches, so ranks and workers really split the work
    d = tmp_path_factory.mktemp("par")
    return write_jsonl(d / "slice.jsonl", read_jsonl(JARGON)[:900])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, minilm_dir):
    out = tmp_path_factory.mktemp("ref")
    run_build(corpus, minilm_dir, out, max_seq_len=96, dupe_factor=2, num_shards=4, workers=1)
    return load(out)


def _same(a, b):
    for k in DATASETS:
        assert a[0][k].dtype == b[0][k].dtype and np.array_equal(a[0][k], b[0][k]), k
    assert a[2] == b[2]
    assert [s["sha256"] for s in a[1]["shards"]] == [s["sha256"] for s in b[1]["shards"]]
    assert a[1]["stats"] == b[1]["stats"]


def test_two_workers_same_arrays(tmp_path, corpus, minilm_dir, reference):
    run_build(corpus, minilm_dir, tmp_path, max_seq_len=96, dupe_factor=2, num_shards=4, workers=2)
    _same(reference, load(tmp_path))


@pytest.fixture(scope="module")
def split_corpus(tmp_path_factory, corpus):
    """The same 900 documents as three files in a folder: ranks then split the work by file."""
    d = tmp_path_factory.mktemp("split")
    docs = read_jsonl(corpus)
    for i, (lo, hi) in enumerate(((0, 250), (250, 600), (600, 900))):
        write_jsonl(d / f"part{i}.jsonl", docs[lo:hi])
    return d


@pytest.mark.mpi
@pytest.mark.parametrize("layout", ["one file", "three files"])
def test_two_mpi_ranks_same_arrays(tmp_path, corpus, split_corpus, minilm_dir, reference, layout):
    mpirun = VENV_BIN / "mpirun"
    if not mpirun.exists() and not shutil.which("mpirun"):
        missing("no mpirun (pip install mpich, or a system MPI)")
    src = corpus if layout == "one file" else split_corpus
    cmd = [str(mpirun if mpirun.exists() else "mpirun"), "-n", "2", str(VENV_BIN / "linkbert-prep"), "build",
           "--corpus", str(src), "--tokenizer", str(minilm_dir), "--out", str(tmp_path), "--max-seq-len", "96",
           "--dupe-factor", "2", "--num-shards", "4", "--workers", "1", "--quiet"]
    cp = run(cmd, timeout=180, env=child_env(OMP_NUM_THREADS=1))
    assert "2 rank(s)" in cp.stdout
    got = load(tmp_path)
    if layout == "one file":
        _same(reference, got)
    else:  # same documents and pairs; only manifest.options.corpus names other files
        ref_arrays, ref_m, ref_ids = reference
        for k in DATASETS:
            assert np.array_equal(ref_arrays[k], got[0][k]), k
        assert got[2] == ref_ids and got[1]["stats"] == ref_m["stats"]
    assert not (tmp_path / ".work").exists()


def test_dying_workers_are_an_error_not_a_hang(tmp_path, corpus, minilm_dir):
    # Without a __main__ guard every spawned worker re-runs the script and dies while starting;
    # multiprocessing.Pool would replace it forever, the build must stop with a clear message instead.
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from data_prep.build import BuildOptions, build\n"
        f"build(BuildOptions(corpus=[{str(corpus)!r}], tokenizer={str(minilm_dir)!r}, out={str(tmp_path / 'o')!r},"
        " max_seq_len=64, workers=2, progress=False))\n")
    cp = run([str(VENV_BIN / "python"), str(script)], timeout=120, check=False)
    assert cp.returncode != 0 and "a worker process died" in cp.stdout

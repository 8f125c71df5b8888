"""Same arrays whatever --workers or the number of MPI ranks (processes run under timeouts, by PID)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.data_prep.build_checks import DATASETS, JARGON, load, read_jsonl, run_build, write_jsonl
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


@pytest.mark.mpi
def test_two_mpi_ranks_same_arrays(tmp_path, corpus, minilm_dir, reference):
    mpirun = VENV_BIN / "mpirun"
    if not mpirun.exists() and not shutil.which("mpirun"):
        pytest.skip("no mpirun")
    cmd = [str(mpirun if mpirun.exists() else "mpirun"), "-n", "2", str(VENV_BIN / "linkbert-prep"), "build",
           "--corpus", str(corpus), "--tokenizer", str(minilm_dir), "--out", str(tmp_path), "--max-seq-len", "96",
           "--dupe-factor", "2", "--num-shards", "4", "--workers", "1", "--quiet"]
    cp = run(cmd, timeout=180, env=child_env(OMP_NUM_THREADS=1))
    assert "2 rank(s)" in cp.stdout
    _same(reference, load(tmp_path))
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

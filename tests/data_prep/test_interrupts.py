"""Ctrl-C in build and convert: one line, exit 130, temporary files removed, the previous output kept;
children tied to their parent (PR_SET_PDEATHSIG), killed parent by PID; byte-order-marked CRLF corpora."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time

from data_prep import build as build_mod
from data_prep.cli import main as prep_main
from data_prep.converters import common
from data_prep.corpus import iter_lines, parse_line
from tests.conftest import FIXTURES
from tests.data_prep.build_checks import JARGON
from tests.procs import alive, child_env, kill_tree, wait_for


def _one_line(err: str, *needles):
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    for n in needles:
        assert n in lines[0], lines[0]


def test_build_ctrl_c_in_process(tmp_path, minilm_dir, monkeypatch, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "manifest.json").write_text("yesterday's build")

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(build_mod, "_write_shards", interrupted)
    rc = prep_main(["build", "--corpus", str(JARGON), "--tokenizer", str(minilm_dir), "--out", str(out),
                    "--max-seq-len", "64", "--quiet"])
    assert rc == 130
    _one_line(capsys.readouterr().err, "linkbert-prep build: interrupted (Ctrl-C)", "temporary files removed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]          # no .data.building, no .data.lock
    assert (out / "manifest.json").read_text() == "yesterday's build"


def _tripled_corpus(folder):
    """The bundled corpus three times over, ids made unique (a build long enough to interrupt)."""
    docs = [json.loads(line) for line in gzip.open(JARGON, "rt", encoding="utf-8")]
    path = folder / "tripled.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for k in range(3):
            for d in docs:
                f.write(json.dumps({**d, "id": f"{d['id']}#{k}", "links": [f"{t}#{k}" for t in d.get("links", [])]})
                        + "\n")
    return path


def test_build_with_workers_ctrl_c_signal(tmp_path, tmp_path_factory, minilm_dir):
    """A real SIGINT to the foreground group (parent and its spawn workers) while the workers tokenize:
    one line, exit 130 without hanging at interpreter exit (data_prep.cli.entry), nothing left over."""
    out = tmp_path / "data"
    corpus = _tripled_corpus(tmp_path_factory.mktemp("corpus"))
    cmd = [sys.executable, "-m", "data_prep.cli", "build", "--corpus", str(corpus),
           "--tokenizer", str(minilm_dir), "--out", str(out), "--max-seq-len", "64", "--workers", "2",
           "--dupe-factor", "4", "--quiet"]
    p = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        wait_for(lambda: (tmp_path / ".data.building" / "tokenizer").exists() or p.poll() is not None, 60, 0.05,
                 "the build's staging folder")
        time.sleep(1.0)   # workers started and busy
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        kill_tree(p.pid)
    assert p.returncode == 130, err
    _one_line(err, "interrupted (Ctrl-C)")
    assert list(tmp_path.iterdir()) == []


def test_convert_ctrl_c_removes_partial(tmp_path, monkeypatch, capsys):
    site = FIXTURES / "convert" / "html_site" / "libffi"
    out = tmp_path / "corpus.jsonl"
    out.write_text("old corpus\n")
    calls = {"n": 0}
    real = common.CorpusWriter.write

    def write(self, doc):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, doc)
    monkeypatch.setattr(common.CorpusWriter, "write", write)
    rc = prep_main(["convert", "html", str(site), "--out", str(out), "--no-progress"])
    assert calls["n"] == 3 and rc == 130
    _one_line(capsys.readouterr().err, "linkbert-prep convert: interrupted (Ctrl-C)")
    assert out.read_text() == "old corpus\n" and sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]


PARENT = """
import subprocess, sys, time
from data_prep.process import dies_with_parent, tied_module_argv
child = subprocess.Popen(tied_module_argv("tests.data_prep.sleeper", []), preexec_fn=dies_with_parent())
print(child.pid, flush=True)
time.sleep(120)
"""


def test_tied_child_and_its_forked_worker_die_with_the_parent(tmp_path):
    """The universal-checkpoint conversion's pattern: parent SIGKILLed by PID -> child and its fork gone."""
    p = subprocess.Popen([sys.executable, "-c", PARENT], env=child_env(SLEEPER_PIDS=str(tmp_path / "pids")),
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    pids_file = tmp_path / "pids"
    try:
        child = int(p.stdout.readline())
        wait_for(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2, 60, 0.05, "the sleepers")
        pids = [int(x) for x in pids_file.read_text().split()]
        assert pids[0] == child
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)

        def all_gone():
            return not any(alive(x) for x in pids)
        wait_for(all_gone, 10, 0.05, "the tied child and its worker to die")
    finally:
        kill_tree(p.pid)
        for x in pids if "pids" in locals() else []:
            kill_tree(x)


def test_bom_crlf_corpus_is_read_whole(tmp_path):
    rows = [{"id": f"d{i}", "text": f"text {i}", "links": []} for i in range(3)]
    body = "\r\n".join(json.dumps(r) for r in rows) + "\r\n"
    plain = tmp_path / "bom.jsonl"
    plain.write_bytes(b"\xef\xbb\xbf" + body.encode())
    gz = tmp_path / "bom.jsonl.gz"
    gz.write_bytes(gzip.compress(b"\xef\xbb\xbf" + body.encode()))
    for f in (plain, gz):
        parsed = [parse_line(raw) for _, _, raw in iter_lines([f])]
        assert [p.reason for p in parsed] == [None] * 3 and [p.id for p in parsed] == ["d0", "d1", "d2"]

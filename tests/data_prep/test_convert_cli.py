"""`linkbert-prep convert` as a user runs it: summary, stats file, one-line errors, exit codes."""
from __future__ import annotations

import json

from data_prep.cli import main
from tests import procs
from tests.data_prep.convert_checks import FIXTURES, read_corpus


def test_cli_summary_and_stats(tmp_path, capsys):
    out = tmp_path / "pm.jsonl.gz"
    rc = main(["convert", "pubmed", str(FIXTURES / "pubmed_sample.xml.gz"), "--out", str(out), "--no-progress",
               "--keep-title-only"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "pubmed: 1 input(s), 8 documents read, 8 written, 0 skipped" in printed
    stats = json.loads((tmp_path / "pm.jsonl.gz.stats.json").read_text())
    assert stats["kind"] == "pubmed" and stats["out"] == str(out) and stats["documents"]["written"] == 8
    assert len(read_corpus(out)) == 8


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "wiki_00"
    bad.write_text('{"title": "A", "text": "fine"}\nnot json\n')
    cases = [
        (["convert", "wikipedia", str(bad), "--out", str(tmp_path / "o.jsonl")], f"{bad}:2: not valid JSON"),
        (["convert", "pubmed", str(tmp_path / "missing.xml"), "--out", str(tmp_path / "o.jsonl")],
         "no such file or directory"),
        (["convert", "html", str(FIXTURES / "html_site"), "--out", str(tmp_path / "o.txt")],
         "--out"),
        (["convert", "wikipedia", str(bad), "--out", str(tmp_path / "o.jsonl"), "--workers", "0"], "--workers 0"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().split("\n")
        assert len(err) == 1 and err[0].startswith("linkbert-prep convert: error: ") and fragment in err[0], err
    assert not (tmp_path / "o.jsonl").exists()


def test_console_script(tmp_path):
    out = tmp_path / "site.jsonl.bz2"
    cp = procs.run([str(procs.VENV_BIN / "linkbert-prep"), "convert", "html", str(FIXTURES / "html_site"),
                    "--out", str(out)], timeout=120)
    assert "html: 1 input(s), 12 documents read, 12 written" in cp.stdout
    assert len(read_corpus(out)) == 12
    cp = procs.run([str(procs.VENV_BIN / "linkbert-prep"), "convert", "dictd", str(tmp_path), "--out",
                    str(tmp_path / "x.jsonl")], timeout=120, check=False)
    assert cp.returncode == 2 and cp.stdout.strip().count("\n") == 0 and "no input files" in cp.stdout

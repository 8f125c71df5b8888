"""`linkbert-prep inspect`: stats, decoded pairs that match the source documents, and a PNG."""
from __future__ import annotations

import re

from data_prep.cli import main as prep_main
from tests.data_prep.build_checks import JARGON, read_jsonl, run_build, write_jsonl


def test_inspect_prints_pairs_and_plots(tmp_path, minilm_dir, capsys):
    docs = read_jsonl(JARGON)[:400]
    by_id = {d["id"]: d for d in docs}
    corpus = write_jsonl(tmp_path / "c.jsonl", docs)
    m = run_build(corpus, minilm_dir, tmp_path / "ds", max_seq_len=64)
    png = tmp_path / "plot.png"
    rc = prep_main(["inspect", str(tmp_path / "ds"), "--num-pairs", "4", "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "documents: 400 in, 400 used" in out
    assert f"pairs: {m.num_pairs} = contiguous" in out
    kinds = m.stats["pairs"]["mix_by_anchor"]
    for kind in ("with links", "without links"):
        v = kinds[kind.replace(" ", "_")]
        assert f"anchors {kind}: {v['total']} pairs, contiguous {v['mix']['contiguous']:.1%}" in out
    heads = re.findall(r"--- pair \d+: (\w+), A = '(.*?)' sentence \d+, B = '(.*?)' sentence \d+", out)
    assert len(heads) == 4
    blocks = out.split("--- pair ")[1:]
    for (rel, a_id, b_id), block in zip(heads, blocks):
        a_text = block.split("\nA: ")[1].split("\nB: ")[0]
        # the decoded A text is (lowercased, re-spaced) text of its source document
        words = [w for w in re.findall(r"[a-z]{4,}", a_text)][:5]
        src = by_id[a_id]["text"].lower()
        assert all(w in src for w in words), (a_id, words)
        if rel == "linked":
            assert b_id in by_id[a_id]["links"]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000


def test_inspect_of_a_non_dataset_is_one_line(tmp_path, capsys):
    rc = prep_main(["inspect", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "no manifest.json" in err and len(err.strip().splitlines()) == 1

"""`linkbert-prep train-tokenizer`: a WordPiece vocabulary that AutoTokenizer and build both load."""
from __future__ import annotations

from transformers import AutoTokenizer

from data_prep.cli import main as prep_main
from data_prep.verify import tokenizer_vocab_sha256
from tests.data_prep.build_checks import JARGON, check_dataset, load, read_jsonl, run_build, write_jsonl


def test_train_then_build_with_it(tmp_path, capsys):
    docs = read_jsonl(JARGON)[:600]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs)
    rc = prep_main(["train-tokenizer", "--corpus", str(corpus), "--out", str(tmp_path / "tok"),
                    "--vocab-size", "1500", "--lowercase"])
    out = capsys.readouterr().out
    assert rc == 0 and "vocabulary of 1500" in out
    sha = tokenizer_vocab_sha256(tmp_path / "tok")   # what datasets and checkpoints record and compare
    assert f"vocabulary sha256 {sha[:12]}" in out
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.is_fast and len(tok) == 1500
    specials = [tok.cls_token, tok.sep_token, tok.pad_token, tok.mask_token, tok.unk_token]
    assert specials == ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"]
    vocab_txt = (tmp_path / "tok" / "vocab.txt").read_text().splitlines()
    assert len(vocab_txt) == 1500 and vocab_txt[tok.cls_token_id] == "[CLS]"
    enc = tok("The Hacker Ethic.", "Second part")
    assert enc["input_ids"][0] == tok.cls_token_id and enc["input_ids"].count(tok.sep_token_id) == 2
    assert enc["token_type_ids"][-1] == 1
    # lowercase: case does not change the ids; the vocabulary learned multi-character pieces
    assert tok("HACKER")["input_ids"] == tok("hacker")["input_ids"]
    text = " ".join(d["text"] for d in docs[:50])
    n_chars = sum(1 for ch in text if not ch.isspace())
    assert len(tok(text, add_special_tokens=False)["input_ids"]) < 0.4 * n_chars
    assert tok.unk_token_id not in tok(docs[0]["text"], add_special_tokens=False)["input_ids"]

    run_build(corpus, tmp_path / "tok", tmp_path / "out", max_seq_len=64)
    arrays, m, ids = load(tmp_path / "out")
    assert m["tokenizer"]["vocab_size"] == 1500 and m["tokenizer"]["vocab_sha256"] == sha
    check_dataset(arrays, m, ids, {d["id"]: d for d in docs}, tok)

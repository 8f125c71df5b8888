"""Fine-tuning inputs written by Windows editors (UTF-8 byte-order mark, CRLF) read whole; evaluation QA rows
whose answer is not in the context are counted, named and noted as misses; Ctrl-C is one line, exit 130."""
from __future__ import annotations

import json

from transformers import AutoTokenizer

from finetune import cli
from finetune.data_io import read_jsonl
from finetune.glue import read_glue_tsv
from finetune.prepare.common import load_json, read_lines
from finetune.tasks.base import TaskOptions
from finetune.tasks.qa import QATask

BOM = b"\xef\xbb\xbf"


def test_bom_crlf_task_files(tmp_path):
    rows = [{"id": f"r{i}", "sentence": f"s {i}", "label": "a"} for i in range(3)]
    f = tmp_path / "t.jsonl"
    f.write_bytes(BOM + "\r\n".join(json.dumps(r) for r in rows).encode() + b"\r\n")
    got = read_jsonl(f)
    assert [r["id"] for r in got] == ["r0", "r1", "r2"]
    tsv = tmp_path / "dev.tsv"
    tsv.write_bytes(BOM + b"sentence\tlabel\r\nit works\t1\r\nit fails\t0\r\n")
    glue_rows, bad = read_glue_tsv(tsv, "sst2")
    assert [r["label"] for r in glue_rows] == ["1", "0"] and not bad
    raw = tmp_path / "raw.json"
    raw.write_bytes(BOM + b'{"a": 1}\r\n')
    assert load_json(raw) == {"a": 1}
    assert read_lines(raw) == ['{"a": 1}']


def test_eval_answers_missing_from_context_are_counted(minilm_dir):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    ctx = "The trial lasted 12 weeks and ended in 1979 ."
    ok = {"id": "ok", "question": "How long?", "context": ctx, "answers": {"text": ["12 weeks"], "answer_start": [17]}}
    rows = [ok] + [dict(ok, id=f"miss{i}", answers={"text": ["two years", "24 months"], "answer_start": [0, 0]})
                   for i in range(7)]
    rows = [dict(r, _where=f"v:{i + 1}") for i, r in enumerate(rows)]
    task = QATask(TaskOptions(max_seq_length=48, doc_stride=16, max_answer_length=30))
    split = task.encode(rows, tok, "validation", True)
    assert split.counts["answer_not_in_context"] == 7
    assert split.first_ids["answer_not_in_context"] == ["miss0", "miss1", "miss2", "miss3", "miss4"]
    assert len(split.notes) == 1 and "7 of 8" in split.notes[0] and "scored as misses" in split.notes[0]
    assert len(split.rows) == 8   # kept and scored
    train = task.encode(rows, tok, "train", True)
    assert "answer_not_in_context" not in train.counts and not train.notes


def test_finetune_ctrl_c_is_one_line(monkeypatch, capsys, tmp_path):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "run_finetune", interrupted)
    rc = cli.main(["--task", "qa", "--model", str(tmp_path), "--validation", "x", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 130 and len(err) == 1 and "interrupted (Ctrl-C)" in err[0]

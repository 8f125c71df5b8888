"""QA windows and span decoding on hand-built logits (no model): the rules of the n-best search."""
import numpy as np
import pytest
from transformers import AutoTokenizer

from finetune.tasks.base import TaskOptions
from finetune.tasks.qa import QATask, _token_span


def _split(minilm_dir, max_len=24, stride=6, max_answer=30):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    context = ("Aspirin was given to 40 patients . The trial lasted 12 weeks and ended in 1979 . "
               "Side effects were rare in the treated group and were mild .")
    row = {"id": "q", "question": "How long?", "context": context,
           "answers": {"text": ["12 weeks"], "answer_start": [context.index("12 weeks")]}, "_where": "x:1"}
    task = QATask(TaskOptions(max_seq_length=max_len, doc_stride=stride, max_answer_length=max_answer))
    return task, task.encode([row], tok, "validation", True), row


def _logits(split, spans):
    """Start/end logits of 0 everywhere except the given (window, token, start_score, end_score)."""
    n = max(len(o) for o in split.extra["offsets"])
    s = np.zeros((len(split.features), n), dtype=np.float32)
    e = np.zeros_like(s)
    for w, t, vs, ve in spans:
        s[w, t] += vs
        e[w, t] += ve
    return s, e


def _tok_of(split, w, text_pos):
    return next(i for i, o in enumerate(split.extra["offsets"][w]) if o is not None and o[0] == text_pos)


def test_windows_overlap_and_cover_the_context(minilm_dir):
    task, split, row = _split(minilm_dir)
    assert len(split.features) >= 3 and split.counts["windows"] == len(split.features)
    covered = set()
    for offs in split.extra["offsets"]:
        covered |= {o[0] for o in offs if o is not None}
    starts = {i for i, ch in enumerate(row["context"]) if ch != " " and (i == 0 or row["context"][i - 1] == " ")}
    assert starts <= covered   # every word of the context is in some window


def test_best_valid_span_across_windows(minilm_dir):
    task, split, row = _split(minilm_dir)
    ctx = row["context"]
    # find a window holding "12 weeks" and one holding "1979"
    w12 = next(w for w, o in enumerate(split.extra["offsets"]) if any(x and x[0] == ctx.index("12") for x in o))
    w79 = max(w for w, o in enumerate(split.extra["offsets"]) if any(x and x[0] == ctx.index("1979") for x in o))
    assert w12 != w79
    s12, e12 = _tok_of(split, w12, ctx.index("12")), _tok_of(split, w12, ctx.index("weeks"))
    s79 = _tok_of(split, w79, ctx.index("1979"))
    # the highest raw start is on a question token ([CLS]/question have no offsets): must be skipped
    logits = _logits(split, [(w12, 1, 50.0, 0.0), (w12, s12, 5.0, 0.0), (w12, e12, 0.0, 5.0),
                             (w79, s79, 4.0, 4.0)])
    assert task.decode(split, logits)["q"] == "12 weeks"
    # raise the other window's span above it: the best over all windows wins
    logits = _logits(split, [(w12, s12, 5.0, 0.0), (w12, e12, 0.0, 5.0), (w79, s79, 6.0, 6.0)])
    assert task.decode(split, logits)["q"] == "1979"
    # an end before its start is not a span: only the (s12, s12) pair remains valid among high scores
    logits = _logits(split, [(w12, e12, 9.0, 0.0), (w12, s12, 1.0, 9.0)])
    assert task.decode(split, logits)["q"] == "12"


def test_answer_length_limit(minilm_dir):
    task, split, row = _split(minilm_dir, max_answer=1)
    ctx = row["context"]
    w = next(w for w, o in enumerate(split.extra["offsets"]) if any(x and x[0] == ctx.index("12") for x in o))
    s, e = _tok_of(split, w, ctx.index("12")), _tok_of(split, w, ctx.index("weeks"))
    logits = _logits(split, [(w, s, 5.0, 1.0), (w, e, 0.0, 5.0)])
    assert task.decode(split, logits)["q"] == "12"   # "12 weeks" is 2 tokens > max_answer_length 1


def test_token_span_inside_and_outside_window():
    offs = [None, None, (0, 3), (4, 9), (10, 12), None]
    assert _token_span(offs, 4, 9) == (3, 3)
    assert _token_span(offs, 5, 11) == (3, 4)
    assert _token_span(offs, 10, 20) == (None, None)   # runs past the window's context


def test_training_labels_point_at_the_answer_or_cls(minilm_dir):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    task, split, row = _split(minilm_dir)
    train = task.encode([row], tok, "train", True)
    ids = [f["input_ids"] for f in train.features]
    hits = [(f["start_positions"], f["end_positions"]) for f in train.features]
    answered = [i for i, (s, e) in enumerate(hits) if s > 0]
    assert answered and train.counts["windows_without_answer"] == len(hits) - len(answered)
    for i in answered:
        s, e = hits[i]
        assert tok.decode(ids[i][s:e + 1]) == "12 weeks"
    bad = dict(row, answers={"text": ["13 weeks"], "answer_start": [row["answers"]["answer_start"][0]]})
    assert task.encode([row, dict(bad, id="b")], tok, "train", True).counts["answer_not_at_answer_start"] == 1


@pytest.mark.parametrize("qlen", [40])
def test_long_question_is_cut_not_fatal(minilm_dir, qlen):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    task, _, row = _split(minilm_dir)
    long_row = dict(row, question=" ".join(["why"] * qlen))
    split = task.encode([long_row], tok, "validation", True)
    assert split.counts["questions_truncated"] == 1 and len(split.features) >= 1


def test_rows_with_answer_not_at_answer_start_are_named(minilm_dir, tmp_path, capsys):
    """Dropped training rows are counted and the first few ids (file order) are kept and printed."""
    import json

    from finetune.cli import main
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    task, _, row = _split(minilm_dir)
    start = row["answers"]["answer_start"][0]
    rows = [dict(row, id=f"ok{i}") for i in range(3)]
    rows += [dict(row, id=f"bad{i}", answers={"text": ["12 weeks"], "answer_start": [start + 1 + i]})
             for i in range(7)]
    split = task.encode(rows, tok, "train", True)
    assert split.counts["answer_not_at_answer_start"] == 7
    assert split.first_ids == {"answer_not_at_answer_start": ["bad0", "bad1", "bad2", "bad3", "bad4"]}
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "_where"}) + "\n" for r in rows))
    rc = main(["--task", "qa", "--model", str(minilm_dir), "--train", str(train), "--validation", str(train),
               "--output", str(tmp_path / "o"), "--max_steps", "1", "--max_seq_length", "48", "--doc_stride", "16",
               "--disable_tqdm", "--no_save_model"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "train: answer_not_at_answer_start: first bad0, bad1, bad2, bad3, bad4, ..." in err
    info = json.loads((tmp_path / "o" / "run_info.json").read_text())
    assert info["splits"]["train"]["first_ids"]["answer_not_at_answer_start"][0] == "bad0"

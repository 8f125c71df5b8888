"""Extractive QA (MRQA / SQuAD v1.1 style): sliding windows over the context, n-best span decoding.

Rows: `{id, question, context, answers: {text: [...], answer_start: [...]}}`. Training labels each window
with the first gold answer's token span, or the [CLS] position when the answer is not inside the window.
Decoding takes, over every window of a question, the best-scoring valid span (start + end logit) among
the n-best starts x n-best ends, no longer than max_answer_length tokens, inside the context.
"""
from __future__ import annotations

import numpy as np

from finetune import metrics as M
from finetune.data_io import require
from finetune.errors import FinetuneError
from finetune.tasks.base import Split, Task

HINT = "{id, question, context, answers: {text: [...], answer_start: [...]}}"


class QATask(Task):
    kind = "qa"
    label_field = "answers"

    def validate(self, rows, split):
        for r in rows:
            require(r, "question", str, self.kind, HINT)
            require(r, "context", str, self.kind, HINT)
        has_gold = self.gold_presence(rows, split)
        if has_gold:
            for r in rows:
                a = require(r, "answers", dict, self.kind, HINT)
                texts, starts = a.get("text"), a.get("answer_start")
                if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or not texts:
                    raise FinetuneError(f"{r['_where']}: field 'answers.text' must be a non-empty list of "
                                        f"strings (expected {HINT})")
                if split == "train" and (not isinstance(starts, list) or len(starts) != len(texts)
                                         or not all(isinstance(s, int) for s in starts)):
                    raise FinetuneError(f"{r['_where']}: field 'answers.answer_start' must be a list of "
                                        f"character offsets, one per answer text (expected {HINT})")
        return has_gold

    def auto_model_class(self):
        from transformers import AutoModelForQuestionAnswering
        return AutoModelForQuestionAnswering

    def _windows(self, rows, tokenizer):
        if not getattr(tokenizer, "is_fast", False):
            raise FinetuneError("QA needs a fast tokenizer (tokenizer.json) for character offsets")
        pad_right = tokenizer.padding_side == "right"
        q = [r["question"].lstrip() for r in rows]   # leading spaces waste window room (seen in SQuAD)
        c = [r["context"] for r in rows]
        # A question longer than max_seq_length - doc_stride leaves a window smaller than the stride
        # (the tokenizer aborts); such questions keep their first `budget` tokens, and are counted.
        budget = self.opts.max_seq_length - self.opts.doc_stride - 4
        q_enc = tokenizer(q, add_special_tokens=False, return_offsets_mapping=True)
        self._questions_cut = 0
        for i, offs in enumerate(q_enc["offset_mapping"]):
            if len(offs) > budget:
                q[i] = q[i][:offs[budget][0]].rstrip()
                self._questions_cut += 1
        # the stride given to the tokenizer is the overlap between consecutive windows
        return tokenizer(q if pad_right else c, c if pad_right else q,
                         truncation="only_second" if pad_right else "only_first",
                         max_length=self.opts.max_seq_length, stride=self.opts.doc_stride,
                         return_overflowing_tokens=True, return_offsets_mapping=True)

    def encode(self, rows, tokenizer, split, has_gold):
        if self.opts.max_seq_length - self.opts.doc_stride - 4 < 8:
            raise FinetuneError(f"--doc_stride {self.opts.doc_stride} leaves no room for the question in "
                                f"--max_seq_length {self.opts.max_seq_length}; use a smaller stride")
        enc = self._windows(rows, tokenizer)
        counts_q = {"questions_truncated": self._questions_cut}
        ctx_seq = 1 if tokenizer.padding_side == "right" else 0
        example_of = list(enc["overflow_to_sample_mapping"])
        model_keys = [k for k in enc.keys() if k not in ("offset_mapping", "overflow_to_sample_mapping")]
        feats, offsets = [], []
        counts = {"answer_not_at_answer_start": 0, "windows_without_answer": 0}
        bad_rows = set()
        for fi, ex in enumerate(example_of):
            seq_ids = enc.sequence_ids(fi)
            offs = [o if s == ctx_seq else None for o, s in zip(enc["offset_mapping"][fi], seq_ids)]
            f = {k: enc[k][fi] for k in model_keys}
            if split == "train":
                r = rows[ex]
                text, start = r["answers"]["text"][0], r["answers"]["answer_start"][0]
                if r["context"][start:start + len(text)] != text:
                    bad_rows.add(ex)
                    continue
                s_tok, e_tok = _token_span(offs, start, start + len(text))
                if s_tok is None:
                    counts["windows_without_answer"] += 1
                    s_tok = e_tok = 0   # [CLS]: "no answer in this window", as the HF recipe trains v1.1
                f["start_positions"], f["end_positions"] = s_tok, e_tok
            feats.append(f)
            offsets.append(offs)
        if split == "train" and len(bad_rows) == len(rows):
            raise FinetuneError(f"{rows[0]['_where']}: no answer text is found at its answer_start; "
                                "answer_start must be the character offset of the text in context")
        counts["windows"] = len(feats)
        counts.update(counts_q)
        out = Split(split, rows, feats, has_gold,
                    extra={"example_of": [e for e in example_of if split != "train" or e not in bad_rows],
                           "offsets": offsets},
                    counts=counts)
        # dropped from training, counted; the first ids (in file order) let a user find and fix them
        out.note_ids("answer_not_at_answer_start", [rows[i]["id"] for i in sorted(bad_rows)])
        if split != "train" and has_gold:
            _note_unanswerable(out, rows)
        return out

    def decode(self, split, logits):
        start_all, end_all = np.asarray(logits[0]), np.asarray(logits[1])
        best: dict[int, tuple[float, str]] = {}
        n_best, max_len = self.opts.n_best_size, self.opts.max_answer_length
        for fi, ex in enumerate(split.extra["example_of"]):
            offs = split.extra["offsets"][fi]
            n = len(offs)
            s_log, e_log = start_all[fi, :n], end_all[fi, :n]
            starts = np.argsort(s_log)[::-1][:n_best]
            ends = np.argsort(e_log)[::-1][:n_best]
            context = split.rows[ex]["context"]
            for s in starts:
                if offs[s] is None:
                    continue
                for e in ends:
                    if offs[e] is None or e < s or e - s + 1 > max_len:
                        continue
                    score = float(s_log[s] + e_log[e])
                    if ex not in best or score > best[ex][0]:
                        best[ex] = (score, context[offs[s][0]:offs[e][1]])
        # a question whose windows hold no valid span gets the empty answer, counted for run_info.json
        split.counts["questions_without_valid_span"] = len(split.rows) - len(best)
        return {r["id"]: best.get(i, (0.0, ""))[1] for i, r in enumerate(split.rows)}

    def score(self, split, predictions):
        golds = {r["id"]: r["answers"]["text"] for r in split.rows}
        return M.squad_scores(predictions, golds)


def _note_unanswerable(out: Split, rows) -> None:
    """Evaluation questions none of whose gold texts occurs in the context: counted, first ids kept, and a
    note that they are scored as misses (the official SQuAD/MRQA scripts score them so: no span matches)."""
    ids = [r["id"] for r in rows if not any(t in r["context"] for t in r["answers"]["text"])]
    out.note_ids("answer_not_in_context", ids)
    if ids:
        out.notes.append(f"{out.name}: {len(ids)} of {len(rows)} question(s) have no gold answer text in their "
                         f"context (first {', '.join(map(str, ids[:5]))}): no span can match, they are scored as "
                         "misses, as the official evaluation scripts do")


def _token_span(offs, start_char: int, end_char: int):
    """Token indices of the first/last context token covering [start_char, end_char), or (None, None)."""
    ctx = [i for i, o in enumerate(offs) if o is not None]
    if not ctx or offs[ctx[0]][0] > start_char or offs[ctx[-1]][1] < end_char:
        return None, None
    s = next(i for i in ctx if offs[i][1] > start_char)
    e = next(i for i in reversed(ctx) if offs[i][0] < end_char)
    return s, e

"""Fine-tuning the real all-MiniLM-L6-v2 weights on real-text PubMed fixtures, every task kind, CPU.

Small on purpose (short max_seq_length, a few hundred rows, one or two epochs, 2 threads); what is
checked is learning where it is cheap to show (seqcls) and the SPEC section 6 output formats everywhere,
with every reported metric recomputed from the written predictions.
"""
from collections import Counter

import numpy as np
import pytest

from finetune import metrics as M
from tests.finetune.helpers import finetune, rows

pytestmark = pytest.mark.slow


def test_seqcls_learns_well_above_majority_baseline(tmp_path, minilm_dir):
    out = finetune("seqcls", minilm_dir, tmp_path, train="seqcls_train.jsonl",
                   validation="seqcls_validation.jsonl", num_train_epochs=2)
    gold = {r["id"]: r["label"] for r in rows("seqcls_validation.jsonl")}
    majority = Counter(gold.values()).most_common(1)[0][1] / len(gold)
    preds = out["validation"]
    assert set(preds) == set(gold) and set(preds.values()) <= set(gold.values())
    acc = np.mean([preds[k] == gold[k] for k in gold])
    assert out["metrics"]["validation"]["accuracy"] == pytest.approx(acc)
    assert acc >= majority + 0.3, (acc, majority)
    assert out["info"]["train"]["steps"] == 2 * -(-240 // 16)


def test_qa_windows_predictions_and_squad_scores(tmp_path, minilm_dir):
    out = finetune("qa", minilm_dir, tmp_path, train="qa_train.jsonl", validation="qa_validation.jsonl",
                   max_seq_length=128, doc_stride=32, max_train_samples=64, max_eval_samples=32)
    val = rows("qa_validation.jsonl")[:32]
    preds = out["validation"]
    assert set(preds) == {r["id"] for r in val}
    for r in val:   # an answer is always a span of its own context
        assert isinstance(preds[r["id"]], str) and preds[r["id"]] in r["context"]
    info = out["info"]["splits"]
    assert info["validation"]["features"] > len(val)   # long abstracts were split into several windows
    assert info["train"]["counts"]["windows_without_answer"] > 0
    expected = _squad_v11_by_hand(preds, {r["id"]: r["answers"]["text"] for r in val})
    assert out["metrics"]["validation"] == pytest.approx(expected)


def _squad_v11_by_hand(preds: dict, golds: dict) -> dict:
    """EM/F1 as the official SQuAD v1.1 script defines them, written here apart from finetune.metrics:
    lower case, strip ASCII punctuation, drop a/an/the, split on whitespace; bag-of-tokens F1 (0 with no
    common token); each question scores its best gold answer; both in percent."""
    import re
    import string

    def norm(t):
        t = "".join(c for c in t.lower() if c not in string.punctuation)
        return re.sub(r"\b(a|an|the)\b", " ", t).split()

    def f1(p, g):
        common = Counter(norm(p)) & Counter(norm(g))
        n = sum(common.values())
        return 0.0 if n == 0 else 2 * n / (len(norm(p)) + len(norm(g)))   # 2PR/(P+R) = 2n/(|p|+|g|)

    em = sum(max(float(norm(preds[q]) == norm(a)) for a in answers) for q, answers in golds.items())
    f = sum(max(f1(preds[q], a) for a in answers) for q, answers in golds.items())
    return {"exact_match": 100 * em / len(golds), "f1": 100 * f / len(golds)}


def test_ner_tags_per_word_and_seqeval(tmp_path, minilm_dir):
    from transformers import AutoTokenizer

    out = finetune("ner", minilm_dir, tmp_path, train="ner_train.jsonl", validation="ner_validation.jsonl",
                   max_seq_length=80, return_macro_metrics=True, max_train_samples=120)
    val = rows("ner_validation.jsonl")
    tags = {t for r in rows("ner_train.jsonl") for t in r["ner_tags"]}
    # which words fit in 80 tokens, worked out here with the tokenizer alone
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    seen = []
    for r in val:
        enc = tok(r["tokens"], is_split_into_words=True, truncation=True, max_length=80)
        seen.append(sorted({w for w in enc.word_ids() if w is not None}))
    cut = sum(len(r["tokens"]) - len(s) for r, s in zip(val, seen))
    assert cut > 0   # the fixture has a sentence longer than 80 tokens: truncation is exercised
    assert out["info"]["splits"]["validation"]["counts"]["words_without_prediction"] == cut
    for r, s in zip(val, seen):
        p = out["validation"][r["id"]]
        assert len(p) == len(r["tokens"]) and set(p) <= tags
        assert all(p[w] == "O" for w in range(len(p)) if w not in s)
    expected = M.seqeval_scores([[r["ner_tags"][w] for w in s] for r, s in zip(val, seen)],
                                [[out["validation"][r["id"]][w] for w in s] for r, s in zip(val, seen)],
                                macro=True)
    assert out["metrics"]["validation"] == pytest.approx(expected)


def test_multiple_choice_then_predict_only_with_the_saved_model(tmp_path, minilm_dir):
    """MedQA then MMLU as LinkBERT does it: train + save, then a run with only --test on the saved model."""
    first = finetune("mc", minilm_dir, tmp_path / "medqa", train="mc_train.jsonl",
                     validation="mc_validation.jsonl", test="mc_test.jsonl", save_model=True,
                     max_seq_length=40, max_train_samples=80, max_eval_samples=24)
    test = rows("mc_test.jsonl")
    assert set(first["test"]) == {r["id"] for r in test}
    assert all(p in (0, 1, 2, 3) for p in first["test"].values())
    acc = np.mean([first["test"][r["id"]] == r["label"] for r in test])
    assert first["metrics"]["test"]["accuracy"] == pytest.approx(acc)
    second = finetune("mc", tmp_path / "medqa", tmp_path / "mmlu", test="mc_test.jsonl", max_seq_length=40)
    assert set(second["metrics"]) == {"test"}
    assert second["test"] == first["test"]   # the trained head was saved and reloaded, not re-initialised


def test_multilabel_and_regression_formats(tmp_path, minilm_dir):
    out = finetune("multilabel", minilm_dir, tmp_path / "hoc", train="multilabel_train.jsonl",
                   validation="multilabel_validation.jsonl", max_seq_length=48, eval_steps=4)
    # --eval_steps: the validation file was scored during training too, with the same HoC metric
    periodic = [h for h in out["info"]["log_history"] if "eval_f1" in h]
    assert [h["step"] for h in periodic][:2] == [4, 8]   # (transformers 5 adds one at the last step)
    val = rows("multilabel_validation.jsonl")
    assert all(len(out["validation"][r["id"]]) == 5 and set(out["validation"][r["id"]]) <= {0, 1} for r in val)
    expected = M.multilabel_doc_prf1([out["validation"][r["id"]] for r in val], [r["label"] for r in val],
                                     [r["id"] for r in val])
    assert out["metrics"]["validation"] == pytest.approx(expected)
    assert expected["documents"] == len({r["id"].split("_")[0] for r in val}) < len(val)

    out = finetune("regression", minilm_dir, tmp_path / "biosses", train="regression_train.jsonl",
                   validation="regression_validation.jsonl", max_seq_length=48)
    val = rows("regression_validation.jsonl")
    pred = [out["validation"][r["id"]] for r in val]
    assert all(isinstance(p, float) for p in pred)
    gold = [r["label"] for r in val]
    assert out["metrics"]["validation"] == pytest.approx(
        {"pearsonr": np.corrcoef(pred, gold)[0, 1], "mse": np.mean((np.array(pred) - np.array(gold)) ** 2)})

"""Each metric against hand-worked cases and an independent computation (sklearn, numpy, by hand)."""
import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from finetune import metrics as M


@pytest.mark.parametrize("raw, norm", [
    ("The  Cat's hat!", "cats hat"),          # lower, punctuation dropped (apostrophe too), article dropped
    ("An apple a day", "apple day"),
    ("theater anthem", "theater anthem"),     # articles only as whole words
    ("1990\u20131995", "1990\u20131995"),     # the official script strips ASCII punctuation only
    ("  U.S.A.  ", "usa"),
])
def test_squad_normalisation(raw, norm):
    assert M.squad_normalize(raw) == norm


def test_squad_f1_and_em_by_hand():
    # "big red dog" vs "big dog barks": 2 shared tokens, P = R = 2/3
    assert M.squad_token_f1("a big red dog", "Big dog barks.") == pytest.approx(2 / 3)
    assert M.squad_exact("The Eiffel Tower", "eiffel tower!") == 1.0
    # v1.1 quirk: an answer normalising to nothing matches EM but has F1 0
    assert M.squad_exact("", "the") == 1.0 and M.squad_token_f1("", "the") == 0.0
    # repeated tokens count with multiplicity: pred "dog dog" vs gold "dog": P=1/2, R=1
    assert M.squad_token_f1("dog dog", "dog") == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_squad_corpus_scores_take_max_over_golds():
    preds = {"q1": "Paris", "q2": "a big red dog"}
    golds = {"q1": ["Paris, France", "paris"], "q2": ["big dog barks", "cat"]}
    out = M.squad_scores(preds, golds)
    assert out["exact_match"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    with pytest.raises(ValueError):
        M.squad_scores({"q1": "x"}, golds)


def test_prf1_ignoring_negative_class_matches_sklearn_and_hand_count():
    pred = [0, 1, 2, 1, 0, 2]
    gold = [0, 1, 1, 0, 2, 2]
    out = M.prf1_ignore_negative(pred, gold)
    # by hand: hits at positions 1 and 5; 4 positive predictions; 4 positive golds
    assert out == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, g = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
        sp, sr, sf, _ = precision_recall_fscore_support(g, p, labels=[1, 2, 3], average="micro", zero_division=0)
        got = M.prf1_ignore_negative(p, g)
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((sp, sr, sf))
    # the negative class is id 0, not "whatever is most frequent": all-negative predictions score 0
    assert M.prf1_ignore_negative([0, 0, 0], [0, 0, 1])["f1"] == 0.0


def test_hoc_regroups_rows_by_document_before_scoring():
    ids = ["10_s1", "10_s2", "11_s1", "12"]
    gold = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]
    pred = [[0, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 0]]
    out = M.multilabel_doc_prf1(pred, gold, ids)
    # documents: 10 gold {0,1} pred {1}; 11 gold {2} pred {2}; 12 gold {} pred {0} -> tp 2, 3 pred, 3 gold
    assert out["documents"] == 3
    assert (out["precision"], out["recall"], out["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # row-level scoring would have given 1/3: the regrouping is what makes the difference
    row_level = precision_recall_fscore_support(np.array(gold), np.array(pred), average="micro", zero_division=0)
    assert row_level[2] == pytest.approx(1 / 3)


def test_pearson_against_formula():
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    xc, yc = x - x.mean(), y - y.mean()
    expected = (xc * yc).sum() / np.sqrt((xc ** 2).sum() * (yc ** 2).sum())
    assert M.pearson(x, y) == pytest.approx(expected)
    assert M.pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_seqeval_entity_level_micro_and_macro_by_hand():
    gold = [["B-Chem", "I-Chem", "O", "B-Dis"], ["B-Dis", "O"]]
    pred = [["B-Chem", "I-Chem", "O", "O"], ["B-Dis", "B-Chem"]]
    # gold entities: Chem[0:2], Dis[3], Dis'[0]; predicted: Chem[0:2], Dis'[0], Chem'[1] -> 2 hits
    out = M.seqeval_scores(gold, pred)
    assert (out["precision"], out["recall"]) == pytest.approx((2 / 3, 2 / 3))
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["accuracy"] == pytest.approx(4 / 6)
    # per type: Chem P=1/2 R=1 F=2/3; Dis P=1 R=1/2 F=2/3 -> macro means
    mac = M.seqeval_scores(gold, pred, macro=True)
    assert mac["macro_precision"] == pytest.approx(0.75)
    assert mac["macro_recall"] == pytest.approx(0.75)
    assert mac["macro_f1"] == pytest.approx(2 / 3)
    # a partially matched span is not an entity hit
    assert M.seqeval_scores([["B-Chem", "I-Chem"]], [["B-Chem", "O"]])["f1"] == 0.0


def test_each_task_kind_is_its_own_class_and_scores_without_encoding():
    """Three sequence tasks are three classes on one base; score() needs only the labels (no encode() first)."""
    from finetune.tasks import REGISTRY, TASK_KINDS, make_task
    from finetune.tasks.base import Split, TaskOptions
    from finetune.tasks.classification import MultiLabelTask, RegressionTask, SequenceTask, SingleLabelTask
    assert TASK_KINDS == tuple(REGISTRY)
    opts = TaskOptions(max_seq_length=32)
    tasks = {k: make_task(k, opts) for k in ("seqcls", "multilabel", "regression")}
    assert [type(t) for t in tasks.values()] == [SingleLabelTask, MultiLabelTask, RegressionTask]
    assert all(isinstance(t, SequenceTask) and t.kind == k for k, t in tasks.items())
    rows = [{"id": "a", "sentence": "x", "label": "yes", "_where": "f:1"},
            {"id": "b", "sentence": "y", "label": "no", "_where": "f:2"}]
    t = tasks["seqcls"]
    t.fit_labels(rows)
    got = t.score(Split("dev", rows, [], True), {"a": "yes", "b": "yes"})
    assert got == {"accuracy": 0.5}

"""ChemProt/DDI/GAD F1 leaves out the negative class by its name, whatever its place in the sorted labels."""
import json

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from finetune import metrics as M
from finetune.cli import args_from_namespace, build_parser, main
from finetune.errors import FinetuneError
from finetune.tasks import Split, TaskOptions, make_task
from finetune.tasks.classification import STANDARD_NEGATIVE_LABELS
from tests.finetune.helpers import outputs, rows

# the study-species fixture relabelled with the raw releases' label names ("false" sorts after "CPR:*",
# "DDI-false" after "DDI-advise"...), so the negative class is not class id 0
CHEMPROT = {"Humans": "false", "Rats": "CPR:3", "Mice": "CPR:4", "Dogs": "CPR:9"}
DDI = {"Humans": "DDI-false", "Rats": "DDI-advise", "Mice": "DDI-effect", "Dogs": "DDI-mechanism"}


def _relabel(name, mapping, tmp_path):
    out = tmp_path / name
    out.write_text("".join(json.dumps({**r, "label": mapping[r["label"]]}) + "\n" for r in rows(name)))
    return str(out)


def _task(labels, negative):
    t = make_task("seqcls", TaskOptions(negative_labels=negative))
    data = [{"id": str(i), "sentence": "x", "label": v, "_where": f"train.jsonl:{i + 1}"} for i, v in enumerate(labels)]
    assert t.validate(data, "train")
    t.fit_labels(data)
    return t, data


def _sklearn_f1_without(negative, gold, pred):
    others = sorted({*gold, *pred} - {negative})
    p, r, f, _ = precision_recall_fscore_support(gold, pred, labels=others, average="micro", zero_division=0)
    return {"precision": p, "recall": r, "f1": f}


@pytest.mark.parametrize("mapping", [CHEMPROT, DDI], ids=["chemprot", "ddi"])
def test_raw_label_f1_excludes_exactly_the_named_negative(mapping):
    negative = next(v for v in mapping.values() if "false" in v)
    t, _ = _task(list(mapping.values()) * 3, STANDARD_NEGATIVE_LABELS)
    assert t.negative_label == negative and t.labels.index(negative) != 0   # not first once sorted
    rng = np.random.default_rng(0)
    names = sorted(mapping.values())
    gold = [names[k] for k in rng.integers(0, 4, 200)]
    pred = [names[k] for k in rng.integers(0, 4, 200)]
    split = Split("validation", [{"id": str(i), "label": g} for i, g in enumerate(gold)], [], True)
    t._index = {v: i for i, v in enumerate(t.labels)}
    got = t.score(split, {str(i): p for i, p in enumerate(pred)})
    expected = _sklearn_f1_without(negative, gold, pred)
    assert {k: got[k] for k in expected} == pytest.approx(expected)
    # leaving out class id 0 instead (the old rule) scores something else on these labels
    wrong = M.prf1_ignore_negative([t._index[p] for p in pred], [t._index[g] for g in gold], negative_id=0)
    assert wrong["f1"] != pytest.approx(got["f1"])


def test_negative_label_must_occur_once():
    with pytest.raises(FinetuneError, match=r"train\.jsonl: the negative label 'false' never occurs in the "
                                            r"training labels \('CPR:3', 'CPR:4'\); name the negative class"):
        _task(["CPR:3", "CPR:4"], ("false",))
    with pytest.raises(FinetuneError, match=r"several labels could be the negative class \('0', 'false'\)"):
        _task(["0", "false", "CPR:3"], STANDARD_NEGATIVE_LABELS)
    t, _ = _task([0, 1, 1], STANDARD_NEGATIVE_LABELS)   # integer labels (GAD's 0/1) match the spelling "0"
    assert t.negative_label == 0 and t.task_info()["negative_label"] == 0
    t, _ = _task(["CPR:3", "false"], ())                   # not asked for: no negative class, accuracy only
    assert t.negative_label is None


def _args(argv):
    return args_from_namespace(build_parser().parse_args(argv + ["--model", "m", "--output", "o"]))


def test_presets_and_flag_name_the_negative_label():
    from finetune.runner import _negative_labels
    assert _negative_labels(_args(["--preset", "chemprot"])) == ("0", "false")
    assert _negative_labels(_args(["--preset", "ddi-large"])) == ("0", "DDI-false")
    assert _negative_labels(_args(["--preset", "gad"])) == ("0", "false")
    assert _negative_labels(_args(["--preset", "chemprot", "--negative_label", "NONE"])) == ("NONE",)
    assert _negative_labels(_args(["--task", "seqcls", "--ignore_negative_class"])) == STANDARD_NEGATIVE_LABELS
    assert _negative_labels(_args(["--task", "seqcls"])) == ()
    from finetune.runner import _task_options
    with pytest.raises(FinetuneError, match="would both be reported as 'f1'"):
        _task_options(_args(["--preset", "mrpc", "--negative_label", "0"]))


@pytest.mark.slow
def test_raw_chemprot_end_to_end_then_predict_only(tmp_path, minilm_dir):
    train = _relabel("seqcls_train.jsonl", CHEMPROT, tmp_path)
    val = _relabel("seqcls_validation.jsonl", CHEMPROT, tmp_path)
    common = ["--max_seq_length", "64", "--per_device_eval_batch_size", "32", "--disable_tqdm",
              "--logging_steps", "10", "--fp16"]
    rc = main(["--preset", "chemprot", "--model", str(minilm_dir), "--train", train, "--validation", val,
               "--output", str(tmp_path / "run"), "--num_train_epochs", "1", "--learning_rate", "1e-4",
               "--per_device_train_batch_size", "16", *common])
    assert rc == 0
    out = outputs(tmp_path / "run")
    assert out["info"]["task_info"]["negative_label"] == "false"
    gold = {r["id"]: CHEMPROT[r["label"]] for r in rows("seqcls_validation.jsonl")}
    ids = sorted(gold)
    expected = _sklearn_f1_without("false", [gold[i] for i in ids], [out["validation"][i] for i in ids])
    expected["accuracy"] = float(np.mean([gold[i] == out["validation"][i] for i in ids]))
    assert out["metrics"]["validation"] == pytest.approx(expected)
    # a later predict-only run with the saved model scores the same negative class without being told
    rc = main(["--task", "seqcls", "--model", str(tmp_path / "run"), "--test", val,
               "--output", str(tmp_path / "pred"), *common])
    assert rc == 0
    again = outputs(tmp_path / "pred")
    assert again["test"] == out["validation"]
    assert again["metrics"]["test"] == pytest.approx(expected)

"""GLUE: the official TSV layouts, each metric against scikit-learn/scipy, the GLUE score against
published numbers, and every task fine-tuned from its .tsv files with metrics recomputed from predictions."""
import json

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from finetune import metrics as M
from finetune.cli import main
from finetune.errors import FinetuneError
from finetune.glue import TASKS, canonical_task, glue_score, read_glue_tsv
from tests.finetune.helpers import FIX, outputs

GLUE = FIX / "glue"
FOLDER = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
          "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


def _files(task):
    d = GLUE / FOLDER[task]
    if task == "mnli":
        return {"train": d / "train.tsv", "validation": d / "dev_matched.tsv",
                "validation_mismatched": d / "dev_mismatched.tsv", "test": d / "test_matched.tsv",
                "test_mismatched": d / "test_mismatched.tsv"}
    return {"train": d / "train.tsv", "validation": d / "dev.tsv", "test": d / "test.tsv"}


# -- metrics against scikit-learn / scipy ----------------------------------------------------------

def test_mcc_f1_spearman_match_sklearn_and_scipy():
    rng = np.random.default_rng(3)
    for k in (2, 3, 5):
        for _ in range(10):
            g, p = rng.integers(0, k, 60), rng.integers(0, k, 60)
            p[:20] = g[:20]   # some agreement, so values are not all near 0
            assert M.matthews_corrcoef(p, g) == pytest.approx(matthews_corrcoef(g, p))
            assert M.binary_f1(p, g, positive_id=1) == pytest.approx(f1_score(g, p, labels=[1], average="micro"))
            if k == 2:
                assert M.binary_f1(p, g, positive_id=1) == pytest.approx(f1_score(g, p, pos_label=1))
    # undefined MCC (one class predicted) is 0, as scikit-learn and GLUE give it
    assert M.matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0
    assert M.matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    x = rng.normal(size=50)
    y = np.round(x + rng.normal(size=50), 1)          # rounded: ties, which rank averaging must handle
    y[:5] = y[0]
    assert M.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert M.pearson(x, y) == pytest.approx(pearsonr(x, y).statistic)


# -- the official files ----------------------------------------------------------------------------

def test_official_layouts_are_read_as_released():
    rows, bad = read_glue_tsv(_files("cola")["train"], "cola")   # no header, 4 columns
    assert not bad and len(rows) == 32 and rows[0]["id"] == "0" and rows[1]["label"] == "0"
    assert rows[0]["sentence"].endswith(" .") and set(rows[0]) == {"id", "sentence", "label", "_where"}
    test, _ = read_glue_tsv(_files("cola")["test"], "cola")      # header index/sentence, no label
    assert len(test) == 8 and "label" not in test[0] and test[3]["id"] == "3"
    mrpc, _ = read_glue_tsv(_files("mrpc")["train"], "mrpc")     # header behind a byte-order mark
    assert set(r["label"] for r in mrpc) == {"0", "1"} and mrpc[0]["sentence2"]
    qqp, bad = read_glue_tsv(_files("qqp")["train"], "qqp")      # a question broken over two lines
    assert len(qqp) == 32 and [b.rsplit(":", 1)[1] for b in bad] == ["8", "9"]
    assert qqp[0]["id"] == "700" and qqp[0]["label"] == "1" and qqp[0]["sentence1"].startswith("Why")
    sts, _ = read_glue_tsv(_files("stsb")["validation"], "stsb")
    assert all(isinstance(r["label"], float) and 0 <= r["label"] <= 5 for r in sts)
    for split, n in (("train", 48), ("validation", 16), ("validation_mismatched", 16), ("test_mismatched", 8)):
        m, _ = read_glue_tsv(_files("mnli")[split], "mnli")
        assert len(m) == n and (("label" in m[0]) == (not split.startswith("test")))
    assert {r["label"] for r in read_glue_tsv(_files("mnli")["train"], "mnli")[0]} == {
        "entailment", "neutral", "contradiction"}
    qnli, _ = read_glue_tsv(_files("qnli")["validation"], "qnli")
    assert qnli[0]["sentence1"].startswith("Who ")    # question first, as GLUE pairs them


def test_bad_files_are_one_line_errors(tmp_path, minilm_dir):
    f = tmp_path / "dev.tsv"
    f.write_text("index\tsentence1\tlabel\n0\ta\tentailment\n")
    with pytest.raises(FinetuneError, match=r"dev\.tsv:1: no column 'sentence2' in the header .*official GLUE rte"):
        read_glue_tsv(f, "rte")
    f.write_text("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                 "0\tg\tf\t2012\t0\tn\tn\ta\tb\tfive\n")
    with pytest.raises(FinetuneError, match=r"dev\.tsv:2: column 'score' must be a number, got 'five'"):
        read_glue_tsv(f, "stsb")
    with pytest.raises(FinetuneError, match=r"a \.tsv file; GLUE's files are read with --preset"):
        from finetune.runner import FinetuneArgs, run_finetune
        run_finetune(FinetuneArgs(task="seqcls", model=str(minilm_dir), output=str(tmp_path / "o"), train=str(f),
                                  validation=str(f)))
    with pytest.raises(FinetuneError, match="not a GLUE task"):
        canonical_task("squad")


# -- the GLUE score ----------------------------------------------------------------------------------

def _entry(**metrics):
    return {"metrics": {k: v / 100 for k, v in metrics.items()}}


# BERT-base on the GLUE test server (BERT paper Table 1 and the GLUE leaderboard), percent
BERT_BASE = {"cola": _entry(matthews_corrcoef=52.1), "sst2": _entry(accuracy=93.5),
             "mrpc": _entry(f1=88.9, accuracy=84.8), "qqp": _entry(f1=71.2, accuracy=89.2),
             "stsb": _entry(pearsonr=87.1, spearmanr=85.8),
             "mnli": {**_entry(accuracy=84.6), "mismatched": {"accuracy": 0.834}},
             "qnli": _entry(accuracy=90.5), "rte": _entry(accuracy=66.4)}


def test_glue_score_reproduces_published_numbers():
    # the leaderboard's score counts WNLI too (BERT-base: 65.1) and gives 78.3
    board = glue_score({**BERT_BASE, "wnli": _entry(accuracy=65.1)})
    assert round(board["glue_score"], 1) == 78.3
    assert board["tasks"]["mrpc"] == pytest.approx((88.9 + 84.8) / 2)
    assert board["tasks"]["mnli"] == pytest.approx(84.0)
    # BERT's Table 1 "Average" (MNLI-m, MNLI-mm, QQP F1, QNLI, SST-2, CoLA, STS-B Spearman, MRPC F1, RTE)
    assert round(board["bert_average"], 1) == 79.6
    with pytest.raises(FinetuneError, match="missing GLUE tasks: rte"):
        glue_score({k: v for k, v in BERT_BASE.items() if k != "rte"})
    part = glue_score({"cola": BERT_BASE["cola"], "rte": BERT_BASE["rte"]}, allow_partial=True)
    assert part["glue_score"] == pytest.approx((52.1 + 66.4) / 2) and "bert_average" not in part
    with pytest.raises(FinetuneError, match="needs the mismatched accuracy"):
        glue_score({"mnli": _entry(accuracy=80.0)}, allow_partial=True)


# -- fine-tuning from the .tsv files -----------------------------------------------------------------

def _expected(task, gold, pred):
    """Each task's metrics recomputed here with scikit-learn / scipy from the written predictions."""
    if TASKS[task].kind == "regression":
        g, p = np.array(gold), np.array(pred)
        return {"pearsonr": pearsonr(p, g).statistic if p.std() else 0.0,
                "spearmanr": spearmanr(p, g).statistic if p.std() else 0.0, "mse": float(np.mean((p - g) ** 2))}
    out = {"accuracy": accuracy_score(gold, pred)}
    if task == "cola":
        out["matthews_corrcoef"] = matthews_corrcoef(gold, pred)
    if task in ("mrpc", "qqp"):
        out["f1"] = f1_score(gold, pred, pos_label="1", average="binary", zero_division=0)
    return out


@pytest.mark.slow
def test_every_glue_task_fine_tunes_from_its_tsv_files(tmp_path, minilm_dir, capsys):
    runs = []
    for task in TASKS:
        files = _files(task)
        argv = ["--preset", task, "--model", str(minilm_dir), "--output", str(tmp_path / task), "--max_steps", "3",
                "--per_device_train_batch_size", "8", "--learning_rate", "1e-4", "--max_seq_length", "48",
                "--disable_tqdm", "--no_save_model", "--logging_steps", "1"]
        for split, path in files.items():
            argv += [f"--{split}", str(path)]
        assert main(argv) == 0, capsys.readouterr().err
        out = outputs(tmp_path / task)
        for split in ("validation", "validation_mismatched"):
            if split not in files:
                continue
            rows, _ = read_glue_tsv(files[split], task)
            preds = json.loads((tmp_path / task / f"predictions_{split}.json").read_text())
            assert set(preds) == {r["id"] for r in rows}
            expected = _expected(task, [r["label"] for r in rows], [preds[r["id"]] for r in rows])
            assert out["metrics"][split] == pytest.approx(expected), (task, split)
        for split in ("test", "test_mismatched"):   # no labels: predictions only, keyed by the index column
            if split in files:
                preds = json.loads((tmp_path / task / f"predictions_{split}.json").read_text())
                assert set(preds) == {r["id"] for r in read_glue_tsv(files[split], task)[0]}
                assert split not in out["metrics"]
        runs.append(f"{task}={tmp_path / task}")
    qqp = outputs(tmp_path / "qqp")["info"]["splits"]["train"]
    assert qqp["counts"]["malformed_tsv_lines_skipped"] == 2 and qqp["first_ids"]["malformed_tsv_lines_skipped"]
    capsys.readouterr()
    assert main(["glue-score", *runs]) == 0
    score = json.loads(capsys.readouterr().out)
    by_hand = {}
    for task in TASKS:
        m = json.loads((tmp_path / task / "metrics.json").read_text())
        v = m["validation"]
        if task == "cola":
            by_hand[task] = 100 * v["matthews_corrcoef"]
        elif task in ("mrpc", "qqp"):
            by_hand[task] = 100 * (v["f1"] + v["accuracy"]) / 2
        elif task == "stsb":
            by_hand[task] = 100 * (v["pearsonr"] + v["spearmanr"]) / 2
        elif task == "mnli":
            by_hand[task] = 100 * (v["accuracy"] + m["validation_mismatched"]["accuracy"]) / 2
        else:
            by_hand[task] = 100 * v["accuracy"]
    assert score["tasks"] == pytest.approx(by_hand)
    assert score["glue_score"] == pytest.approx(np.mean(list(by_hand.values())))

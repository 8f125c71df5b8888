"""`linkbert-finetune prepare medqa|mmlu`: MedQA-USMLE 4-option JSONL and MMLU CSV -> SWAG-layout rows;
MedQA fine-tuned a few steps, then MMLU professional medicine predicted with that model (as LinkBERT)."""
import json
import shutil

import numpy as np
import pytest

from tests import procs
from tests.finetune.prepare_helpers import RAW, finetune_preset, prepare, split_files

MEDQA = RAW / "medqa" / "data_clean" / "questions" / "US" / "4_options"
MMLU = RAW / "mmlu" / "data"


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_medqa_rows(tmp_path, capsys):
    code, out, err = prepare(capsys, "medqa", RAW / "medqa", tmp_path)
    assert code == 0 and not err and len(out) == 3
    raw = _jsonl(MEDQA / "phrases_no_exclude_dev.jsonl")
    rows = _jsonl(tmp_path / "medqa_usmle_hf" / "dev.json")
    assert [r["id"] for r in rows] == [f"dev-{i:05d}" for i in range(len(raw))]
    for r, q in zip(rows, raw):
        assert r["sent1"] == q["question"] and r["sent2"] == ""
        assert [r[f"ending{k}"] for k in range(4)] == [q["options"][c] for c in "ABCD"]
        assert r[f"ending{r['label']}"] == q["answer"]


def test_mmlu_rows_read_quoted_csv(tmp_path, capsys):
    code, _, err = prepare(capsys, "mmlu", RAW / "mmlu", tmp_path)
    assert code == 0 and not err
    rows = _jsonl(tmp_path / "mmlu_hf" / "professional_medicine" / "dev.json")
    assert [r["id"] for r in rows][:2] == ["professional_medicine_dev-00000", "professional_medicine_dev-00001"]
    vaccine = rows[4]   # a quoted CSV field holding commas stays one field
    assert vaccine["sent1"] == "Which vaccine is live, attenuated?"
    assert vaccine["ending1"] == "Measles, mumps and rubella" and vaccine["label"] == 1
    code, _, err = prepare(capsys, "mmlu", RAW / "mmlu", tmp_path, "--subjects", "anatomy")
    assert code == 2 and len(err) == 1 and "anatomy_dev.csv: no such file" in err[0]
    assert "professional_medicine" in err[0]   # lists the subjects that are there


def test_bad_rows_are_one_error_naming_file_and_line(tmp_path, capsys):
    raw = tmp_path / "medqa"
    shutil.copytree(RAW / "medqa", raw)
    f = raw / "data_clean" / "questions" / "US" / "4_options" / "phrases_no_exclude_test.jsonl"
    lines = f.read_text().splitlines()
    lines[1] = lines[1].replace('"answer_idx": "A"', '"answer_idx": "E"')
    f.write_text("\n".join(lines) + "\n")
    code, _, err = prepare(capsys, "medqa", raw, tmp_path / "o1")
    assert code == 2 and err == [f"linkbert-finetune prepare: error: {f}:2: field 'answer_idx' is 'E', "
                                 "expected one of A, B, C, D"]
    mm = tmp_path / "mmlu"
    shutil.copytree(RAW / "mmlu", mm)
    f = mm / "data" / "val" / "professional_medicine_val.csv"
    f.write_text(f.read_text() + "Too short,A,B,C\n")
    code, _, err = prepare(capsys, "mmlu", mm, tmp_path / "o2")
    assert code == 2 and len(err) == 1 and f"{f}:4: 4 columns, expected 6" in err[0]
    code, _, err = prepare(capsys, "medqa", tmp_path / "o2", tmp_path / "o3")
    assert code == 2 and len(err) == 1 and "data_clean.zip" in err[0]


@pytest.mark.slow
def test_prepare_then_medqa_finetune_then_mmlu_predict(tmp_path, capsys, minilm_dir):
    assert prepare(capsys, "medqa", RAW / "medqa", tmp_path / "data")[0] == 0
    assert prepare(capsys, "mmlu", RAW / "mmlu", tmp_path / "data")[0] == 0
    medqa = tmp_path / "data" / "medqa_usmle_hf"
    res = finetune_preset("medqa", minilm_dir, tmp_path / "medqa", save_model=True, max_seq_length=48,
                          gradient_accumulation_steps=1, **split_files(medqa))
    for split, name in (("validation", "dev"), ("test", "test")):
        gold = {r["id"]: r["label"] for r in _jsonl(medqa / f"{name}.json")}
        assert res["metrics"][split]["accuracy"] == pytest.approx(np.mean([res[split][k] == v
                                                                          for k, v in gold.items()]))
    # LinkBERT's MMLU run: --do_predict with the MedQA-fine-tuned model, no training
    mmlu_test = tmp_path / "data" / "mmlu_hf" / "professional_medicine" / "test.json"
    res = finetune_preset("mmlu-professional-medicine", tmp_path / "medqa", tmp_path / "mmlu", test=mmlu_test,
                          max_seq_length=48)
    gold = {r["id"]: r["label"] for r in _jsonl(mmlu_test)}
    assert set(res["metrics"]) == {"test"} and set(res["test"]) == set(gold)
    assert res["metrics"]["test"]["accuracy"] == pytest.approx(np.mean([res["test"][k] == v
                                                                       for k, v in gold.items()]))


def test_console_script_prepare(tmp_path):
    """`linkbert-finetune prepare ...` through the installed console script: files, report, exit codes."""
    script = str(procs.VENV_BIN / "linkbert-finetune")
    cp = procs.run([script, "prepare", "mmlu", str(RAW / "mmlu"), str(tmp_path)], timeout=180)
    assert "mmlu_hf/professional_medicine/test.json (4 rows)" in cp.stdout
    assert json.loads((tmp_path / "prepare_report_mmlu.json").read_text())["family"] == "mmlu"


def test_unknown_family_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        prepare(capsys, "glue", RAW, tmp_path)
    assert e.value.code == 2 and "invalid choice: 'glue'" in capsys.readouterr().err

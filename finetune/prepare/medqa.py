"""MedQA-USMLE (jind11/MedQA `data_clean.zip`) -> SWAG-layout rows for `--task mc`.

Read, as the authors' preprocess_medqa.py: questions/US/4_options/phrases_no_exclude_{train,dev,test}.jsonl,
one question a line `{"question", "options": {"A".."D"}, "answer_idx": "A".."D", ...}`.
Written: OUT_DIR/medqa_usmle_hf/{train,dev,test}.json with rows
`{id: "<split>-<line, 5 digits>", sent1: question, sent2: "", ending0..3: options A..D, label: 0..3}`.
"""
from __future__ import annotations

from pathlib import Path

from finetune.prepare.common import PrepareError, Report, parse_json_line, read_lines

SUBDIR = Path("questions") / "US" / "4_options"
LETTERS = "ABCD"


def find_dir(raw_dir: Path) -> Path:
    """RAW_DIR may be the unzipped data_clean, its parent, or the 4_options folder itself."""
    for d in (raw_dir, raw_dir / SUBDIR, raw_dir / "data_clean" / SUBDIR):
        if (d / "phrases_no_exclude_train.jsonl").is_file():
            return d
    raise PrepareError(f"{raw_dir}: no phrases_no_exclude_train.jsonl here, in {SUBDIR} or in data_clean/{SUBDIR} "
                       "(unzip MedQA's data_clean.zip and give its folder)")


def convert(path: Path, split: str) -> list[dict]:
    rows = []
    for i, line in enumerate(read_lines(path)):
        n = i + 1
        if not line.strip():
            raise PrepareError(f"{path}:{n}: blank line (one question object a line)")
        q = parse_json_line(path, n, line, "MedQA question")
        opts = q.get("options")
        if not isinstance(q.get("question"), str):
            raise PrepareError(f"{path}:{n}: field 'question' missing or not a string")
        if not isinstance(opts, dict) or not all(isinstance(opts.get(k), str) for k in LETTERS):
            raise PrepareError(f"{path}:{n}: field 'options' must map A, B, C, D to strings (4_options files)")
        ans = q.get("answer_idx")
        if ans not in tuple(LETTERS):
            raise PrepareError(f"{path}:{n}: field 'answer_idx' is {ans!r}, expected one of A, B, C, D")
        rows.append({"id": f"{split}-{i:05d}", "sent1": q["question"], "sent2": "",
                     **{f"ending{k}": opts[c] for k, c in enumerate(LETTERS)}, "label": LETTERS.index(ans)})
    return rows


def prepare(raw_dir: Path, out_dir: Path) -> Report:
    report = Report("medqa")
    folder = find_dir(raw_dir)
    for split in ("train", "dev", "test"):
        path = folder / f"phrases_no_exclude_{split}.jsonl"
        if not path.is_file():
            raise PrepareError(f"{path}: no such file (MedQA's 4_options folder has train, dev and test)")
        report.write_jsonl(convert(path, split), out_dir / "medqa_usmle_hf" / f"{split}.json")
    return report

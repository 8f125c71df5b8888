"""MMLU (hendrycks test `data.tar`) -> SWAG-layout rows for `--task mc` (LinkBERT: professional medicine).

Read, as the authors' preprocess_mmlu.py: data/{dev,val,test}/<subject>_<split>.csv, no header, one
question a row `question, A, B, C, D, answer letter`.
Written: OUT_DIR/mmlu_hf/<subject>/{dev,val,test}.json with rows
`{id: "<subject>_<split>-<row, 5 digits>", sent1, sent2: "", ending0..3, label: 0..3}`.
"""
from __future__ import annotations

import csv
from pathlib import Path

from finetune.prepare.common import PrepareError, Report, open_text

SPLITS = ("dev", "val", "test")
LETTERS = "ABCD"


def find_dir(raw_dir: Path) -> Path:
    """RAW_DIR may be the extracted `data` folder or the folder holding it."""
    for d in (raw_dir, raw_dir / "data"):
        if all((d / s).is_dir() for s in SPLITS):
            return d
    raise PrepareError(f"{raw_dir}: no dev/, val/ and test/ folders here or in {raw_dir / 'data'} "
                       "(extract MMLU's data.tar and give its data folder)")


def convert(path: Path, subject: str, split: str) -> list[dict]:
    rows = []
    try:
        with open_text(path) as f:
            records = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise PrepareError(f"{path}: cannot read as UTF-8 CSV ({e})") from None
    for i, rec in enumerate(records):
        n = i + 1
        if len(rec) != 6:
            raise PrepareError(f"{path}:{n}: {len(rec)} columns, expected 6 (question, A, B, C, D, answer)")
        if rec[5].strip() not in tuple(LETTERS):
            raise PrepareError(f"{path}:{n}: answer column is {rec[5]!r}, expected one of A, B, C, D")
        rows.append({"id": f"{subject}_{split}-{i:05d}", "sent1": rec[0], "sent2": "",
                     **{f"ending{k}": rec[1 + k] for k in range(4)}, "label": LETTERS.index(rec[5].strip())})
    return rows


def prepare(raw_dir: Path, out_dir: Path, subjects: list[str]) -> Report:
    report = Report("mmlu")
    folder = find_dir(raw_dir)
    for subject in subjects:
        for split in SPLITS:
            path = folder / split / f"{subject}_{split}.csv"
            if not path.is_file():
                known = sorted(p.name[: -len(f"_{split}.csv")] for p in (folder / split).glob(f"*_{split}.csv"))
                raise PrepareError(f"{path}: no such file (subjects in {folder / split}: "
                                   f"{', '.join(known[:8]) or 'none'}{' ...' if len(known) > 8 else ''})")
            report.write_jsonl(convert(path, subject, split), out_dir / "mmlu_hf" / subject / f"{split}.json")
    return report

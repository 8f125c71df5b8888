"""`linkbert-finetune prepare {mrqa,blurb,medqa,mmlu} RAW_DIR OUT_DIR`: the public releases -> the JSON
Lines files the runner reads, as LinkBERT's scripts/preprocess_*.py made the files of its data.zip.

    linkbert-finetune prepare mrqa RAW_DIR OUT_DIR [--datasets squad,...] [--split-ids FILE|DIR] [--split-seed N]
    linkbert-finetune prepare blurb RAW_DIR OUT_DIR [--tasks chemprot,...] [--from-pubtator]
    linkbert-finetune prepare medqa RAW_DIR OUT_DIR
    linkbert-finetune prepare mmlu RAW_DIR OUT_DIR [--subjects professional_medicine,...]

Each family is one module here; a release file not in its documented format is one error line naming
file and line (exit 2). What was written and skipped is printed and saved in
OUT_DIR/prepare_report_<family>.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finetune.errors import FinetuneError

FAMILIES = ("mrqa", "blurb", "medqa", "mmlu")


def _csv(text: str) -> list[str]:
    return [x for x in (t.strip() for t in text.split(",")) if x]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linkbert-finetune prepare", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="family", required=True, metavar="{" + ",".join(FAMILIES) + "}")
    helps = {"mrqa": "MRQA 2019 *.jsonl.gz (RAW_DIR/train, RAW_DIR/dev) -> <dataset>_hf/{train,dev,test}.json",
             "blurb": "BLURB's data_generation/data task folders -> <Task>_hf/{train,dev,test}.json",
             "medqa": "MedQA-USMLE data_clean (questions/US/4_options) -> medqa_usmle_hf/{train,dev,test}.json",
             "mmlu": "MMLU data/{dev,val,test}/<subject>_<split>.csv -> mmlu_hf/<subject>/{dev,val,test}.json"}
    subs = {}
    for fam in FAMILIES:
        s = sub.add_parser(fam, help=helps[fam], description=helps[fam])
        s.add_argument("raw_dir", type=Path, metavar="RAW_DIR")
        s.add_argument("out_dir", type=Path, metavar="OUT_DIR")
        subs[fam] = s
    subs["mrqa"].add_argument("--datasets", type=_csv, default=None,
                              help="comma list of squad,newsqa,triviaqa,searchqa,hotpot,naturalqa "
                                   "(default: every one found)")
    subs["mrqa"].add_argument("--split-ids", "--split_ids", dest="split_ids", type=Path, default=None,
                              help="LinkBERT's inhouse_split_<dataset>.json (one dataset) or the "
                                   "scripts/inhouse_splits folder; default: the dev file halved by a keyed hash")
    subs["mrqa"].add_argument("--split-seed", "--split_seed", dest="split_seed", type=int, default=0,
                              help="key of the default dev/test halving (default 0)")
    subs["blurb"].add_argument("--tasks", type=_csv, default=None,
                               help="comma list of BLURB tasks (default: every task folder found)")
    subs["blurb"].add_argument("--from-pubtator", "--from_pubtator", dest="from_pubtator", action="store_true",
                               help="also convert BC5CDR/NCBI-disease PubTator releases found under RAW_DIR "
                                    "(prepare's own tokeniser and sentence splitter: not BLURB's IOB files)")
    subs["mmlu"].add_argument("--subjects", type=_csv, default=["professional_medicine"],
                              help="comma list of MMLU subjects (default professional_medicine)")
    return p


def run(a: argparse.Namespace):
    """The Report of one prepare command (tests call this)."""
    if a.family == "mrqa":
        from finetune.prepare import mrqa
        report = mrqa.prepare(a.raw_dir, a.out_dir, a.datasets, a.split_ids, a.split_seed)
    elif a.family == "blurb":
        from finetune.prepare import blurb
        report = blurb.prepare(a.raw_dir, a.out_dir, a.tasks, a.from_pubtator)
    elif a.family == "medqa":
        from finetune.prepare import medqa
        report = medqa.prepare(a.raw_dir, a.out_dir)
    else:
        from finetune.prepare import mmlu
        report = mmlu.prepare(a.raw_dir, a.out_dir, a.subjects)
    report.save(a.out_dir)
    return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    if not a.raw_dir.is_dir():
        print(f"linkbert-finetune prepare: error: {a.raw_dir}: no such folder (RAW_DIR holds the {a.family} "
              "release files)", file=sys.stderr)
        return 2
    try:
        report = run(a)
    except FinetuneError as e:
        print(f"linkbert-finetune prepare: error: {e}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    for e in report.errors:   # tasks that failed while the others were written
        print(f"linkbert-finetune prepare: error: {e}", file=sys.stderr)
    return 2 if report.errors else 0

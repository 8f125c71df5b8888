"""BLURB -> the runner's rows, task by task, as the authors' preprocess_blurb.py read them.

RAW_DIR is BLURB's `data_generation/data` (what Microsoft's data_generation.tar.gz produces from each
task's own release; the folder holding it, or data_generation, works too). Task (folder): files -> rows
written to `<folder>_hf/{train,dev,test}.json` (bioasq: `bioasq_hf`):
- chemprot, ddi, gad (chemprot, DDI, GAD): {split}.tsv `id, sentence (entities dummified), label` ->
  `{id, sentence, label}`, any label containing "false" -> "0" (GAD's header line dropped).
- biosses (BIOSSES): {split}.tsv with a header, `id, sentence1, sentence2, score` -> label float.
- hoc (HoC): {split}.tsv with a header, `0_0,1_1,...,9_0 labels, sentence, <abstract>_<n>` -> one row
  per abstract, sentences joined, the 10 labels OR-ed.
- pubmedqa (pubmedqa): pqal_fold0/{train,dev}_set.json, test_set.json -> `{id, sentence1: QUESTION,
  sentence2: CONTEXTS joined, label: final_decision}`.
- bioasq (BioASQ): {split}.tsv, no header, `id, question, context, yes/no` -> the same.
- the 5 NER tasks and ebmpico (BC5CDR-chem, BC5CDR-disease, NCBI-disease, BC2GM, JNLPBA, or their
  MTL-Bioinformatics-2016 `-IOB` folders; ebmnlp): {split}.tsv (dev.tsv or MTL's devel.tsv) of
  token<TAB>tag lines -> `{id, tokens, ner_tags}` (blurb_ner.py).

Not read: the tasks' original distributions before BLURB's conversion (ChemProt's abstracts/entities/
relations TSVs, DDI XML, PubMedQA's ori_pqal.json, HoC's per-abstract text files, EBM-NLP's spans); a
folder holding only those is one error line saying which conversion to run. BC5CDR's and NCBI-disease's
PubTator releases are converted with `--from-pubtator` (blurb_pubtator.py: prepare's own tokens and
sentences, so not BLURB's files).
"""
from __future__ import annotations

import csv
import io
from functools import partial
from pathlib import Path

from finetune.blurb import METRIC, canonical_task
from finetune.errors import FinetuneError
from finetune.prepare import blurb_pubtator as pubtator
from finetune.prepare.blurb_ner import read_conll
from finetune.prepare.common import PrepareError, Report, load_json, read_lines

SPLITS = ("train", "dev", "test")
# task -> (folder in data_generation/data, output folder name in data.zip, reader kind)
TASKS: dict[str, tuple[str, str, str]] = {
    "bc5cdr-chem": ("BC5CDR-chem", "BC5CDR-chem_hf", "ner"),
    "bc5cdr-disease": ("BC5CDR-disease", "BC5CDR-disease_hf", "ner"),
    "ncbi-disease": ("NCBI-disease", "NCBI-disease_hf", "ner"),
    "bc2gm": ("BC2GM", "BC2GM_hf", "ner"),
    "jnlpba": ("JNLPBA", "JNLPBA_hf", "ner"),
    "ebmpico": ("ebmnlp", "ebmnlp_hf", "pico"),
    "chemprot": ("chemprot", "chemprot_hf", "re"),
    "ddi": ("DDI", "DDI_hf", "re"),
    "gad": ("GAD", "GAD_hf", "re"),
    "biosses": ("BIOSSES", "BIOSSES_hf", "biosses"),
    "hoc": ("HoC", "HoC_hf", "hoc"),
    "pubmedqa": ("pubmedqa", "pubmedqa_hf", "pubmedqa"),
    "bioasq": ("BioASQ", "bioasq_hf", "bioasq"),
}
assert set(TASKS) == set(METRIC)
# files of a task's original distribution that BLURB's data_generation converts first
_ORIGINAL = [(".pubtator", "PubTator"), (".pubtator.txt", "PubTator"), (".xml", "XML"),
             ("ori_pqal.json", "PubMedQA ori_pqal"), ("_abstracts.tsv", "ChemProt abstracts/entities/relations")]


def find_base(raw_dir: Path) -> Path:
    for d in (raw_dir, raw_dir / "data", raw_dir / "data_generation" / "data"):
        if d.is_dir() and any(_task_dir(d, t) for t in TASKS):
            return d
    if any(pubtator.find_release(raw_dir, t) for t in pubtator.TASKS):
        raise PrepareError(f"{raw_dir}: no BLURB task folder, but PubTator releases of BC5CDR/NCBI-disease: pass "
                           "--from-pubtator to convert those (prepare's own tokens and sentences)")
    raise PrepareError(f"{raw_dir}: no BLURB task folder (chemprot, DDI, GAD, BIOSSES, HoC, pubmedqa, BioASQ, "
                       "BC5CDR-chem, ...) here, in data/ or in data_generation/data/; run BLURB's "
                       "data_generation (microsoft.github.io/BLURB/sample_code/data_generation.tar.gz) first")


def _task_dir(base: Path, task: str) -> Path | None:
    """The task's folder, BLURB's name or MTL-Bioinformatics-2016's `<name>-IOB` (any case)."""
    want = TASKS[task][0].lower()
    for p in sorted(base.iterdir()):
        if p.is_dir() and p.name.lower() in (want, want + "-iob"):
            return p
    return None


def _split_file(folder: Path, split: str, task: str) -> Path:
    names = {"dev": ["dev.tsv", "devel.tsv"]}.get(split, [f"{split}.tsv"])
    for n in names:
        if (folder / n).is_file():
            return folder / n
    found = sorted(p.name for p in folder.rglob("*") if p.is_file())[:6]
    kinds = sorted({v for f in found for k, v in _ORIGINAL if f.lower().endswith(k)})
    hint = f"it holds {', '.join(found) or 'nothing'}"
    if "PubTator" in kinds and task in pubtator.TASKS:
        hint += (" (PubTator, the task's own release: pass --from-pubtator to convert it with prepare's own "
                 "tokens and sentences, whose scores are not the paper's, or run BLURB's data_generation)")
    elif kinds:
        hint += (f" ({'/'.join(kinds)}: the task's original distribution, which prepare does not read; "
                 "convert it with BLURB's data_generation first)")
    raise PrepareError(f"{task}: {folder} has no {' or '.join(names)}; {hint}")


def _tsv_fields(path: Path, n: int, line: str, names: tuple[str, ...]) -> list[str]:
    parts = line.strip().split("\t")
    if len(parts) != len(names):
        raise PrepareError(f"{path}:{n}: {len(parts)} tab-separated columns, expected {len(names)} "
                           f"({', '.join(names)})")
    return parts


def _is_header(parts: list[str]) -> bool:
    return parts[0].strip().lower() in ("index", "id", "label", "labels", "") or parts[-1].strip().lower() in (
        "label", "labels", "index", "score")


def read_re(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        parts = _tsv_fields(path, n, line, ("id", "sentence", "label"))
        if n == 1 and _is_header(parts):   # GAD's files start with "index sentence label"
            continue
        rid, sent, label = parts
        rows.append({"id": rid, "sentence": sent, "label": "0" if "false" in label else label})
    return rows


def read_biosses(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(read_lines(path), 1):
        if n == 1 or not line.strip():   # header
            continue
        rid, s1, s2, score = _tsv_fields(path, n, line, ("id", "sentence1", "sentence2", "score"))
        try:
            value = float(score)
        except ValueError:
            raise PrepareError(f"{path}:{n}: score {score!r} is not a number") from None
        rows.append({"sentence1": s1, "sentence2": s2, "label": value, "id": rid})
    return rows


def read_hoc(path: Path) -> list[dict]:
    """Sentence rows -> one row per abstract (consecutive rows of one `<abstract>_<n>` id)."""
    rows: list[dict] = []
    where: dict[str, int] = {}
    for n, line in enumerate(read_lines(path), 1):
        if n == 1 or not line.strip():   # header
            continue
        labels, sent, sid = _tsv_fields(path, n, line, ("labels", "sentence", "id"))
        try:
            pairs = [x.split("_") for x in labels.split(",")]
            vec = [int(v) for _, v in pairs]
        except ValueError:
            raise PrepareError(f"{path}:{n}: labels {labels!r} are not like 0_1,1_0,...,9_0") from None
        if len(vec) != 10 or any(v not in (0, 1) for v in vec):
            raise PrepareError(f"{path}:{n}: labels {labels!r}: expected 10 entries <hallmark>_<0|1>")
        doc = sid.split("_")[0]
        if rows and rows[-1]["id"] == doc:
            rows[-1]["sentence"] = (rows[-1]["sentence"] + " " + sent).strip()
            rows[-1]["label"] = [a | b for a, b in zip(rows[-1]["label"], vec)]
            continue
        if doc in where:
            raise PrepareError(f"{path}:{n}: abstract {doc} starts again after other abstracts (first at "
                               f"line {where[doc]}); keep an abstract's sentences together")
        where[doc] = n
        rows.append({"sentence": sent.strip(), "label": vec, "id": doc})
    return rows


def read_pubmedqa(path: Path) -> list[dict]:
    data = load_json(path)
    if not isinstance(data, dict):
        raise PrepareError(f"{path}: expected a JSON object mapping PMID -> question record")
    rows = []
    for pid, obj in data.items():
        ctx = obj.get("CONTEXTS") if isinstance(obj, dict) else None
        if not (isinstance(ctx, list) and all(isinstance(c, str) for c in ctx)
                and isinstance(obj.get("QUESTION"), str) and isinstance(obj.get("final_decision"), str)):
            raise PrepareError(f"{path}: record {pid}: needs QUESTION, CONTEXTS (list of strings) and "
                               "final_decision")
        label = obj["final_decision"].strip()
        if label not in ("yes", "no", "maybe"):
            raise PrepareError(f"{path}: record {pid}: final_decision {label!r} is not yes/no/maybe")
        rows.append({"id": pid, "sentence1": obj["QUESTION"].strip(),
                     "sentence2": " ".join(c.strip() for c in ctx if c.strip()), "label": label})
    return rows


def read_bioasq(path: Path) -> list[dict]:
    text = "\n".join(read_lines(path))
    rows = []
    for n, rec in enumerate(csv.reader(io.StringIO(text), delimiter="\t"), 1):
        if not rec:
            continue
        if len(rec) != 4:
            raise PrepareError(f"{path}:{n}: {len(rec)} tab-separated columns, expected 4 "
                               "(id, question, context, yes/no)")
        rid, q, ctx, label = (x.strip() for x in rec)
        if label not in ("yes", "no"):
            raise PrepareError(f"{path}:{n}: label {label!r} is not yes/no")
        rows.append({"id": rid, "sentence1": q, "sentence2": ctx, "label": label})
    return rows


def _pubmedqa_file(folder: Path, split: str) -> Path:
    p = folder / "pqal_fold0" / f"{split}_set.json" if split != "test" else folder / "test_set.json"
    if not p.is_file():
        orig = " (found ori_pqal.json: make the BLURB split with PubMedQA's preprocess/split_dataset.py pqal, " \
               "as BLURB's data_generation does)" if (folder / "ori_pqal.json").is_file() else ""
        raise PrepareError(f"pubmedqa: {p}: no such file{orig}")
    return p


_READERS = {"ner": read_conll, "pico": partial(read_conll, pico=True), "re": read_re, "biosses": read_biosses,
            "hoc": read_hoc, "bioasq": read_bioasq}


def prepare_task(base: Path, out_dir: Path, task: str, report: Report) -> None:
    folder_name, out_name, kind = TASKS[task]
    folder = _task_dir(base, task)
    if folder is None:
        raise PrepareError(f"{task}: no folder {folder_name} in {base}")
    for split in SPLITS:
        if kind == "pubmedqa":
            rows = read_pubmedqa(_pubmedqa_file(folder, split))
        else:
            rows = _READERS[kind](_split_file(folder, split, task))
        report.write_jsonl(rows, out_dir / out_name / f"{split}.json")


def _wanted(tasks: list[str] | None) -> list[str] | None:
    if not tasks:
        return None
    try:
        return [canonical_task(t) for t in tasks]
    except FinetuneError as e:
        raise PrepareError(str(e)) from None


def _from_pubtator(raw_dir: Path, out_dir: Path, wanted: list[str] | None, report: Report) -> set[str]:
    """Convert the PubTator releases found under raw_dir; the tasks handled (written or failed)."""
    handled = set()
    for task in wanted or list(pubtator.TASKS):
        if task not in pubtator.TASKS:
            continue
        try:
            files = pubtator.find_release(raw_dir, task)
            if files is None:
                if wanted:
                    raise PrepareError(f"{task}: no {pubtator.RELEASE_FILES[pubtator.TASKS[task][0]]['train']} "
                                       f"under {raw_dir}")
                continue
            for split in SPLITS:
                report.write_jsonl(pubtator.convert(files[split], task, report),
                                   out_dir / TASKS[task][1] / f"{split}.json")
            report.notes.append(f"{task}: converted from PubTator ({files['train'].parent}) with prepare's own "
                                "tokens and sentences, not BLURB's IOB files: scores are not the paper's")
        except PrepareError as e:
            report.errors.append(str(e))
        handled.add(task)
    return handled


def prepare(raw_dir: Path, out_dir: Path, tasks: list[str] | None = None, from_pubtator: bool = False) -> Report:
    """Every requested task (default: every task folder present); a task that fails is one error line
    in `report.errors` and the others are still written. `from_pubtator`: BC5CDR and NCBI-disease from
    their PubTator releases anywhere under raw_dir (blurb_pubtator.py)."""
    report = Report("blurb")
    wanted = _wanted(tasks)
    handled = _from_pubtator(raw_dir, out_dir, wanted, report) if from_pubtator else set()
    if wanted is not None:
        wanted = [t for t in wanted if t not in handled]
        if not wanted:
            return report
    try:
        base = find_base(raw_dir)
    except PrepareError:
        if handled and wanted is None:   # only the PubTator releases are there
            return report
        raise
    if wanted is None:
        wanted = [t for t in TASKS if _task_dir(base, t) and t not in handled]
        missing = [t for t in TASKS if t not in wanted and t not in handled]
        if missing:
            report.notes.append(f"no folder in {base} for: {', '.join(missing)}")
    for task in wanted:
        try:
            prepare_task(base, out_dir, task, report)
        except PrepareError as e:
            report.errors.append(str(e))
    return report

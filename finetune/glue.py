"""GLUE as LinkBERT reports it: the official TSV files read as released, each task's metrics, the score.

Files are those of GLUE's download script (`glue_data/TASK/{train,dev,test}.tsv`; MNLI has
`dev_matched`/`dev_mismatched` and `test_matched`/`test_mismatched`). Tab-separated with no quoting (as
GLUE's own readers split them); every file but CoLA's train/dev has a header line, test files carry an
`index` column and no label. Rows become the seqcls/regression rows of docs/formats.md section 7: `id` is the
file's `index` (QQP: `id`) column where it has one, else the 0-based row number.

| task | text columns | label column | metrics (metrics.json) | task score |
|---|---|---|---|---|
| cola | sentence (4th of 4, no header) | 2nd | matthews_corrcoef | MCC |
| sst2 | sentence | label | accuracy | accuracy |
| mrpc | #1 String, #2 String | Quality | f1 (class "1"), accuracy | mean of both |
| qqp | question1, question2 | is_duplicate | f1 (class "1"), accuracy | mean of both |
| stsb | sentence1, sentence2 | score (0-5) | pearsonr, spearmanr | mean of both |
| mnli | sentence1, sentence2 | gold_label | accuracy (matched; mismatched split) | mean of m, mm |
| qnli | question, sentence | label | accuracy | accuracy |
| rte | sentence1, sentence2 | label | accuracy | accuracy |
| wnli | sentence1, sentence2 | label | accuracy | accuracy |

GLUE score (`glue_score`): the benchmark's rule, the mean over tasks of each task's score (percent),
a task with two metrics (or MNLI's two splits) scoring their mean; the eight tasks LinkBERT reports are
required, WNLI is counted when given (as the leaderboard counts it). `bert_average` is the other number
papers print as "GLUE": BERT's Table 1 average of MNLI-m, MNLI-mm, QQP F1, QNLI, SST-2, CoLA MCC,
STS-B Spearman, MRPC F1 and RTE.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from finetune.errors import FinetuneError


@dataclass(frozen=True)
class GlueTask:
    name: str
    kind: str                        # seqcls | regression
    text: tuple[str, ...]            # header names of the input columns
    label: str                       # header name of the gold column (absent in test files)
    metrics: tuple[str, ...]         # what metrics.json holds for the task (besides accuracy/mse)
    score_metrics: tuple[str, ...]   # metrics averaged into the task's GLUE score
    id_column: str = "index"
    positive_label: str | None = None   # binary F1 counts this class (MRPC/QQP: "1" = paraphrase/duplicate)


TASKS: dict[str, GlueTask] = {t.name: t for t in (
    # CoLA train/dev: no header, columns (source, label, original annotation, sentence); test: index, sentence
    GlueTask("cola", "seqcls", ("sentence",), "label", ("matthews_corrcoef",), ("matthews_corrcoef",)),
    GlueTask("sst2", "seqcls", ("sentence",), "label", (), ("accuracy",)),
    GlueTask("mrpc", "seqcls", ("#1 String", "#2 String"), "Quality", ("f1",), ("f1", "accuracy"),
             positive_label="1"),
    GlueTask("qqp", "seqcls", ("question1", "question2"), "is_duplicate", ("f1",), ("f1", "accuracy"),
             id_column="id", positive_label="1"),
    GlueTask("stsb", "regression", ("sentence1", "sentence2"), "score", ("spearmanr",), ("pearsonr", "spearmanr")),
    GlueTask("mnli", "seqcls", ("sentence1", "sentence2"), "gold_label", (), ("accuracy",)),
    GlueTask("qnli", "seqcls", ("question", "sentence"), "label", (), ("accuracy",)),
    GlueTask("rte", "seqcls", ("sentence1", "sentence2"), "label", (), ("accuracy",)),
    GlueTask("wnli", "seqcls", ("sentence1", "sentence2"), "label", (), ("accuracy",)),
)}
LINKBERT_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")
_COLA_COLUMNS = ("source", "label", "annotation", "sentence")


def canonical_task(name: str) -> str:
    """'SST-2', 'sst2', 'STS-B', 'MNLI' -> the key of TASKS; error for a non-GLUE name."""
    key = re.sub(r"[^a-z0-9]", "", name.strip().lower())
    if key in TASKS:
        return key
    raise FinetuneError(f"{name!r} is not a GLUE task; known: {', '.join(TASKS)}")


def read_glue_tsv(path: str | Path, task: str) -> tuple[list[dict], list[str]]:
    """(rows in the form of docs/formats.md section 7, 'file:line' of malformed lines skipped) of one official GLUE file.

    A line with another number of columns than the header is skipped and counted (QQP's train.tsv has
    some; GLUE's own readers skip short ones too); a file whose header lacks a needed column is an error.
    """
    spec = TASKS[task]
    path = Path(path)
    if not path.is_file():
        raise FinetuneError(f"{path}: no such file (give the GLUE {task} .tsv file)")
    try:   # utf-8-sig: MRPC's train/dev header starts with the byte-order mark of Microsoft's release
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as e:
        raise FinetuneError(f"{path}: cannot read as UTF-8 text ({e})") from None
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    first = lines[0].split("\t") if lines else []
    if task == "cola" and first != ["index", "sentence"]:
        columns, start = _COLA_COLUMNS, 0        # train/dev: no header line
    else:
        columns, start = tuple(first), 1
    col = {c: i for i, c in enumerate(columns)}
    missing = [c for c in spec.text if c not in col]
    if missing:
        raise FinetuneError(f"{path}:1: no column {missing[0]!r} in the header ({', '.join(columns)}); "
                            f"expected the official GLUE {task} TSV as released")
    has_label = spec.label in col
    needed = max(col[c] for c in spec.text + ((spec.label,) if has_label else ())) + 1
    rows, skipped = [], []
    for n, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{path}:{n}"
        if len(fields) != len(columns) or len(fields) < needed:   # a stray tab or a cut line shifts columns
            skipped.append(where)
            continue
        row = {"id": fields[col[spec.id_column]] if spec.id_column in col else str(len(rows) + len(skipped)),
               "_where": where}
        names = ("sentence",) if len(spec.text) == 1 else ("sentence1", "sentence2")
        for out_name, c in zip(names, spec.text):
            row[out_name] = fields[col[c]]
        if has_label:
            value = fields[col[spec.label]].strip()
            if spec.kind == "regression":
                try:
                    value = float(value)
                except ValueError:
                    raise FinetuneError(f"{where}: column {spec.label!r} must be a number, got {value!r}") from None
            row["label"] = value
        rows.append(row)
    if not rows:
        raise FinetuneError(f"{path}: no rows" + (f" ({len(skipped)} malformed lines, first {skipped[0]})"
                                                   if skipped else ""))
    seen: dict[str, str] = {}
    for r in rows:
        if r["id"] in seen:
            raise FinetuneError(f"{r['_where']}: duplicate id {r['id']!r} (first at {seen[r['id']]})")
        seen[r["id"]] = r["_where"]
    return rows, skipped


# -- the GLUE score ----------------------------------------------------------------------------------

def task_score(task: str, metrics: dict[str, float], mismatched: dict[str, float] | None = None) -> float:
    """A task's GLUE score in percent: its score metrics averaged (MNLI: matched and mismatched)."""
    spec = TASKS[task]
    if task == "mnli":
        if mismatched is None:
            raise FinetuneError("mnli: the GLUE score needs the mismatched accuracy too "
                                "(run with --validation_mismatched dev_mismatched.tsv)")
        return 100.0 * (metrics["accuracy"] + mismatched["accuracy"]) / 2
    return 100.0 * sum(metrics[m] for m in spec.score_metrics) / len(spec.score_metrics)


def glue_score(per_task: dict[str, dict], allow_partial: bool = False) -> dict:
    """`per_task`: task -> {"metrics": {...} (fractions), "mismatched": {...} for MNLI}.

    Returns the GLUE score (the benchmark's mean of task scores), each task's score, and BERT's Table 1
    average where all its numbers are present."""
    tasks = {}
    for name, entry in per_task.items():
        t = canonical_task(name)
        if t in tasks:
            raise FinetuneError(f"task {t} given twice")
        tasks[t] = task_score(t, entry["metrics"], entry.get("mismatched"))
    missing = [t for t in LINKBERT_TASKS if t not in tasks]
    if missing and not allow_partial:
        raise FinetuneError(f"missing GLUE tasks: {', '.join(missing)} (or pass --allow_partial)")
    if not tasks:
        raise FinetuneError("no GLUE task scores given")
    out = {"glue_score": sum(tasks.values()) / len(tasks), "tasks": tasks, "missing": missing,
           "partial": bool(missing)}
    if not missing:
        m = {canonical_task(k): v for k, v in per_task.items()}
        nums = [m["mnli"]["metrics"]["accuracy"], m["mnli"]["mismatched"]["accuracy"], m["qqp"]["metrics"]["f1"],
                m["qnli"]["metrics"]["accuracy"], m["sst2"]["metrics"]["accuracy"],
                m["cola"]["metrics"]["matthews_corrcoef"], m["stsb"]["metrics"]["spearmanr"],
                m["mrpc"]["metrics"]["f1"], m["rte"]["metrics"]["accuracy"]]
        out["bert_average"] = 100.0 * sum(nums) / len(nums)
    return out


def collect_runs(items: list[str], split: str = "validation") -> dict[str, dict]:
    """`TASK=RUN_DIR` (or TASK=path/metrics.json) items -> glue_score's input, from each metrics.json."""
    from finetune.blurb import load_run_metrics

    out: dict[str, dict] = {}
    for item in items:
        if "=" not in item:
            raise FinetuneError(f"{item!r}: write TASK=RUN_DIR (e.g. cola=runs/cola)")
        name, path = item.split("=", 1)
        task = canonical_task(name)
        p, data = load_run_metrics(path, split)
        entry = {"metrics": data[split]}
        if task == "mnli":
            mm = f"{split}_mismatched"
            if mm not in data:
                raise FinetuneError(f"{p}: no {mm!r} split for MNLI's mismatched accuracy; fine-tune with "
                                    f"--{mm} dev_mismatched.tsv")
            entry["mismatched"] = data[mm]
        need = set(TASKS[task].score_metrics) | ({"f1"} if task in ("qqp", "mrpc") else set())
        lacking = sorted(need - set(entry["metrics"]))
        if lacking:
            raise FinetuneError(f"{p}: {split} has no {lacking[0]!r} metric, which GLUE uses for {task} "
                                f"(has: {', '.join(entry['metrics'])}); fine-tune with --preset {task}")
        out[task] = entry
    return out

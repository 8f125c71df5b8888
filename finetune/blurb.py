"""BLURB score: the mean over six task families of the mean score within each family (PubMedBERT's
definition, used by LinkBERT's Table 7). Family mapping and the metric read from each task's metrics.json:

| family | tasks | metric |
|---|---|---|
| NER | bc5cdr-chem, bc5cdr-disease, ncbi-disease, bc2gm, jnlpba | f1 (seqeval entity micro F1) |
| PICO | ebmpico | macro_f1 |
| relation extraction | chemprot, ddi, gad | f1 (micro, negative class ignored) |
| sentence similarity | biosses | pearsonr |
| document classification | hoc | f1 (micro over document-label cells) |
| question answering | pubmedqa, bioasq | accuracy |

Scores are reported in percent, as the leaderboard and the paper do.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from finetune.errors import FinetuneError

FAMILIES: dict[str, list[str]] = {
    "ner": ["bc5cdr-chem", "bc5cdr-disease", "ncbi-disease", "bc2gm", "jnlpba"],
    "pico": ["ebmpico"],
    "relation_extraction": ["chemprot", "ddi", "gad"],
    "sentence_similarity": ["biosses"],
    "document_classification": ["hoc"],
    "question_answering": ["pubmedqa", "bioasq"],
}
METRIC = {**{t: "f1" for t in FAMILIES["ner"]}, "ebmpico": "macro_f1",
          **{t: "f1" for t in FAMILIES["relation_extraction"]}, "biosses": "pearsonr", "hoc": "f1",
          "pubmedqa": "accuracy", "bioasq": "accuracy"}
_ALIASES = {"bc5chem": "bc5cdr-chem", "bc5disease": "bc5cdr-disease", "bc5dis": "bc5cdr-disease",
            "ncbi": "ncbi-disease", "pico": "ebmpico", "ebmnlp": "ebmpico", "ebmpico": "ebmpico"}


def canonical_task(name: str) -> str:
    """'BC5CDR-chem_hf', 'bc5cdr_chem', 'BC5-chem' -> 'bc5cdr-chem'; error for a non-BLURB name."""
    key = re.sub(r"[^a-z0-9]", "", re.sub(r"_hf$", "", name.strip().lower()))
    for t in METRIC:
        if key == re.sub(r"[^a-z0-9]", "", t):
            return t
    if key in _ALIASES:
        return _ALIASES[key]
    raise FinetuneError(f"{name!r} is not a BLURB task; known: {', '.join(METRIC)}")


def blurb_score(scores: dict[str, float], allow_partial: bool = False) -> dict:
    """`scores`: task -> score in percent. Returns the score, family means and the tasks used."""
    tasks = {}
    for name, v in scores.items():
        t = canonical_task(name)
        if t in tasks:
            raise FinetuneError(f"task {t} given twice")
        tasks[t] = float(v)
    missing = [t for fam in FAMILIES.values() for t in fam if t not in tasks]
    if missing and not allow_partial:
        raise FinetuneError(f"missing BLURB tasks: {', '.join(missing)} (or pass --allow_partial)")
    families = {}
    for fam, members in FAMILIES.items():
        have = [tasks[t] for t in members if t in tasks]
        if have:
            families[fam] = sum(have) / len(have)
    if not families:
        raise FinetuneError("no BLURB task scores given")
    return {"blurb_score": sum(families.values()) / len(families), "families": families, "tasks": tasks,
            "missing": missing, "partial": bool(missing)}


def collect_scores(items: list[str], split: str = "test", percent_input: bool = False) -> dict[str, float]:
    """Scores in percent from `TASK=DIR_or_metrics.json` items and/or JSON files mapping task -> score."""
    out: dict[str, float] = {}
    for item in items:
        if "=" in item:
            name, path = item.split("=", 1)
            task = canonical_task(name)
            p, data = load_run_metrics(path, split)
            metric = METRIC[task]
            if metric not in data[split]:
                raise FinetuneError(f"{p}: {split} has no {metric!r} metric, which BLURB uses for {task} "
                                    f"(has: {', '.join(data[split])})")
            out[task] = 100.0 * float(data[split][metric])
        else:
            data = _load(Path(item))
            for name, v in data.items():
                if not isinstance(v, (int, float)):
                    raise FinetuneError(f"{item}: value of {name!r} must be a number")
                if not percent_input and not -1.0 <= v <= 1.0:
                    raise FinetuneError(f"{item}: {name} = {v} looks like a percentage; pass --percent "
                                        "(values are read as fractions, like metrics.json)")
                out[canonical_task(name)] = float(v) if percent_input else 100.0 * float(v)
    return out


def load_run_metrics(path: str, split: str) -> tuple[Path, dict]:
    """A run's metrics.json (given its folder or the file) and its content, which must have ``split``."""
    p = Path(path)
    p = p / "metrics.json" if p.is_dir() else p
    data = _load(p)
    if split not in data:
        raise FinetuneError(f"{p}: no {split!r} split (has: {', '.join(data) or 'nothing'}); pick another with --split")
    return p, data


def _load(p: Path) -> dict:
    if not p.is_file():
        raise FinetuneError(f"{p}: no such file")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise FinetuneError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise FinetuneError(f"{p}: expected a JSON object")
    return data

"""BC5CDR and NCBI-disease from their own PubTator releases -> `{id, tokens, ner_tags}` (`--from-pubtator`).

BLURB's NER files are MTL-Bioinformatics-2016's IOB conversions, made with that project's sentence
splitter and tokeniser. This converter is prepare's own and simpler, so its sentences and tokens differ
from BLURB's and scores on its output are not the paper's; it exists for users who only have the
releases. PubTator: per document `PMID|t|title`, `PMID|a|abstract`, then `PMID<TAB>start<TAB>end<TAB>
mention<TAB>type<TAB>concept` lines (offsets into title + " " + abstract; BC5CDR's `PMID<TAB>CID<TAB>...`
relation lines are ignored), a blank line between documents.
Tokens: runs of letters/digits or single other characters, also cut at every mention boundary.
Sentences: the title, then a break after ". ? !" when the next token starts with a capital or a digit
and no mention spans the break. Tags: B-<type>/I-<type>; of overlapping mentions the earlier (longer)
one is kept and the others counted.
"""
from __future__ import annotations

import re
from pathlib import Path

from finetune.prepare.common import PrepareError, Report, read_lines

RELEASE_FILES: dict[str, dict[str, str]] = {
    "bc5cdr": {"train": "CDR_TrainingSet.PubTator.txt", "dev": "CDR_DevelopmentSet.PubTator.txt",
               "test": "CDR_TestSet.PubTator.txt"},
    "ncbi": {"train": "NCBItrainset_corpus.txt", "dev": "NCBIdevelopset_corpus.txt",
             "test": "NCBItestset_corpus.txt"},
}
# task -> (release, {PubTator type: tag type})
TASKS: dict[str, tuple[str, dict[str, str]]] = {
    "bc5cdr-chem": ("bc5cdr", {"Chemical": "Chemical"}),
    "bc5cdr-disease": ("bc5cdr", {"Disease": "Disease"}),
    "ncbi-disease": ("ncbi", {t: "Disease" for t in ("SpecificDisease", "DiseaseClass", "Modifier",
                                                     "CompositeMention")}),
}
_TOKEN = re.compile(r"[^\W_]+|\S")


def find_release(raw_dir: Path, task: str) -> dict[str, Path] | None:
    """split -> file of the task's release anywhere under raw_dir, or None when its train file is absent."""
    names = RELEASE_FILES[TASKS[task][0]]
    found = {}
    for split, name in names.items():
        hits = sorted(raw_dir.rglob(name))
        if hits:
            found[split] = hits[0]
    if "train" not in found:
        return None
    missing = [names[s] for s in names if s not in found]
    if missing:
        raise PrepareError(f"{task}: found {found['train']} but not {', '.join(missing)} under {raw_dir}")
    return found


def read_documents(path: Path):
    """(pmid, text, title length, [(start, end, type)]) per document."""
    docs, cur = [], None
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            cur = None
            continue
        if "|t|" in line[:40] or "|a|" in line[:40]:
            pmid, kind, text = line.split("|", 2)
            if cur is None or cur[0] != pmid:
                cur = [pmid, "", 0, []]
                docs.append(cur)
            if kind == "t":
                cur[1], cur[2] = text, len(text)
            else:
                cur[1] = cur[1] + " " + text
            continue
        parts = line.split("\t")
        if len(parts) >= 4 and parts[1] == "CID":   # BC5CDR chemical-disease relation
            continue
        if len(parts) < 5 or not (parts[1].isdigit() and parts[2].isdigit()) or cur is None or parts[0] != cur[0]:
            raise PrepareError(f"{path}:{n}: not a PubTator line (PMID|t|title, PMID|a|abstract or "
                               "PMID<TAB>start<TAB>end<TAB>mention<TAB>type)")
        s, e = int(parts[1]), int(parts[2])
        if cur[1][s:e] != parts[3]:
            raise PrepareError(f"{path}:{n}: mention {parts[3]!r} is not at {s}-{e} of document {cur[0]} "
                               f"(found {cur[1][s:e]!r})")
        cur[3].append((s, e, parts[4]))
    return [tuple(d) for d in docs]


def _tokens(text: str, cuts: set[int]) -> list[tuple[int, int]]:
    spans = []
    for m in _TOKEN.finditer(text):
        s, e = m.span()
        inner = sorted(c for c in cuts if s < c < e)
        for a, b in zip([s] + inner, inner + [e]):
            spans.append((a, b))
    return spans


def convert(path: Path, task: str, report: Report) -> list[dict]:
    types = TASKS[task][1]
    rows: list[dict] = []
    for _, text, title_len, mentions in read_documents(path):
        kept: list[tuple[int, int, str]] = []
        for s, e, typ in sorted((m for m in mentions if m[2] in types), key=lambda m: (m[0], -m[1])):
            if kept and s < kept[-1][1]:
                report.skip(f"{task}: mentions overlapping an earlier one")
                continue
            kept.append((s, e, types[typ]))
        spans = _tokens(text, {c for s, e, _ in kept for c in (s, e)})
        tags, k = [], 0
        for s, _ in spans:
            while k < len(kept) and kept[k][1] <= s:
                k += 1
            inside = k < len(kept) and kept[k][0] <= s
            tags.append((("B-" if s == kept[k][0] else "I-") + kept[k][2]) if inside else "O")
        sentence: list[int] = []
        for i, (s, e) in enumerate(spans):
            sentence.append(i)
            if i + 1 < len(spans):
                nxt = spans[i + 1][0]
                free = not tags[i + 1].startswith("I-")   # no mention spans the break
                end_mark = text[s:e] in (".", "?", "!") and (text[nxt].isupper() or text[nxt].isdigit())
                if not (free and (end_mark or s < title_len <= nxt)):
                    continue
            rows.append({"tokens": [text[spans[j][0]:spans[j][1]] for j in sentence],
                         "ner_tags": [tags[j] for j in sentence], "id": str(len(rows))})
            sentence = []
    return rows

"""BLURB NER and EBM PICO: CoNLL-style token<TAB>tag files -> `{id, tokens, ner_tags}` rows for `--task ner`.

The layout BLURB's data_generation writes (from the MTL-Bioinformatics-2016 IOB files): one token and its
tag a line, a blank line between sentences, `-DOCSTART-` lines ignored. As the authors'
preprocess_blurb.py: ids are the sentence's running number in its file; for EBM PICO every `I-x` tag
becomes `B-x` (so the seqeval macro F1 is the token-level macro F1 BLURB reports).
"""
from __future__ import annotations

from pathlib import Path

from finetune.prepare.common import PrepareError, read_lines


def read_conll(path: Path, pico: bool = False) -> list[dict]:
    rows: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []

    def close():
        if tokens:
            rows.append({"tokens": list(tokens), "ner_tags": list(tags), "id": str(len(rows))})
            tokens.clear()
            tags.clear()

    for n, raw in enumerate(read_lines(path), 1):
        line = raw.strip()
        if line.startswith("-DOCSTART-"):
            continue
        if not line:
            close()
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise PrepareError(f"{path}:{n}: {len(parts)} tab-separated columns, expected 2 (token<TAB>tag; "
                               "a blank line between sentences)")
        token, tag = parts
        if not (tag == "O" or tag[:2] in ("B-", "I-") and len(tag) > 2):
            raise PrepareError(f"{path}:{n}: tag {tag!r} is not O, B-<type> or I-<type> (columns are "
                               "token<TAB>tag)")
        if pico and tag.startswith("I-"):
            tag = "B-" + tag[2:]
        tokens.append(token)
        tags.append(tag)
    close()
    return rows

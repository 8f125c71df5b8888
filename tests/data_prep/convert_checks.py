"""Shared checks for the converter tests: read a corpus back and hold every line to SPEC section 2."""
from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "convert"


def read_corpus(path: Path) -> list[dict]:
    """Every line of a corpus file, checked against SPEC section 2 (independently of the writer)."""
    raw = Path(path).read_bytes()
    if str(path).endswith(".gz"):
        raw = gzip.decompress(raw)
    elif str(path).endswith(".bz2"):
        raw = bz2.decompress(raw)
    docs = []
    ids = set()
    for lineno, line in enumerate(raw.decode("utf-8").split("\n"), 1):
        if not line:
            continue
        doc = json.loads(line)
        assert isinstance(doc, dict), f"line {lineno} is not an object"
        assert isinstance(doc["id"], str) and doc["id"], f"line {lineno}: id"
        assert doc["id"] not in ids, f"line {lineno}: duplicate id {doc['id']!r}"
        ids.add(doc["id"])
        assert isinstance(doc["text"], str) and doc["text"].strip(), f"line {lineno}: empty text"
        assert isinstance(doc.get("links", []), list), f"line {lineno}: links"
        assert all(isinstance(t, str) and t for t in doc.get("links", [])), f"line {lineno}: link ids"
        assert isinstance(doc.get("title", ""), str)
        docs.append(doc)
    return docs


def read_stats(out: Path) -> dict:
    stats = json.loads(Path(str(out) + ".stats.json").read_text())
    d = stats["documents"]
    assert d["read"] == d["written"] + sum(d["skipped"].values()), stats
    return stats

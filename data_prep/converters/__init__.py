"""Converters from real sources to the corpus format of docs/formats.md section 1, one module per kind.

Each kind module exposes ``accepts(path) -> bool`` (which files under a directory it reads) and
``iter_documents(inputs, stats, progress) -> Iterator[dict]``; ``data_prep.convert`` writes the result."""
from __future__ import annotations

import importlib

KINDS = {
    "pubmed": "data_prep.converters.pubmed",
    "wikipedia": "data_prep.converters.wikipedia",
    "html": "data_prep.converters.html_site",
    "dictd": "data_prep.converters.dictd",
}


def kind_module(kind: str):
    return importlib.import_module(KINDS[kind])

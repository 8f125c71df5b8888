"""Streaming reader and validator of the corpus format (SPEC section 2): JSON Lines, plain/.gz/.bz2.

Lines are read as bytes and parsed one at a time, so a corpus of any size streams through; the
per-line check (`parse_line`) is a pure function so build's worker processes run it in parallel.
Whole-corpus checks (duplicate ids, link resolution) need every id and live in `CorpusIndex`.
"""
from __future__ import annotations

import bz2
import gzip
import json
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.errors import PrepError

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.bz2", ".json", ".json.gz", ".json.bz2")

# Reasons a line or document is skipped (manifest stats use these names).
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
BAD_FIELD = "bad_field"          # id/text missing or of the wrong type, links not a list of strings
DUPLICATE_ID = "duplicate_id"
EMPTY_TEXT = "empty_text"
NO_TOKENS = "no_tokens"          # text the tokenizer turns into nothing (only control characters, ...)
BAD_LINE_REASONS = (INVALID_UTF8, INVALID_JSON, BAD_FIELD, DUPLICATE_ID)
SKIP_REASONS = BAD_LINE_REASONS + (EMPTY_TEXT, NO_TOKENS)
# Reasons a link is dropped.
MISSING_TARGET = "missing_target"
SELF_LINK = "self_link"
REPEATED = "repeated"
LINK_DROP_REASONS = (MISSING_TARGET, SELF_LINK, REPEATED)

SKIP_HINT = "or pass --skip-bad-lines to skip such lines (they are counted in the manifest)"


def corpus_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files in the order given; a directory contributes its corpus files sorted by relative path."""
    from data_prep.converters.common import expand_inputs
    paths = list(paths)
    if not paths:
        return []
    return expand_inputs(paths, lambda f: f.name.endswith(SUFFIXES),
                         what=f"corpus files (*{', *'.join(SUFFIXES)})", noun="corpus file")


def open_binary(path: Path, raw=None):
    """Open plain, gzip or bzip2 by content (magic bytes), not by name. ``raw``: an already open binary
    file to decompress (its position then tells how far into the compressed file reading got)."""
    with open(path, "rb") as f:
        magic = f.read(3)
    src = raw if raw is not None else path
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(src, "rb")
    if magic == b"BZh":
        return bz2.open(src, "rb")
    return open(path, "rb") if raw is None else raw


def iter_lines(files: list[Path]) -> Iterator[tuple[int, int, bytes]]:
    """(file index, 1-based line number, raw line) for every non-blank line."""
    for fi, path in enumerate(files):
        yield from iter_file_lines(fi, path)


def iter_file_lines(fi: int, path: Path) -> Iterator[tuple[int, int, bytes]]:
    """A damaged file (truncated or corrupt .gz/.bz2 stream, unreadable disk) is one PrepError naming the
    file, the last good line and the compressed byte offset. --skip-bad-lines cannot skip it: a
    compressed stream does not resynchronise after damage, so what follows the damage is unreadable."""
    lineno = 0
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise PrepError(f"{path}: cannot open ({e.strerror}); check the path and its permissions") from None
    with raw:
        try:
            with open_binary(path, raw) as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        yield fi, lineno, line
        except (OSError, EOFError, zlib.error) as e:  # truncated .gz, bad gzip/bz2 stream, I/O error
            where = f"after line {lineno}" if lineno else "before the first line"
            try:
                at = f", near compressed byte {raw.tell()}"
            except (OSError, ValueError):
                at = ""
            raise PrepError(f"{path}: damaged or truncated {where}{at} ({type(e).__name__}: {e}); re-download "
                            "or re-compress the file (--skip-bad-lines cannot skip a damaged compressed "
                            "stream)") from None


@dataclass
class Parsed:
    """One line's outcome: a document, or a skip reason with the message naming the problem."""
    reason: str | None
    id: str | None = None
    text: str | None = None
    links: list[str] | None = None
    message: str = ""


def parse_line(raw: bytes) -> Parsed:
    """Check one line against SPEC section 2 (not uniqueness: that needs the whole corpus)."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Parsed(INVALID_UTF8, message=f"not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8")
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as e:
        return Parsed(INVALID_JSON, message=f"not valid JSON ({e.msg.removesuffix(' at')}, column {e.colno}); "
                                            "write one JSON object per line")
    if not isinstance(obj, dict):
        return Parsed(INVALID_JSON, message=f"a JSON {type(obj).__name__}, expected an object per line")
    doc_id, text, links = obj.get("id"), obj.get("text"), obj.get("links", [])
    for name, val in (("id", doc_id), ("text", text)):
        if val is None:
            return Parsed(BAD_FIELD, message=f"field {name!r} is missing; every line needs a string "
                                             "'id' and 'text'")
        if not isinstance(val, str):
            return Parsed(BAD_FIELD, message=f"field {name!r} is a {type(val).__name__}, expected a string")
    if not doc_id:
        return Parsed(BAD_FIELD, message="field 'id' is empty; give every document a non-empty id")
    if links is None:
        links = []
    if not isinstance(links, list) or not all(isinstance(x, str) for x in links):
        return Parsed(BAD_FIELD, message="field 'links' must be a list of id strings")
    if not text.strip():
        return Parsed(EMPTY_TEXT, id=doc_id, links=links, message="empty text")
    return Parsed(None, id=doc_id, text=text, links=links)


def line_error(path, lineno: int, message: str) -> PrepError:
    return PrepError(f"{path}:{lineno}: {message}, {SKIP_HINT}")


@dataclass
class CorpusIndex:
    """Document rows in order of first appearance, duplicate detection, link resolution and counts."""
    skip_bad_lines: bool = False
    row_of: dict = field(default_factory=dict)   # id -> row
    # row -> file and line (for the duplicate-id message), compact: a corpus may have 30M documents
    where_file: array = field(default_factory=lambda: array("i"))
    where_line: array = field(default_factory=lambda: array("q"))
    paths: dict = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    link_drops: Counter = field(default_factory=Counter)
    lines_in: int = 0
    links_in: int = 0
    links_used: int = 0

    def reject(self, reason: str, path, lineno: int, message: str) -> None:
        """Count a skipped line; a bad line (not an empty document) is an error unless skipping."""
        if reason in BAD_LINE_REASONS and not self.skip_bad_lines:
            raise line_error(path, lineno, message)
        self.skipped[reason] += 1

    def add(self, doc_id: str, path, lineno: int) -> int | None:
        """Row of a new document, or None (counted) when its id was seen before."""
        if doc_id in self.row_of:
            r = self.row_of[doc_id]
            first = f"{list(self.paths)[self.where_file[r]]}:{self.where_line[r]}"
            self.reject(DUPLICATE_ID, path, lineno, f"duplicate id {doc_id!r} (first at {first}); "
                                                    "ids must be unique")
            return None
        row = len(self.where_line)
        self.row_of[doc_id] = row
        self.where_file.append(self.paths.setdefault(str(path), len(self.paths)))
        self.where_line.append(lineno)
        return row

    def resolve(self, row: int, links: list[str]) -> list[int]:
        """Target rows of a used document's links; missing, self and repeated links dropped and counted."""
        self.links_in += len(links)
        seen: set[int] = set()
        out: list[int] = []
        for target in links:
            t = self.row_of.get(target)
            if t is None:
                self.link_drops[MISSING_TARGET] += 1
            elif t == row:
                self.link_drops[SELF_LINK] += 1
            elif t in seen:
                self.link_drops[REPEATED] += 1
            else:
                seen.add(t)
                out.append(t)
        self.links_used += len(out)
        return out

    @property
    def num_docs(self) -> int:
        return len(self.where_line)

    def document_stats(self, used: int) -> dict:
        skipped = {r: int(self.skipped.get(r, 0)) for r in SKIP_REASONS}
        return {"in": self.lines_in, "used": used, "skipped": skipped}

    def link_stats(self) -> dict:
        return {"in": self.links_in, "used": self.links_used,
                "dropped": {r: int(self.link_drops.get(r, 0)) for r in LINK_DROP_REASONS}}


def iter_documents(paths: Iterable[str | Path], skip_bad_lines: bool = False,
                   index: CorpusIndex | None = None) -> Iterator[tuple[int, str, str, list[str]]]:
    """(row, id, text, links) of every valid document, streaming; counts go into ``index``.

    Links are returned as written (resolving needs every id: call ``index.resolve`` after the pass).
    """
    index = index if index is not None else CorpusIndex(skip_bad_lines=skip_bad_lines)
    files = corpus_files(paths)
    for fi, lineno, raw in iter_lines(files):
        index.lines_in += 1
        p = parse_line(raw)
        if p.reason is not None:
            index.reject(p.reason, files[fi], lineno, p.message)
            continue
        row = index.add(p.id, files[fi], lineno)
        if row is not None:
            yield row, p.id, p.text, p.links

"""Streaming reader and validator of the corpus format (docs/formats.md section 1): JSON Lines, plain/.gz/.bz2.

Lines are read as bytes and parsed one at a time, so a corpus of any size streams through; the
per-line check (`parse_line`) is a pure function so build's worker processes run it in parallel.
Whole-corpus checks (duplicate ids, link resolution) need every id and live in `CorpusIndex`, which
keeps a 64-bit hash per id in numpy arrays (`IdTable`), not a Python dict: ~12 bytes per document
instead of ~150, so rank 0 holds 36M PubMed ids in ~0.5 GB. Two distinct ids with the same 64-bit hash
would be taken for a duplicate; for 36M ids the chance is ~4e-5.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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

BOM = b"\xef\xbb\xbf"   # the UTF-8 byte-order mark
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
                    if lineno == 1 and line.startswith(BOM):   # Windows editors start UTF-8 files with one
                        line = line[len(BOM):]
                    if line.strip():   # CRLF line ends are JSON whitespace: parse_line takes them as they are
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
    """Check one line against docs/formats.md section 1 (not uniqueness: that needs the whole corpus)."""
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


def id_hashes(ids: Iterable[str]) -> np.ndarray:
    """64-bit BLAKE2b of each id's UTF-8 (the same in every process, unlike hash())."""
    h = [hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest() for i in ids]
    return np.frombuffer(b"".join(h), dtype="<u8").astype(np.uint64) if h else np.zeros(0, np.uint64)


class IdTable:
    """Id hash -> document row without a Python object per id: sorted runs of (hash, row), merged
    like a binary counter (each id is merged O(log n) times; a lookup searches O(log n) runs)."""

    def __init__(self):
        self.keys: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(k) for k in self.keys)

    def find(self, h: np.ndarray) -> np.ndarray:
        """Row of each hash, -1 where absent."""
        out = np.full(len(h), -1, dtype=np.int64)
        for k, r in zip(self.keys, self.rows):
            i = np.minimum(np.searchsorted(k, h), len(k) - 1)
            hit = k[i] == h
            out[hit] = r[i[hit]]
        return out

    def insert(self, h: np.ndarray, rows: np.ndarray) -> None:
        """Add hashes (distinct, none present yet) with their rows."""
        if not len(h):
            return
        order = np.argsort(h, kind="stable")
        self.keys.append(h[order])
        self.rows.append(rows[order].astype(np.uint32))
        while len(self.keys) >= 2 and len(self.keys[-2]) <= 2 * len(self.keys[-1]):
            b, rb = self.keys.pop(), self.rows.pop()
            a, ra = self.keys.pop(), self.rows.pop()
            pos = np.searchsorted(a, b) + np.arange(len(b))  # where b's entries land in the merged run
            keys = np.empty(len(a) + len(b), np.uint64)
            rows_ = np.empty(len(a) + len(b), np.uint32)
            into_a = np.ones(len(keys), bool)
            into_a[pos] = False
            keys[pos], rows_[pos] = b, rb
            keys[into_a], rows_[into_a] = a, ra
            del into_a, pos, a, b, ra, rb
            self.keys.append(keys)
            self.rows.append(rows_)


@dataclass
class CorpusIndex:
    """Document rows in order of first appearance, duplicate detection, link resolution and counts."""
    skip_bad_lines: bool = False
    ids: IdTable = field(default_factory=IdTable)
    # row -> file and line (for the duplicate-id message), compact: a corpus may have 30M documents
    where_file: array = field(default_factory=lambda: array("i"))
    where_line: array = field(default_factory=lambda: array("I"))
    paths: dict = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    link_drops: Counter = field(default_factory=Counter)
    lines_in: int = 0
    links_in: int = 0
    links_used: int = 0
    _released: int = -1

    def reject(self, reason: str, path, lineno: int, message: str) -> None:
        """Count a skipped line; a bad line (not an empty document) is an error unless skipping."""
        if reason in BAD_LINE_REASONS and not self.skip_bad_lines:
            raise line_error(path, lineno, message)
        self.skipped[reason] += 1

    def _place(self, row: int) -> str:
        return f"{list(self.paths)[self.where_file[row]]}:{self.where_line[row]}"

    def add_batch(self, ids: list[str], hashes: np.ndarray, places: list[tuple]) -> np.ndarray:
        """Rows for a batch of valid documents in input order (-1: a duplicate id, counted or an error).

        ``places``: (path, line number) of each; a duplicate's message names where the id came first.
        """
        earlier = self.ids.find(hashes)
        first_in_batch = {}
        rows = np.full(len(ids), -1, dtype=np.int64)
        for i, (doc_id, (path, lineno)) in enumerate(zip(ids, places)):
            h = int(hashes[i])
            if earlier[i] >= 0 or h in first_in_batch:
                r = int(earlier[i]) if earlier[i] >= 0 else first_in_batch[h]
                self.reject(DUPLICATE_ID, path, lineno, f"duplicate id {doc_id!r} (first at {self._place(r)}); "
                                                        "ids must be unique")
                continue
            rows[i] = first_in_batch[h] = len(self.where_line)
            self.where_file.append(self.paths.setdefault(str(path), len(self.paths)))
            self.where_line.append(lineno)
        new = rows >= 0
        self.ids.insert(hashes[new], rows[new])
        return rows

    def add(self, doc_id: str, path, lineno: int) -> int | None:
        """Row of a new document, or None (counted) when its id was seen before."""
        r = int(self.add_batch([doc_id], id_hashes([doc_id]), [(path, lineno)])[0])
        return None if r < 0 else r

    def resolve_batch(self, rows: np.ndarray, nlinks: np.ndarray, targets: np.ndarray) -> tuple:
        """Resolve the links of consecutive used documents at once.

        rows [n], nlinks [n] (links listed by each), targets [sum nlinks] (id hashes, in order).
        Returns (kept targets' rows in order, kept links per document); missing, self and repeated
        links are dropped and counted.
        """
        self.links_in += int(nlinks.sum())
        src = np.repeat(rows, nlinks)
        t = self.ids.find(targets)
        missing = t < 0
        self_link = ~missing & (t == src)
        ok = ~missing & ~self_link
        # repeated: the same (document, target) earlier in the document's list
        idx = np.flatnonzero(ok)
        order = np.lexsort((idx, t[idx], src[idx]))
        s_src, s_t = src[idx][order], t[idx][order]
        again = np.zeros(len(idx), bool)
        again[1:] = (s_src[1:] == s_src[:-1]) & (s_t[1:] == s_t[:-1])
        repeated = np.zeros(len(t), bool)
        repeated[idx[order[again]]] = True
        ok &= ~repeated
        self.link_drops[MISSING_TARGET] += int(missing.sum())
        self.link_drops[SELF_LINK] += int(self_link.sum())
        self.link_drops[REPEATED] += int(repeated.sum())
        self.links_used += int(ok.sum())
        kept_per_doc = np.bincount(np.repeat(np.arange(len(rows)), nlinks)[ok], minlength=len(rows))
        return t[ok], kept_per_doc

    def resolve(self, row: int, links: list[str]) -> list[int]:
        """Target rows of a used document's links; missing, self and repeated links dropped and counted."""
        t, _ = self.resolve_batch(np.array([row]), np.array([len(links)]), id_hashes(links))
        return t.tolist()

    @property
    def num_docs(self) -> int:
        return self._released if self._released >= 0 else len(self.where_line)

    def release(self) -> None:
        """Drop the id table and places once links are resolved (counts stay; no more adds)."""
        self._released = self.num_docs
        self.ids = IdTable()
        self.where_file, self.where_line = array("i"), array("I")

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

"""What every converter shares: opening (compressed) inputs with a byte progress bar, counting, and the
Corpus writer (docs/formats.md section 1) (JSON Lines, plain / .gz / .bz2, written atomically with a stats file)."""
from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from lxml import etree
from tqdm import tqdm

from data_prep.errors import PrepError

OUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.bz2")


class ConvertStats:
    """Counts of one conversion: documents read/written/skipped by reason, links by fate, extras."""

    def __init__(self, kind: str):
        self.kind = kind
        self.documents = Counter()
        self.skipped = Counter()
        self.links = Counter()
        self.other = Counter()  # kind-specific counts (e.g. ASCII-art paragraphs dropped)
        self.inputs: list[str] = []
        self.started = time.perf_counter()

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "inputs": self.inputs,
            "documents": {"read": self.documents["read"], "written": self.documents["written"],
                          "skipped": dict(sorted(self.skipped.items()))},
            "links": dict(sorted(self.links.items())),
            "other": dict(sorted(self.other.items())),
            "seconds": round(time.perf_counter() - self.started, 3),
        }


class _CountingReader(io.RawIOBase):
    """A raw file that advances a tqdm bar by the (compressed) bytes read, so progress is honest for .gz/.bz2."""

    def __init__(self, f, bar: tqdm):
        self._f, self._bar = f, bar

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._f.readinto(b)
        if n:
            self._bar.update(n)
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def open_input(path: Path, progress: bool = True, desc: str | None = None):
    """Binary stream of a plain, .gz/.dz (gzip, dictzip) or .bz2 file; a byte-level progress bar on stderr.

    Returns (stream, bar); close both when done."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise PrepError(f"{path}: cannot open ({e.strerror}); check the path") from None
    size = os.fstat(raw.fileno()).st_size
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=desc or path.name, disable=not progress,
               leave=False)
    stream = io.BufferedReader(_CountingReader(raw, bar), buffer_size=1 << 20)
    name = path.name.lower()
    if name.endswith((".gz", ".dz")):
        stream = gzip.GzipFile(fileobj=stream, mode="rb")
    elif name.endswith(".bz2"):
        stream = bz2.BZ2File(stream, mode="rb")
    return stream, bar


def read_bytes(path: Path, progress: bool = True) -> bytes:
    stream, bar = open_input(path, progress)
    try:
        return stream.read()
    except (OSError, EOFError) as e:
        raise PrepError(f"{path}: cannot decompress ({e}); is the file complete and of the right type?") from None
    finally:
        stream.close()
        bar.close()


def expand_inputs(inputs: Iterable[str | Path], accept, what: str = "input files of this kind",
                  noun: str = "file") -> list[Path]:
    """Files named directly, plus every file under a named directory that ``accept(path)`` takes (sorted)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and accept(q))
            if not found:
                raise PrepError(f"{p}: directory holds no {what}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise PrepError(f"{p}: no such {noun} or directory")
    if not out:
        raise PrepError("no inputs given")
    return out


def _check_doc(doc: dict) -> None:
    # A converter bug, not user input: fail loudly rather than write a line `build` would reject.
    if not isinstance(doc.get("id"), str) or not doc["id"]:
        raise ValueError(f"document without a string id: {doc!r:.200}")
    if not isinstance(doc.get("text"), str) or not doc["text"].strip():
        raise ValueError(f"document {doc['id']!r} without text")
    links = doc.get("links", [])
    if not isinstance(links, list) or not all(isinstance(t, str) for t in links):
        raise ValueError(f"document {doc['id']!r}: links must be a list of strings")


def check_out_name(path: Path) -> None:
    if not path.name.lower().endswith(OUT_SUFFIXES):
        raise PrepError(f"--out {path}: name must end in .jsonl, .jsonl.gz or .jsonl.bz2")


def _open_out(path: Path, tmp: Path) -> tuple[io.TextIOBase, list]:
    """Text stream for the output plus what must be closed after it (innermost last)."""
    name = path.name.lower()
    raw = open(tmp, "wb")
    if name.endswith(".gz"):
        # No file name and mtime 0 in the header: the same input gives byte-identical output (the
        # bundled corpus is committed and checked against a fresh conversion).
        inner = gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0)
        return io.TextIOWrapper(inner, encoding="utf-8"), [raw]
    if name.endswith(".bz2"):
        return io.TextIOWrapper(bz2.BZ2File(raw, "wb"), encoding="utf-8"), [raw]
    return io.TextIOWrapper(raw, encoding="utf-8"), []


class SerializedDoc(NamedTuple):
    """A document a converter already wrote as its JSON line (PubMed workers do), checked where made."""
    id: str
    line: str
    n_links: int


class CorpusWriter:
    """Writes documents to ``out`` (via ``out.partial``, renamed at close) and ``out.stats.json``.

    Duplicate ids are skipped and counted (first one kept) unless ``track_ids`` is False, for kinds
    that guarantee unique ids themselves more cheaply (PubMed keeps a PMID bitmap)."""

    def __init__(self, out: str | Path, stats: ConvertStats, track_ids: bool = True):
        self.out = Path(out)
        self.stats = stats
        check_out_name(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.out.with_name(self.out.name + ".partial")
        self._f, self._closers = _open_out(self.out, self._tmp)
        self._seen: set[str] | None = set() if track_ids else None

    def write(self, doc: dict | SerializedDoc) -> bool:
        if isinstance(doc, SerializedDoc):
            doc_id, line, n_links = doc
        else:
            _check_doc(doc)
            doc_id, line, n_links = doc["id"], json.dumps(doc, ensure_ascii=False), len(doc.get("links", ()))
        if self._seen is not None:
            if doc_id in self._seen:
                self.stats.skip("duplicate_id")
                return False
            self._seen.add(doc_id)
        self._f.write(line + "\n")
        self.stats.documents["written"] += 1
        self.stats.links["written"] += n_links
        return True

    def write_all(self, docs: Iterator[dict]) -> None:
        for doc in docs:
            self.write(doc)

    def _close_files(self) -> None:
        self._f.close()
        for f in self._closers:
            f.close()

    def close(self) -> dict:
        self._close_files()
        os.replace(self._tmp, self.out)
        summary = self.stats.as_dict()
        summary["out"] = str(self.out)
        stats_path = self.out.with_name(self.out.name + ".stats.json")
        stats_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return summary

    def abort(self) -> None:
        try:
            self._close_files()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


def iter_xml_elements(path: Path, tags, root_names: Iterable[str], root_hint: str = "", progress: bool = False,
                      **iterparse_options) -> Iterator:
    """End events of ``tags`` in one streamed XML file (plain or compressed).

    Each element is freed, with the siblings before it, once the consumer asks for the next one, so memory
    stays flat for a 20 GB input. A wrong root element, an XML error or a truncated file is one PrepError."""
    stream, bar = open_input(path, progress)
    ctx = etree.iterparse(stream, events=("end",), tag=tags, resolve_entities=False, no_network=True,
                          huge_tree=True, **iterparse_options)
    root_names = tuple(root_names)
    try:
        for _, el in ctx:
            yield el
            el.clear(keep_tail=False)
            parent = el.getparent()
            if parent is not None:
                while el.getprevious() is not None:
                    del parent[0]
        root = getattr(ctx, "root", None)
        if root is not None and etree.QName(root).localname not in root_names:
            raise PrepError(f"{path}: root element <{etree.QName(root).localname}> is not <{root_names[0]}>"
                            f"{root_hint}")
    except etree.XMLSyntaxError as e:
        raise PrepError(f"{path}: line {e.lineno}: XML error: {e.msg}; is the file complete?") from None
    except (OSError, EOFError) as e:
        raise PrepError(f"{path}: cannot read ({e}); is the file complete and of the right type?") from None
    finally:
        stream.close()
        bar.close()

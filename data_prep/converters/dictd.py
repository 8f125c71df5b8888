"""dictd dictionaries (`.index` + `.dict.dz`/`.dict`), e.g. the Jargon File: one document per headword.

Index lines are ``headword TAB offset TAB length`` with offset and length in dictd's base64 digits; the
entry is that byte slice of the uncompressed `.dict` (a `.dict.dz` is dictzip, which gzip reads).
Cross-references are written ``{like this}`` and become the document's links, resolved to headwords
case-insensitively (an exact-case match wins: the Jargon File has both "OP" and "op")."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from data_prep.converters.common import ConvertStats, read_bytes
from data_prep.errors import PrepError

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_XREF = re.compile(r"\{([^{}]*)\}")
# Braces also occur in C code samples ("{ *to = *from++; ...}"): content that is not a headword is taken
# as a cross-reference only when it reads like a term, otherwise the braces are literal text.
_TERM = re.compile(r"^[\w][\w .'’/&+-]*$")
# dictfmt's own metadata entries (database name, info, charset), not dictionary content.
_INTERNAL_PREFIX = "00-database-"
# Preformatted paragraphs (deeper indentation) are kept only when mostly letters: the Jargon File has
# ASCII art and circuit diagrams that are not prose.
_MIN_LETTER_RATIO = 0.6


def accepts(path: Path) -> bool:
    return path.name.endswith(".index")


def _b64(digits: str) -> int:
    n = 0
    for c in digits:
        n = n * 64 + _B64[c]
    return n


def data_file_for(index: Path) -> Path:
    stem = index.name[: -len(".index")] if index.name.endswith(".index") else index.stem
    for name in (stem + ".dict.dz", stem + ".dict"):
        cand = index.with_name(name)
        if cand.is_file():
            return cand
    raise PrepError(f"{index}: no {stem}.dict.dz or {stem}.dict beside the index; put the data file next to it")


def read_index(index: Path) -> list[tuple[str, int, int, int]]:
    """(headword, offset, length, line number) for every index line."""
    out = []
    try:
        text = index.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PrepError(f"{index}: not UTF-8 ({e.reason} at byte {e.start})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise PrepError(f"{index}:{lineno}: expected 'headword TAB offset TAB length', got {line[:60]!r}")
        try:
            out.append((parts[0], _b64(parts[1]), _b64(parts[2]), lineno))
        except KeyError:
            raise PrepError(f"{index}:{lineno}: offset/length {parts[1]!r}/{parts[2]!r} are not dictd "
                            "base64 digits (A-Z a-z 0-9 + /)") from None
    return out


def _letter_ratio(s: str) -> float:
    chars = [c for c in s if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


def looks_like_term(target: str) -> bool:
    return len(target) <= 60 and _TERM.match(target) is not None


def clean_entry(body: str, is_ref=looks_like_term, stats: ConvertStats | None = None) -> str:
    """Entry text without its headword line and pronunciation/part-of-speech header, cross-reference
    braces removed (braces in code samples kept), wrapped lines joined into one line per paragraph."""
    def unbrace(m: re.Match) -> str:
        target = " ".join(m.group(1).split())
        return target if is_ref(target) else m.group(0)

    body = _XREF.sub(unbrace, body)
    lines = body.split("\n")[1:]  # line 0 is the headword
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line.rstrip())
        elif paragraphs[-1]:
            paragraphs.append([])
    out = []
    for i, para in enumerate(p for p in paragraphs if p):
        indents = [len(ln) - len(ln.lstrip(" ")) for ln in para]
        if i == 0 and min(indents) < 4:
            continue  # " /op/, n." header: pronunciation and part of speech
        preformatted = max(indents) > 4 or min(indents) < 4
        if preformatted and _letter_ratio(" ".join(para)) < _MIN_LETTER_RATIO:
            if stats is not None:
                stats.other["art_paragraphs_dropped"] += 1
            continue
        out.append(" ".join(" ".join(para).split()))
    return "\n".join(out)


def iter_documents(inputs: list[Path], stats: ConvertStats, progress: bool = True) -> Iterator[dict]:
    for index in inputs:
        yield from _dictionary_documents(index, stats, progress)


def _dictionary_documents(index: Path, stats: ConvertStats, progress: bool) -> Iterator[dict]:
    entries = read_index(index)
    data_path = data_file_for(index)
    data = read_bytes(data_path, progress)
    records = []
    for head, off, length, lineno in entries:
        stats.documents["read"] += 1
        if head.startswith(_INTERNAL_PREFIX):
            stats.skip("dictd_internal_entry")
            continue
        if off + length > len(data):
            raise PrepError(f"{index}:{lineno}: entry {head!r} points past the end of {data_path} "
                            f"({off}+{length} > {len(data)} bytes); index and data do not match")
        try:
            body = data[off:off + length].decode("utf-8")
        except UnicodeDecodeError as e:
            raise PrepError(f"{data_path}: entry {head!r} (index line {lineno}) is not UTF-8 "
                            f"({e.reason})") from None
        first = body.split("\n", 1)[0].strip()
        # The index holds the headword lowercased; the entry's first line has its real spelling.
        hid = first if first.casefold() == head.casefold() else head
        records.append((hid, body))
    exact = {hid for hid, _ in records}
    folded: dict[str, str] = {}
    for hid, _ in records:
        folded.setdefault(hid.casefold(), hid)

    def is_ref(target: str) -> bool:
        return target in exact or target.casefold() in folded or looks_like_term(target)

    for hid, body in records:
        links = []
        for m in _XREF.finditer(body):
            target = " ".join(m.group(1).split())
            if not target or not is_ref(target):
                stats.other["literal_braces_kept"] += 1
                continue
            stats.links["read"] += 1
            if target in exact:
                links.append(target)
            elif target.casefold() in folded:
                links.append(folded[target.casefold()])
            else:
                stats.links["unresolved_kept"] += 1
                links.append(target)
        text = clean_entry(body, is_ref, stats)
        if not text.strip():
            stats.skip("empty_text")
            continue
        yield {"id": hid, "title": hid, "text": text, "links": links}

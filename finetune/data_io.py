"""Reading the task files of docs/formats.md section 7 (JSON Lines, plain/.gz/.bz2) with one-line errors.

Hand-written rather than `datasets.load_dataset("json")` because a user's broken line must be reported
as `file:line: missing field 'answers'`, which Arrow's JSON reader cannot do.
"""
from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

from finetune.errors import FinetuneError


def _open_text(path: Path):
    """Text of a task file; utf-8-sig drops a leading byte-order mark (Windows editors write one)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def read_jsonl(path: str | Path) -> list[dict]:
    """All rows of a JSON Lines file, each tagged with `_where` = "file:line" for later error messages.

    A JSON array file (`[{...}, ...]`) is accepted as well; blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FinetuneError(f"{path}: no such file (give a JSON Lines task file, docs/formats.md section 7)")
    rows: list[dict] = []
    try:
        with _open_text(path) as f:
            text = f.read()
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise FinetuneError(f"{path}: cannot read as UTF-8 text ({e})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise FinetuneError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        items = [(i + 1, r) for i, r in enumerate(data)]
        where_fmt = "{path}: item {n}"
    else:
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise FinetuneError(f"{path}:{n}: not valid JSON ({e.msg}); one JSON object a line") from None
        where_fmt = "{path}:{n}"
    for n, row in items:
        where = where_fmt.format(path=path, n=n)
        if not isinstance(row, dict):
            raise FinetuneError(f"{where}: expected a JSON object, got {type(row).__name__}")
        row = dict(row)
        row["_where"] = where
        rows.append(row)
    if not rows:
        raise FinetuneError(f"{path}: no rows")
    seen: dict[str, str] = {}
    for i, row in enumerate(rows):
        if "id" not in row:
            # LinkBERT's files always carry ids; rows without one get their 0-based position.
            row["id"] = str(i)
        rid = str(row["id"])
        row["id"] = rid
        if rid in seen:
            raise FinetuneError(f"{row['_where']}: duplicate id {rid!r} (first at {seen[rid]}); ids must be unique")
        seen[rid] = row["_where"]
    return rows


def require(row: dict, field: str, types: type | tuple, kind: str, hint: str = ""):
    """The value of `field`, or a FinetuneError naming file, line, field and the expected format."""
    if field not in row:
        raise FinetuneError(f"{row['_where']}: missing field {field!r} for task {kind}"
                            + (f" (expected {hint})" if hint else ""))
    v = row[field]
    if not isinstance(v, types) or isinstance(v, bool) and bool not in _as_tuple(types):
        names = "/".join(t.__name__ for t in _as_tuple(types))
        raise FinetuneError(f"{row['_where']}: field {field!r} must be {names}, got {type(v).__name__}"
                            + (f" (expected {hint})" if hint else ""))
    return v


def _as_tuple(t):
    return t if isinstance(t, tuple) else (t,)

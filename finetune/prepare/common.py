"""What every preparer shares: opening release files (plain or .gz), writing the runner's JSON Lines,
counting what was skipped, and one-line errors that name the file and line."""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from finetune.errors import FinetuneError


class PrepareError(FinetuneError):
    """A release file that is missing or not in its documented format; the message names file:line."""


def open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig", newline="")


def read_lines(path: Path) -> list[str]:
    """The file's lines without line ends; unreadable or non-UTF-8 files are one error line."""
    try:
        with open_text(path) as f:
            return f.read().splitlines()
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise PrepareError(f"{path}: cannot read as UTF-8 text ({e})") from None


def load_json(path: Path):
    try:
        with open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise PrepareError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise PrepareError(f"{path}: cannot read as UTF-8 text ({e})") from None


def parse_json_line(path: Path, n: int, line: str, what: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise PrepareError(f"{path}:{n}: not valid JSON ({e.msg}); expected one {what} a line") from None
    if not isinstance(obj, dict):
        raise PrepareError(f"{path}:{n}: expected a JSON object ({what}), got {type(obj).__name__}")
    return obj


def first_existing(folder: Path, names: list[str]) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


def need_file(folder: Path, names: list[str], what: str) -> Path:
    p = first_existing(folder, names)
    if p is None:
        raise PrepareError(f"{folder}: no {' or '.join(names)} ({what})")
    return p


@dataclass
class Report:
    """Files written and what was skipped: printed by the CLI, saved as OUT_DIR/prepare_report_<family>.json."""
    family: str
    files: dict[str, int] = field(default_factory=dict)       # output path -> rows written
    skipped: dict[str, int] = field(default_factory=dict)     # "<task>: <reason>" -> count
    counted: dict[str, int] = field(default_factory=dict)     # kept but worth knowing -> count
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)           # tasks that could not be prepared

    def write_jsonl(self, rows: Iterable[dict], path: Path) -> None:
        """Write rows (a list or a stream) as JSON Lines; a file that would be empty is an error."""
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
                n += 1
        if not n:
            path.unlink()
            raise PrepareError(f"{path}: nothing to write (the release file gave no rows)")
        self.files[str(path)] = n

    def skip(self, reason: str, n: int = 1) -> None:
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + n

    def count(self, what: str, n: int = 1) -> None:
        self.counted[what] = self.counted.get(what, 0) + n

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"prepare_report_{self.family}.json").write_text(json.dumps(
            {"family": self.family, "files": self.files, "skipped": self.skipped,
             "counted": self.counted, "notes": self.notes,
             "errors": self.errors},
            indent=1) + "\n")

    def lines(self) -> list[str]:
        out = [f"wrote {p} ({n} rows)" for p, n in self.files.items()]
        out += [f"skipped {n}: {reason}" for reason, n in self.skipped.items()]
        out += [f"note: {n} {what}" for what, n in self.counted.items()]
        return out + self.notes

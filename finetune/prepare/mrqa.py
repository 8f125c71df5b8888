"""MRQA 2019 shared-task releases -> SQuAD-style rows for `--task qa`, with LinkBERT's in-house split.

Release layout (the MRQA v2 S3 files, gzipped or not): RAW_DIR/train/<Name>.jsonl[.gz] and
RAW_DIR/dev/<Name>.jsonl[.gz]; the first line is `{"header": {...}}`, every other line one paragraph
`{"context", "qas": [{"qid", "question", "detected_answers": [{"text", "char_spans": [[s, e]]}]}]}`
(spans are inclusive character offsets). As the authors' preprocess_mrqa.py: one row per question,
answers = each detected answer's text with the start of its first char span; the official dev file,
the only one with gold, is split by paragraph line into an in-house dev and test half.
Written: OUT_DIR/<dataset>_hf/{train,dev,test}.json (names as in LinkBERT's data.zip: squad, newsqa,
triviaqa, searchqa, hotpot, naturalqa).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from finetune.prepare.common import PrepareError, Report, load_json, open_text, parse_json_line

# data.zip name -> release file names (the release's own first, the authors' renamed copy second)
DATASETS: dict[str, list[str]] = {
    "squad": ["SQuAD"],
    "newsqa": ["NewsQA"],
    "triviaqa": ["TriviaQA-web", "TriviaQA"],
    "searchqa": ["SearchQA"],
    "hotpot": ["HotpotQA"],
    "naturalqa": ["NaturalQuestionsShort", "NaturalQuestions"],
}
ALIASES = {"hotpotqa": "hotpot", "naturalquestions": "naturalqa", "nq": "naturalqa"}


def release_file(folder: Path, dname: str) -> Path | None:
    for stem in DATASETS[dname]:
        for suffix in (".jsonl.gz", ".jsonl"):
            if (folder / (stem + suffix)).is_file():
                return folder / (stem + suffix)
    return None


def iter_paragraphs(path: Path) -> Iterator[tuple[int, str, dict]]:
    """(line number, sha256 of the line, paragraph) for every paragraph line after the header, streamed
    (SearchQA's train file is GBs); the token lists, which nothing here uses, are dropped."""
    count, first = 0, True
    try:
        with open_text(path) as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                obj = parse_json_line(path, n, line, "MRQA paragraph")
                if first and "header" in obj:   # the release's first line names dataset and split
                    first = False
                    continue
                first = False
                for key, typ in (("context", str), ("qas", list)):
                    if not isinstance(obj.get(key), typ):
                        raise PrepareError(f"{path}:{n}: field {key!r} missing or not a {typ.__name__} "
                                           "(expected an MRQA paragraph {context, qas: [...]})")
                obj.pop("context_tokens", None)
                for qa in obj["qas"]:
                    if isinstance(qa, dict):
                        qa.pop("question_tokens", None)
                count += 1
                yield n, line_digest(line), obj
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise PrepareError(f"{path}: cannot read as UTF-8 text ({e})") from None
    if not count:
        raise PrepareError(f"{path}: no paragraph lines after the header")


def line_digest(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


def halve_keys(digests: list[str], seed: int = 0) -> tuple[list[int], list[int]]:
    """The in-house split without the authors' id lists: paragraphs ordered by a keyed hash of their
    line's digest, the first n // 2 are dev and the rest test (the authors' halves: dev = test or
    test + 1). Depends only on the file's content and the seed; each half keeps file order."""
    def key(i):
        return hashlib.sha256(f"{seed}\n{digests[i]}".encode()).hexdigest(), i
    order = sorted(range(len(digests)), key=key)
    half = len(digests) // 2
    return sorted(order[:half]), sorted(order[half:])


def halve(lines: list[str], seed: int = 0) -> tuple[list[int], list[int]]:
    """halve_keys for the paragraph lines themselves."""
    return halve_keys([line_digest(line) for line in lines], seed)


def load_split_ids(path: Path, n_paragraphs: int, source: Path) -> tuple[list[int], list[int]]:
    """LinkBERT's scripts/inhouse_splits/inhouse_split_<dataset>.json: {"dev": [...], "test": [...]},
    0-based paragraph lines after the header; together they must cover the file exactly once."""
    data = load_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("dev", "test")):
        raise PrepareError(f"{path}: expected {{\"dev\": [line ids], \"test\": [line ids]}} "
                           "(LinkBERT's scripts/inhouse_splits format)")
    seen: dict[int, str] = {}
    for part in ("dev", "test"):
        for k, i in enumerate(data[part]):
            if not isinstance(i, int) or isinstance(i, bool):
                raise PrepareError(f"{path}: {part}[{k}] = {i!r} is not a paragraph line id")
            if not 0 <= i < n_paragraphs:
                raise PrepareError(f"{path}: {part}[{k}] = {i} is outside {source}'s {n_paragraphs} paragraphs; "
                                   "these ids belong to another file")
            if i in seen:
                raise PrepareError(f"{path}: paragraph {i} is in both {seen[i]} and {part} (or twice)")
            seen[i] = part
    if len(seen) != n_paragraphs:
        raise PrepareError(f"{path}: dev + test hold {len(seen)} paragraph ids but {source} has "
                           f"{n_paragraphs}; these ids belong to another release of the file")
    return list(data["dev"]), list(data["test"])


def to_rows(path: Path, paragraphs: Iterable[tuple[int, str, dict]], name: str, report: Report) -> Iterator[dict]:
    for n, _, para in paragraphs:
        context = para["context"]
        for qa in para["qas"]:
            qid = qa.get("id", qa.get("qid"))
            if not isinstance(qid, str) or not isinstance(qa.get("question"), str):
                raise PrepareError(f"{path}:{n}: a question lacks 'qid' or 'question' "
                                   "(expected qas: [{qid, question, detected_answers}])")
            det = qa.get("detected_answers")
            if not isinstance(det, list):
                raise PrepareError(f"{path}:{n}: question {qid}: field 'detected_answers' missing or not a list")
            texts, starts = [], []
            for a in det:
                spans = a.get("char_spans") if isinstance(a, dict) else None
                if not (isinstance(a, dict) and isinstance(a.get("text"), str) and isinstance(spans, list) and spans
                        and isinstance(spans[0], list) and len(spans[0]) == 2
                        and all(isinstance(x, int) for x in spans[0])):
                    raise PrepareError(f"{path}:{n}: question {qid}: a detected answer lacks 'text' or "
                                       "'char_spans' [[start, end], ...]")
                s, e = spans[0]
                if context[s:e + 1] != a["text"]:
                    report.count(f"{name}: answers whose text differs from context[start:end+1] (kept, as "
                                 "the authors did; the runner drops such training rows)")
                texts.append(a["text"])
                starts.append(s)
            if not texts:
                report.skip(f"{name}: questions without a detected answer")
                continue
            yield {"id": qid, "question": qa["question"].strip(), "context": context,
                   "answers": {"answer_start": starts, "text": texts}}


def prepare(raw_dir: Path, out_dir: Path, datasets: list[str] | None = None,
            split_ids: Path | None = None, seed: int = 0) -> Report:
    report = Report("mrqa")
    train_dir, dev_dir = raw_dir / "train", raw_dir / "dev"
    for d in (train_dir, dev_dir):
        if not d.is_dir():
            raise PrepareError(f"{d}: no such folder (expected RAW_DIR/train and RAW_DIR/dev holding MRQA's "
                               "<Name>.jsonl.gz files, e.g. train/SQuAD.jsonl.gz and dev/SQuAD.jsonl.gz)")
    wanted = [canonical(d) for d in datasets] if datasets else [
        d for d in DATASETS if release_file(train_dir, d) or release_file(dev_dir, d)]
    if not wanted:
        raise PrepareError(f"{raw_dir}: no MRQA file found (expected train/ and dev/ holding "
                           f"{', '.join(n + '.jsonl.gz' for v in DATASETS.values() for n in v[:1])})")
    if split_ids is not None and split_ids.is_file() and len(wanted) > 1:
        raise PrepareError(f"--split-ids {split_ids} is one file but {len(wanted)} datasets are prepared "
                           f"({', '.join(wanted)}); pick one with --datasets or give the inhouse_splits folder")
    for dname in wanted:
        files = {}
        for split, folder in (("train", train_dir), ("dev", dev_dir)):
            files[split] = release_file(folder, dname)
            if files[split] is None:
                raise PrepareError(f"{folder}: no {' or '.join(s + '.jsonl[.gz]' for s in DATASETS[dname])} "
                                   f"for {dname}")
        ids_file = None
        if split_ids is not None:   # checked before the (long) train file is converted
            ids_file = split_ids / f"inhouse_split_{dname}.json" if split_ids.is_dir() else split_ids
            if not ids_file.is_file():
                raise PrepareError(f"{ids_file}: no such file (LinkBERT's scripts/inhouse_splits/"
                                   f"inhouse_split_{dname}.json)")
        train = iter_paragraphs(files["train"])
        report.write_jsonl(to_rows(files["train"], train, dname, report), out_dir / f"{dname}_hf" / "train.json")
        dev = list(iter_paragraphs(files["dev"]))
        if ids_file is None:
            dev_ids, test_ids = halve_keys([digest for _, digest, _ in dev], seed)
            how = f"official dev halved by keyed hash (seed {seed})"
        else:
            dev_ids, test_ids = load_split_ids(ids_file, len(dev), files["dev"])
            how = f"ids of {ids_file}"
        for split, ids in (("dev", dev_ids), ("test", test_ids)):
            rows = to_rows(files["dev"], [dev[i] for i in ids], dname, report)
            report.write_jsonl(rows, out_dir / f"{dname}_hf" / f"{split}.json")
        report.notes.append(f"{dname}: in-house dev/test = {len(dev_ids)}/{len(test_ids)} paragraphs of "
                            f"{files['dev']} ({how})")
    return report


def canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "").replace("_", "")
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise PrepareError(f"unknown MRQA dataset {name!r}; known: {', '.join(DATASETS)}")
    return key

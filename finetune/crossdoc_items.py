"""The cross-document cloze's items: which (A, B) pairs, which distractor titles, which random document.

An item is a document A that links to a document B and mentions B's title in its text. The probe masks
that mention and asks a masked LM to pick B's title among `candidates - 1` distractor titles of the same
token length, with B's text (title removed), a random document's text, or nothing as the second segment
(docs/ablation.md). Everything here is a pure function of the corpus, the seed and the tokenizer's
vocabulary (the token lengths), so every model with the same vocabulary is scored on the same items;
`items_sha256` names the set so two reports can be checked for it.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from finetune.errors import FinetuneError

MIN_TITLE_CHARS = 3      # "C", "X", "Q": one-letter titles match everywhere and say nothing
MAX_TITLE_TOKENS = 8     # longer titles are phrases, not names; one [MASK] per token gets unwieldy


@dataclass(frozen=True)
class Doc:
    id: str
    title: str
    text: str
    links: tuple


@dataclass(frozen=True)
class Item:
    a: str               # id of the document whose mention is masked
    b: str               # id of the linked document whose title is the answer
    random: str          # id of the document used in the `random` condition
    start: int           # character span of the masked mention in A's text
    end: int
    candidates: tuple    # titles, the answer at index `gold`
    gold: int


def read_corpus(path: str | Path) -> list[Doc]:
    """Documents of a corpus JSONL (.gz/.bz2); a bad line is one FinetuneError naming file:line and field."""
    from data_prep.corpus import iter_file_lines, parse_line
    from data_prep.errors import PrepError

    path = Path(path)
    if not path.is_file():
        raise FinetuneError(f"--corpus {path}: no such file; give a corpus JSONL (.jsonl, .jsonl.gz, .jsonl.bz2) "
                            "with one {\"id\", \"title\", \"text\", \"links\"} object per line")
    docs, seen = [], set()
    try:
        for _, lineno, raw in iter_file_lines(0, path):
            p = parse_line(raw)
            if p.reason == "empty_text":
                continue
            if p.reason is not None:
                raise FinetuneError(f"{path}:{lineno}: {p.message}")
            if p.id in seen:
                raise FinetuneError(f"{path}:{lineno}: id {p.id!r} repeats an earlier line; ids must be unique")
            seen.add(p.id)
            title = json.loads(raw).get("title")
            if title is not None and not isinstance(title, str):
                raise FinetuneError(f"{path}:{lineno}: field 'title' is a {type(title).__name__}, expected a string")
            docs.append(Doc(p.id, (title or p.id).strip(), p.text, tuple(dict.fromkeys(p.links))))
    except PrepError as e:
        raise FinetuneError(str(e)) from None
    if not docs:
        raise FinetuneError(f"{path}: no documents; the probe needs a linked corpus")
    return docs


def mention_pattern(title: str) -> re.Pattern:
    """The title as a whole word or phrase, any case."""
    return re.compile(r"(?<!\w)" + re.escape(title) + r"(?!\w)", re.IGNORECASE)


def removal_pattern(title: str) -> re.Pattern:
    """The title and any word it begins ("hacker" also takes "hackers", "hacker's"), any case: a second
    segment must not hand the model the answer's spelling, inflected or not."""
    return re.compile(r"(?<!\w)" + re.escape(title) + r"[\w'’]*", re.IGNORECASE)


def remove_title(text: str, title: str) -> str:
    """`text` with every occurrence of `title` (and the words it begins) removed, spaces tidied; an empty
    title removes nothing (its pattern would match every word)."""
    if not title:
        return text
    out = removal_pattern(title).sub("", text)
    return re.sub(r"[ \t]{2,}", " ", out)


def title_ids(tokenizer, titles: list[str]) -> list[tuple]:
    enc = tokenizer(titles, add_special_tokens=False)["input_ids"]
    return [tuple(x) for x in enc]


def usable_title(title: str, ids: tuple) -> bool:
    return len(title) >= MIN_TITLE_CHARS and any(c.isalnum() for c in title) and 1 <= len(ids) <= MAX_TITLE_TOKENS


def build_items(docs: list[Doc], tokenizer, n: int, candidates: int, seed: int) -> tuple[list[Item], dict]:
    """Up to `n` items and the counts of what was left out (why), deterministic for (docs, seed, vocab).

    Distractors have exactly the answer's token length (so the sum and the mean of the candidates'
    log-probabilities rank them alike), differ from it in tokens, are not A's own title and do not occur
    in A's text (copying from A would not be cross-document knowledge). The gold position is drawn."""
    ids = title_ids(tokenizer, [d.title for d in docs])
    index = {d.id: i for i, d in enumerate(docs)}
    by_len: dict[int, list[int]] = {}
    for i, d in enumerate(docs):
        if usable_title(d.title, ids[i]):
            by_len.setdefault(len(ids[i]), []).append(i)
    skipped = {"link_target_missing": 0, "title_unusable": 0, "title_not_mentioned": 0,
               "too_few_same_length_titles": 0, "no_random_document": 0}
    pool = []   # (a, b, start, end) in corpus order
    for ai, d in enumerate(docs):
        for link in d.links:
            bi = index.get(link)
            if bi is None or bi == ai:
                skipped["link_target_missing"] += 1
                continue
            if not usable_title(docs[bi].title, ids[bi]):
                skipped["title_unusable"] += 1
                continue
            m = mention_pattern(docs[bi].title).search(d.text)
            if m is None:
                skipped["title_not_mentioned"] += 1
                continue
            if len(by_len[len(ids[bi])]) < candidates + 1:   # the answer and A's own title may be among them
                skipped["too_few_same_length_titles"] += 1
                continue
            pool.append((ai, bi, m.start(), m.end()))
    if len(docs) < 3:
        skipped["no_random_document"] += len(pool)
        pool = []
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(pool), size=min(n, len(pool)), replace=False)) if pool else []
    items = []
    for k in chosen:
        ai, bi, start, end = pool[int(k)]
        distractors = _distractors(docs, ids, by_len, ai, bi, candidates - 1, rng)
        if distractors is None:
            skipped["too_few_same_length_titles"] += 1
            continue
        links = set(docs[ai].links)
        while True:   # a document other than A and B that A does not link to (terminates: len(docs) >= 3)
            ri = int(rng.integers(len(docs)))
            if ri not in (ai, bi) and (docs[ri].id not in links or len(links) >= len(docs) - 1):
                break
        gold = int(rng.integers(candidates))
        cands = [docs[j].title for j in distractors]
        cands.insert(gold, docs[bi].title)
        items.append(Item(docs[ai].id, docs[bi].id, docs[ri].id, start, end, tuple(cands), gold))
    skipped["pool"] = len(pool)
    return items, skipped


def _distractors(docs, ids, by_len, ai, bi, k, rng) -> list[int] | None:
    same = by_len[len(ids[bi])]
    a_text = docs[ai].text
    out, seen = [], {ids[bi]}
    for j in rng.permutation(len(same)):
        j = same[int(j)]
        if j in (ai, bi) or ids[j] in seen or mention_pattern(docs[j].title).search(a_text):
            continue
        seen.add(ids[j])
        out.append(j)
        if len(out) == k:
            return out
    return None


def items_sha256(items: list[Item]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps(asdict(it), sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()

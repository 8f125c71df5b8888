"""Tokenize a batch of corpus lines and cut each document into units and chunks.

This runs inside build's worker processes. Sentence boundaries are found on the token ids (terminal
punctuation followed by whitespace in the text, and paragraph breaks), not with a Python sentence
splitter: a splitter would cost more than the tokenizer itself and the tokenizer already tells us where
every token came from.

Two ways to cut (``--segmenting``):
- ``sentences`` (default, BERT's create_pretraining_data): a unit is one sentence (a sentence longer
  than ``segment_len`` is cut into pieces); units are packed greedily into chunks of at most
  ``max_seq_len - 3`` tokens. The pair sampler splits a chunk at a sentence boundary into A and B.
- ``fixed``: a unit is a run of whole sentences of at most ``segment_len`` tokens (greedy packing), and
  every unit is its own chunk; A and B are whole units.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from data_prep.corpus import NO_TOKENS, id_hashes, parse_line
from data_prep.parallel import WorkerState

TERMINALS = (".", "!", "?", "。", "！", "？")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SPACE = frozenset(" \t\n\r\f\v\u00a0")


def load_backend(tokenizer_json: str):
    """The Rust tokenizer with truncation and padding off (tokenizer.json files often carry them)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_json)
    tok.no_truncation()
    tok.no_padding()
    return tok


def sentence_ends(ids: np.ndarray, text: str, enc, is_terminal: np.ndarray) -> list[int]:
    """Sorted exclusive end indices of one document's sentences (the last is always len(ids)).

    ``is_terminal``: bool lookup table over the vocabulary (a table beats np.isin on short arrays).
    """
    n = len(ids)
    ends = []
    for i in np.flatnonzero(is_terminal[ids]).tolist():
        span = enc.token_to_chars(i)
        # "3.14" and "e.g.x" keep going; a terminal followed by whitespace or the end closes a sentence.
        if span is None or span[1] >= len(text) or text[span[1]] in _SPACE:
            ends.append(i + 1)
    for m in _PARAGRAPH.finditer(text):
        t = enc.char_to_token(m.end()) if m.end() < len(text) else None
        if t is not None and t > 0:
            ends.append(t)
    ends.append(n)
    return sorted(set(ends))


def pack_segments(ends: list[int], segment_len: int) -> tuple[list[int], int]:
    """Greedy packing of whole sentences into segments of <= segment_len tokens.

    Returns the segment lengths and how many over-long sentences had to be cut.
    """
    lens: list[int] = []
    cuts = 0
    cur = 0
    prev = 0
    for e in ends:
        s = e - prev
        prev = e
        if s <= 0:
            continue
        if cur + s <= segment_len:
            cur += s
            continue
        if cur:
            lens.append(cur)
            cur = 0
        if s > segment_len:
            cuts += 1
            q, r = divmod(s, segment_len)
            lens.extend([segment_len] * q)
            s = r
        cur = s
    if cur:
        lens.append(cur)
    return lens, cuts


def sentence_units(ends: list[int], piece_len: int) -> tuple[list[int], int]:
    """One unit per sentence; a sentence longer than piece_len becomes pieces of <= piece_len tokens."""
    lens: list[int] = []
    cuts = 0
    prev = 0
    for e in ends:
        s = e - prev
        prev = e
        if s <= 0:
            continue
        if s > piece_len:
            cuts += 1
            q, r = divmod(s, piece_len)
            lens.extend([piece_len] * q)
            if r:
                lens.append(r)
        else:
            lens.append(s)
    return lens, cuts


def pack_chunks(lens: list[int], max_tokens: int) -> list[int]:
    """Greedy packing of consecutive units into chunks of <= max_tokens; returns units per chunk."""
    sizes: list[int] = []
    cur = n = 0
    for s in lens:
        if n and cur + s > max_tokens:
            sizes.append(n)
            cur = n = 0
        cur += s
        n += 1
    if n:
        sizes.append(n)
    return sizes


@dataclass
class BatchResult:
    """What one batch of lines becomes; only plain arrays and lists so it pickles cheaply."""
    linenos: list          # (file index, line number) per line
    reasons: list          # None for a document, else a skip reason
    messages: list
    ids: list
    id_hash: np.ndarray    # [lines] uint64 hash of each id (0 for lines without one)
    nlinks: np.ndarray     # [lines] links listed by each document (0 for skipped lines)
    link_hash: np.ndarray  # uint64 hashes of the documents' links, line after line
    ntok: np.ndarray       # tokens per line (0 for skipped lines)
    nseg: np.ndarray       # units per line
    seg_lens: np.ndarray   # all units' lengths, line after line
    nchunk: np.ndarray     # chunks per line
    chunk_units: np.ndarray  # units per chunk, line after line
    tokens: np.ndarray     # all documents' tokens, line after line
    cuts: int


@dataclass(frozen=True)
class TokenizeConfig:
    """What every tokenize task of one build shares (hashable: the worker's tokenizer is keyed by it)."""
    build_id: str          # unique per build: a later build in the same process never reuses this state
    tokenizer_json: str
    segmenting: str        # "sentences" | "fixed"
    segment_len: int
    max_tokens: int        # tokens of A + B in a row (max_seq_len - 3)
    token_dtype: str


@dataclass(frozen=True)
class TokenizeJob:
    config: TokenizeConfig
    lines: list            # [(file index, line number, raw bytes)]


class BatchTokenizer:
    def __init__(self, config: TokenizeConfig):
        self.tok = load_backend(config.tokenizer_json)
        self.segmenting = config.segmenting
        self.segment_len = config.segment_len
        self.max_tokens = config.max_tokens
        self.dtype = np.dtype(config.token_dtype)
        vocab = self.tok.get_vocab()
        self.is_terminal = np.zeros(max(vocab.values()) + 1, dtype=bool)
        self.is_terminal[[vocab[t] for t in TERMINALS if t in vocab]] = True

    def __call__(self, lines: list[tuple[int, int, bytes]]) -> BatchResult:
        parsed = [parse_line(raw) for _, _, raw in lines]
        todo = [i for i, p in enumerate(parsed) if p.reason is None]
        encs = self.tok.encode_batch([parsed[i].text for i in todo], add_special_tokens=False)
        n = len(lines)
        unit_dtype = np.uint16 if self.segment_len <= 65535 else np.int32
        ntok = np.zeros(n, dtype=np.int64)
        nseg = np.zeros(n, dtype=np.int64)
        nchunk = np.zeros(n, dtype=np.int64)
        toks, seg_lens, chunk_units = [], [], []
        cuts = 0
        fixed = self.segmenting == "fixed"
        for i, enc in zip(todo, encs):
            ids = np.array(enc.ids, dtype=self.dtype)
            if len(ids) == 0:
                parsed[i].reason, parsed[i].message = NO_TOKENS, "text has no tokens"
                continue
            ends = sentence_ends(ids, parsed[i].text, enc, self.is_terminal)
            if fixed:
                lens, c = pack_segments(ends, self.segment_len)
                sizes = [1] * len(lens)
            else:
                lens, c = sentence_units(ends, self.segment_len)
                sizes = pack_chunks(lens, self.max_tokens)
            cuts += c
            ntok[i], nseg[i], nchunk[i] = len(ids), len(lens), len(sizes)
            toks.append(ids)
            seg_lens.extend(lens)
            chunk_units.extend(sizes)
        docs = [i for i in todo if parsed[i].reason is None]
        id_hash = np.zeros(n, dtype=np.uint64)
        id_hash[docs] = id_hashes(parsed[i].id for i in docs)
        nlinks = np.zeros(n, dtype=np.int64)
        nlinks[docs] = [len(parsed[i].links) for i in docs]
        return BatchResult(
            linenos=[(fi, ln) for fi, ln, _ in lines], reasons=[p.reason for p in parsed],
            messages=[p.message for p in parsed], ids=[p.id for p in parsed], id_hash=id_hash, nlinks=nlinks,
            link_hash=id_hashes(t for i in docs for t in parsed[i].links),
            ntok=ntok, nseg=nseg, seg_lens=np.asarray(seg_lens, dtype=unit_dtype), nchunk=nchunk,
            chunk_units=np.asarray(chunk_units, dtype=np.int32),
            tokens=np.concatenate(toks) if toks else np.zeros(0, self.dtype), cuts=cuts)


_TOKENIZER = WorkerState()


def run_batch(job: TokenizeJob) -> BatchResult:
    """Worker entry: one batch of lines; the BatchTokenizer of the job's build is made once per process."""
    return _TOKENIZER.get(job.config, lambda: BatchTokenizer(job.config))(job.lines)

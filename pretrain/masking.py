"""Masked-LM targets made per batch (BERT's recipe), in the sparse form the model's MLM head takes.

Per sequence: k = min(max_predictions, max(1, round(mask_prob * real tokens))) positions are chosen
among non-special tokens (never [CLS]/[SEP]/[PAD]/[MASK], never padding); of those 80% become [MASK],
10% a random token, 10% stay. With whole_word, a word (a token plus its "##" continuations) is chosen
or skipped as a unit. Vectorised over the batch with numpy: a python loop per token would cost more
than the model's step at small sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class MaskingSpec:
    vocab_size: int
    mask_id: int
    special_ids: tuple[int, ...]
    max_predictions: int
    mask_prob: float            # the rates come from the run's DataConfig (their one set of defaults)
    mask_token_prob: float
    random_token_prob: float
    continuation: np.ndarray | None = None   # bool [vocab]: token continues the previous word ("##x")


def default_max_predictions(max_seq_len: int, mask_prob: float) -> int:
    return int(np.ceil(mask_prob * max_seq_len)) + 1


def continuation_table(tokenizer_dir: str | Path, vocab_size: int) -> np.ndarray:
    """Which vocabulary entries are WordPiece continuations, from vocab.txt or tokenizer.json."""
    d = Path(tokenizer_dir)
    tokens: list[str] | None = None
    if (d / "vocab.txt").is_file():
        tokens = (d / "vocab.txt").read_text(encoding="utf-8").split("\n")
    elif (d / "tokenizer.json").is_file():
        from tokenizers import Tokenizer
        vocab = Tokenizer.from_file(str(d / "tokenizer.json")).get_vocab()
        tokens = [""] * (max(vocab.values()) + 1)
        for t, i in vocab.items():
            tokens[i] = t
    if tokens is None:
        from pretrain.config import ConfigError
        raise ConfigError(f"{d}: no vocab.txt or tokenizer.json for whole-word masking; "
                                "set data.tokenizer to the tokenizer folder the data was built with")
    table = np.zeros(vocab_size, dtype=bool)
    for i, t in enumerate(tokens[:vocab_size]):
        table[i] = t.startswith("##")
    return table


def mask_batch(input_ids: np.ndarray, seq_lens: np.ndarray, spec: MaskingSpec, rng: np.random.Generator):
    """Returns (masked input_ids, positions [B,P] int64 pad 0, labels [B,P] int64 pad -100)."""
    ids = np.asarray(input_ids).astype(np.int64)
    b, length = ids.shape
    pos = np.arange(length)[None, :]
    candidate = (pos < np.asarray(seq_lens)[:, None]) & ~np.isin(ids, spec.special_ids)
    n_real = np.asarray(seq_lens, dtype=np.int64)
    k = np.minimum(spec.max_predictions, np.maximum(1, np.rint(n_real * spec.mask_prob).astype(np.int64)))
    k = np.minimum(k, candidate.sum(1))

    if spec.continuation is None:
        score = rng.random((b, length))
        score[~candidate] = np.inf
        order = np.argsort(score, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(length), (b, length)), axis=1)
        chosen = candidate & (rank < k[:, None])
    else:
        chosen = _whole_word_choice(ids, candidate, k, spec.continuation, rng)

    labels_full = np.where(chosen, ids, -100)
    roll = rng.random((b, length))
    to_mask = chosen & (roll < spec.mask_token_prob)
    to_random = chosen & (roll >= spec.mask_token_prob) & (roll < spec.mask_token_prob + spec.random_token_prob)
    out = ids.copy()
    out[to_mask] = spec.mask_id
    out[to_random] = rng.integers(0, spec.vocab_size, size=int(to_random.sum()))

    p = spec.max_predictions
    positions = np.zeros((b, p), dtype=np.int64)
    labels = np.full((b, p), -100, dtype=np.int64)
    rows, cols = np.nonzero(chosen)
    slot = np.arange(len(rows)) - np.searchsorted(rows, rows)  # index of each chosen token within its row
    keep = slot < p
    positions[rows[keep], slot[keep]] = cols[keep]
    labels[rows[keep], slot[keep]] = labels_full[rows[keep], cols[keep]]
    return out, positions, labels


def _whole_word_choice(ids, candidate, k, continuation, rng):
    """Words in random order, each taken whole while it fits the row's budget k (BERT's WWM rule)."""
    b, length = ids.shape
    cont = continuation[np.clip(ids, 0, len(continuation) - 1)] & candidate
    prev_candidate = np.zeros_like(candidate)
    prev_candidate[:, 1:] = candidate[:, :-1]
    starts = candidate & ~(cont & prev_candidate)   # a "##" token after [SEP]/[CLS] starts its own word
    word = np.cumsum(starts, axis=1) - 1          # word index of each token (continuations join the start)
    chosen = np.zeros_like(candidate)
    for r in range(b):
        cand = np.nonzero(candidate[r])[0]
        if len(cand) == 0 or k[r] == 0:
            continue
        w = word[r, cand]
        n_words = w.max() + 1
        sizes = np.bincount(w, minlength=n_words)
        order = rng.permutation(n_words)
        # a word that would overshoot is skipped, later smaller ones may still fit (as BERT does)
        taken = np.zeros(n_words, dtype=bool)
        used = 0
        for wi, sz in zip(order, sizes[order]):
            if used + sz <= k[r]:
                taken[wi] = True
                used += sz
                if used == k[r]:
                    break
        chosen[r, cand[taken[w]]] = True
    return chosen

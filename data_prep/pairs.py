"""LinkBERT's pair sampler: every anchor gets a contiguous, random or linked partner.

Anchors are chunks of whole sentences split BERT-style at a sentence boundary
(`sample_sentence_pairs`, the default) or fixed segments (`sample_pairs`, ``--segmenting fixed``).

Everything here is vectorised numpy over all anchors, and every draw depends only on (seed, anchor
index, dupe index) plus global corpus facts (segment table, link graph), never on how the work was
split, so any --workers or MPI rank count gives the same pairs.

- Relation: the target mix (default thirds) cannot be applied to every anchor alike (a one-sentence
  chunk or the last fixed segment has nothing after it, a document without out-links has no linked
  partner). With ``mix_policy="per-anchor"`` each anchor takes the target restricted to what it can
  take; with "global" (default) anchors fall into classes by which relations they can take;
  per-class probabilities come from a tiny linear program so that the *overall* mix equals the
  target (or gets as close as the corpus allows). Within a class the relation comes
  from a Weyl (golden-ratio) sequence over the class's (anchor, dupe) draws, which hits each class's
  probabilities to within 1/N instead of binomial noise, so small corpora get the target mix too.
- Linked partner document: one of the anchor document's out-links, drawn with probability
  proportional to 1/in-degree (LinkBERT's diversity rule, §4.3) or uniformly.
- Where B starts in a random or linked document: a uniformly random sentence (segment) of it by
  default, the first with ``partner_segment="lead"``. Random is the default so that linked and random B
  segments come from the same positions: with lead-for-linked only, "B starts a document" would leak
  the label to the relation head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_prep.shards import CONTIGUOUS, LINKED, RANDOM, RELATION_NAMES

_GOLDEN = 0.6180339887498949
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # numpy has no vectorised counter-based generator keyed per element, and building one
    # Generator per anchor costs ~10 us each; splitmix64's finaliser (Steele et al. 2014) mixes a
    # 64-bit key into a uniformly distributed word with a few array operations.
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, anchor: np.ndarray, dupe: np.ndarray, stream: int) -> np.ndarray:
    """U[0,1) keyed by (seed, anchor, dupe, stream): a pure function of those four numbers."""
    with np.errstate(over="ignore"):
        k = _splitmix64(np.full(anchor.shape, np.uint64(seed) * np.uint64(4) + np.uint64(stream), np.uint64))
        k = _splitmix64(k ^ anchor.astype(np.uint64))
        k = _splitmix64(k ^ dupe.astype(np.uint64))
    return (k >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass
class Pairs:
    """Sampled pairs, compact (a PubMed build has ~40M): A = units [a_lo, a_lo + a_units), B = units
    [partner, partner + b_units); unit indices are global (sentences, or fixed segments)."""
    a_lo: np.ndarray
    a_units: np.ndarray   # uint16
    partner: np.ndarray
    b_units: np.ndarray   # uint16
    label: np.ndarray     # int8 relation
    target_mix: tuple     # the mix actually aimed at (after "no links -> 50/50")
    dropped_anchor_draws: int  # (anchor, dupe) draws with no possible relation (one-document corpus)

    @property
    def anchor(self) -> np.ndarray:
        """The anchor segment (fixed segmenting; with sentences, the chunk's first unit)."""
        return self.a_lo

    def spans(self, lo: int = 0, hi: int | None = None):
        """(a_lo, a_hi, b_lo, b_hi) as int64, for pairs [lo, hi)."""
        sl = slice(lo, hi)
        a, b = self.a_lo[sl].astype(np.int64), self.partner[sl].astype(np.int64)
        return a, a + self.a_units[sl], b, b + self.b_units[sl]


def index_dtype(n: int) -> np.dtype:
    """Smallest of uint32/int64 that holds indices below n."""
    return np.dtype(np.uint32) if n < 2**32 else np.dtype(np.int64)


def span_tokens(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Tokens in units [lo, hi) from cumulative unit lengths kept modulo 2**32 (uint32 is enough: a
    span is far shorter than 2**32 tokens even when the corpus is not)."""
    return (cum[hi].astype(np.int64) - cum[lo].astype(np.int64)) & 0xFFFFFFFF


def fit_class_probs(allowed: np.ndarray, counts: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-class relation probabilities whose count-weighted mix matches ``target``.

    When the target cannot be met (e.g. short documents: few anchors have a next segment), the
    relations that fall short are held at what they reach and the rest of the mass is shared by the
    others in proportion to their targets (so thirds become e.g. 11/44/44, not 11/52/37).
    """
    target = np.asarray(target, dtype=np.float64)
    probs = _fit_lp(allowed, counts, target)
    live = np.where(allowed.any(1), counts, 0)
    for _ in range(3):
        if live.sum() == 0:
            break
        mix = live @ probs / live.sum()
        short = mix < target - 1e-9
        if not short.any() or target[~short].sum() <= 0:
            break
        t2 = np.where(short, mix, target * (1 - mix[short].sum()) / target[~short].sum())
        probs = _fit_lp(allowed, counts, t2)
    return probs


def _fit_lp(allowed: np.ndarray, counts: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-class relation probabilities whose count-weighted mix matches ``target``, by LP.

    allowed: [K, 3] bool, counts: [K] anchors per class. A small linear program (scipy's HiGHS): first
    minimise the largest gap between the overall mix and the target (zero when the target is
    feasible; the closest mix when, say, too few anchors have a next segment), then stay as close as
    possible to giving every class the target restricted to its allowed relations, so the
    rebalancing moves only as many draws as it must. Classes with nothing allowed get all zeros.
    """
    from scipy.optimize import linprog

    K = len(counts)
    live = allowed.any(1) & (counts > 0)
    n = np.where(live, counts, 0).astype(np.float64)
    N = n.sum()
    if N == 0:
        return np.zeros(allowed.shape)
    naive = allowed * target
    tot = naive.sum(1, keepdims=True)
    fallback = allowed / np.maximum(allowed.sum(1, keepdims=True), 1)  # target is zero on all allowed
    q = np.where(tot > 0, naive / np.where(tot > 0, tot, 1), fallback) * n[:, None]
    nx = K * 3
    # variables: x (counts per class and relation), d (|x - q|), g (gap to the target per relation, in
    # counts), e (the largest gap). Weights make it lexicographic: e, then the sum of g, then d.
    nv = 2 * nx + 4
    c = np.concatenate([np.zeros(nx), np.ones(nx), np.full(3, 10.0 * K), [100.0 * K]])
    A_ub, b_ub = [], []
    for rel in range(3):
        for sign in (1, -1):
            row = np.zeros(nv)
            row[rel:nx:3] = sign
            row[2 * nx + rel] = -1
            A_ub.append(row)
            b_ub.append(sign * N * target[rel])
        row = np.zeros(nv)
        row[2 * nx + rel], row[-1] = 1, -1
        A_ub.append(row)
        b_ub.append(0.0)
    for i in range(nx):
        for sign in (1, -1):
            row = np.zeros(nv)
            row[i], row[nx + i] = sign, -1
            A_ub.append(row)
            b_ub.append(sign * q.flat[i])
    A_eq = np.zeros((K, nv))
    for k in range(K):
        A_eq[k, 3 * k:3 * k + 3] = 1
    bounds = [(0, None) if allowed.flat[i] and live[i // 3] else (0, 0) for i in range(nx)]
    bounds += [(0, None)] * (nx + 4)
    res = linprog(c, A_ub=np.array(A_ub), b_ub=np.array(b_ub), A_eq=A_eq, b_eq=n, bounds=bounds, method="highs")
    if not res.success:  # cannot happen for a well-formed problem; fall back to no rebalancing
        x = q
    else:
        x = np.clip(res.x[:nx].reshape(K, 3), 0, None)
    return np.divide(x, n[:, None], out=np.zeros_like(x), where=n[:, None] > 0)


MIX_POLICIES = ("global", "per-anchor")
# Anchors per block: the temporaries of a block (~250 bytes per draw) stay ~16 MB whatever the corpus size.
BLOCK = 1 << 16


def _relation_plan(counts, num_docs, num_links, mix, mix_policy):
    """Per-class relation probabilities (class bits: 0 next, 1 random, 2 linked) and the target."""
    target = np.asarray(mix, dtype=np.float64)
    if num_links == 0 and target[LINKED] > 0:
        target[LINKED] = 0.0  # no links at all: BERT's contiguous/random setting (50/50 from thirds)
    target = target / target.sum()
    class_allowed = ((np.arange(8)[:, None] >> np.arange(3)) & 1).astype(bool)
    if num_docs < 2:
        class_allowed[:, RANDOM] = False
    if mix_policy == "per-anchor":
        # each anchor takes the target restricted to what it can take (thirds: uniform over them)
        naive = class_allowed * target
        tot = naive.sum(1, keepdims=True)
        return np.divide(naive, tot, out=np.zeros_like(naive), where=tot > 0), target
    return fit_class_probs(class_allowed, counts, target), target


def _classes(has_next: np.ndarray, has_links: np.ndarray, num_docs: int) -> np.ndarray:
    return (has_next.astype(np.int8) + np.int8(2 if num_docs >= 2 else 0) + has_links.astype(np.int8) * 4)


def _draws(cls, probs, dupe_factor, seed, block):
    """Blocks of (anchor, dupe, label) draws, anchor-major; dropped counts draws with no relation."""
    cum = np.cumsum(probs, axis=1)
    live = probs.sum(1) > 0
    start = uniforms(seed, np.arange(8), np.zeros(8, np.int64), stream=0)
    E = int(dupe_factor)
    carry = np.zeros(8, dtype=np.int64)  # draws of each class in earlier blocks
    n = len(cls)
    # Blocks of anchors bound the temporaries (a few arrays of block x E) on corpora with 100M+ draws.
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        anchor = np.repeat(np.arange(lo, hi, dtype=np.int64), E)
        dupe = np.tile(np.arange(E, dtype=np.int64), hi - lo)
        acls = cls[anchor]
        # Rank of each (anchor, dupe) draw within its class, in anchor-major order: a global fact.
        order_in_class = np.empty(len(anchor), dtype=np.int64)
        for k in range(8):
            m = acls == k
            nk = int(m.sum())
            order_in_class[m] = carry[k] + np.arange(nk, dtype=np.int64)
            carry[k] += nk
        u_rel = np.mod(start[acls] + order_in_class * _GOLDEN, 1.0)
        del order_in_class
        label = ((u_rel >= cum[acls, 0]).astype(np.int8) + (u_rel >= cum[acls, 1]).astype(np.int8))
        keep = live[acls]
        yield anchor[keep], dupe[keep], label[keep], int((~keep).sum())


def _weighted_pick(lo: np.ndarray, hi: np.ndarray, u: np.ndarray, weight) -> np.ndarray:
    """For each draw, a position in [lo, hi) chosen with probability proportional to weight(position).

    Walks the ranges in lock step (as many steps as the longest range) instead of holding a
    cumulative weight per link: the link arrays are the largest ones a PubMed build keeps.
    """
    total = np.zeros(len(lo))
    width = hi - lo
    for j in range(int(width.max()) if len(width) else 0):
        m = np.flatnonzero(width > j)
        total[m] += weight(lo[m] + j)
    target = u * total
    pick = hi - 1
    acc = np.zeros(len(lo))
    undecided = np.ones(len(lo), bool)
    for j in range(int(width.max()) if len(width) else 0):
        m = np.flatnonzero(undecided & (width > j))
        acc[m] += weight(lo[m] + j)
        hit = m[acc[m] > target[m]]
        pick[hit] = lo[hit] + j
        undecided[hit] = False
    return pick


def _partner_docs(doc, anchor, dupe, label, link_indptr, link_indices, indegree, linked_sampling, num_docs,
                  seed):
    """Partner document of each random/linked draw (-1 for contiguous)."""
    partner_doc = np.full(len(anchor), -1, dtype=np.int64)
    u_doc = uniforms(seed, anchor, dupe, stream=1)
    m = label == RANDOM
    j = np.floor(u_doc[m] * (num_docs - 1)).astype(np.int64)
    partner_doc[m] = j + (j >= doc[m])
    m = label == LINKED
    if m.any():
        lo, hi = link_indptr[doc[m]].astype(np.int64), link_indptr[doc[m] + 1].astype(np.int64)
        if linked_sampling == "uniform":
            pick = lo + np.minimum(np.floor(u_doc[m] * (hi - lo)).astype(np.int64), hi - lo - 1)
        else:  # LinkBERT: proportional to 1 / in-degree of the target
            pick = _weighted_pick(lo, hi, u_doc[m], lambda k: 1.0 / indegree[link_indices[k]])
        partner_doc[m] = link_indices[pick]
    return partner_doc


class _Out:
    """Pairs written into preallocated compact arrays block by block (no concatenation at the end)."""

    def __init__(self, capacity: int, num_units: int):
        dt = index_dtype(num_units + 1)
        self.cols = [np.empty(capacity, d) for d in (dt, np.uint16, dt, np.uint16, np.int8)]
        self.n = 0

    def add(self, a_lo, a_hi, b_lo, b_hi, label) -> None:
        sl = slice(self.n, self.n + len(label))
        for col, v in zip(self.cols, (a_lo, a_hi - a_lo, b_lo, b_hi - b_lo, label)):
            col[sl] = v
        self.n += len(label)

    def pairs(self, target, dropped: int) -> Pairs:
        cols = [c if len(c) == self.n else c[:self.n].copy() for c in self.cols]
        self.cols = []
        return Pairs(*cols, target_mix=tuple(float(x) for x in target), dropped_anchor_draws=dropped)


def sample_pairs(doc_seg_indptr: np.ndarray, link_indptr: np.ndarray, link_indices: np.ndarray,
                 indegree: np.ndarray, mix=(1 / 3, 1 / 3, 1 / 3), dupe_factor: int = 1, seed: int = 0,
                 linked_sampling: str = "inverse-indegree", partner_segment: str = "random",
                 block_segments: int = BLOCK, mix_policy: str = "global") -> Pairs:
    """Fixed segments: every segment is an anchor; contiguous B is the next segment of the document."""
    num_docs = len(doc_seg_indptr) - 1
    num_segs = int(doc_seg_indptr[-1])
    seg_doc = np.repeat(np.arange(num_docs, dtype=np.int64), np.diff(doc_seg_indptr))
    has_next = np.arange(1, num_segs + 1, dtype=np.int64) < doc_seg_indptr[seg_doc + 1]
    cls = _classes(has_next, np.diff(link_indptr)[seg_doc] > 0, num_docs)
    del has_next
    probs, target = _relation_plan(np.bincount(cls, minlength=8).astype(np.float64), num_docs, len(link_indices),
                                   mix, mix_policy)
    out, dropped = _Out(num_segs * int(dupe_factor), num_segs), 0
    for anchor, dupe, label, d in _draws(cls, probs, dupe_factor, seed, block_segments):
        dropped += d
        doc = seg_doc[anchor]
        pd = _partner_docs(doc, anchor, dupe, label, link_indptr, link_indices, indegree, linked_sampling,
                           num_docs, seed)
        partner = np.empty(len(anchor), dtype=np.int64)
        c = label == CONTIGUOUS
        partner[c] = anchor[c] + 1
        o = ~c
        first = doc_seg_indptr[pd[o]]
        if partner_segment == "lead":
            partner[o] = first
        else:
            nseg = doc_seg_indptr[pd[o] + 1] - first
            u_seg = uniforms(seed, anchor[o], dupe[o], stream=2)
            partner[o] = first + np.minimum(np.floor(u_seg * nseg).astype(np.int64), nseg - 1)
        out.add(anchor, anchor + 1, partner, partner + 1, label)
    return out.pairs(target, dropped)


def _last_within(cum, base: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Largest e in [lo, hi] with span_tokens(cum, base, e) <= budget (true at lo; monotone in e)."""
    lo, hi = lo.copy(), hi.copy()
    while True:
        act = np.flatnonzero(lo < hi)
        if not len(act):
            return lo
        mid = (lo[act] + hi[act] + 1) // 2
        ok = span_tokens(cum, base[act], mid) <= budget[act]
        lo[act[ok]] = mid[ok]
        hi[act[~ok]] = mid[~ok] - 1


def _first_within(cum, end: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Smallest b in [lo, hi] with span_tokens(cum, b, end) <= budget (true at hi; monotone in b)."""
    lo, hi = lo.copy(), hi.copy()
    while True:
        act = np.flatnonzero(lo < hi)
        if not len(act):
            return hi
        mid = (lo[act] + hi[act]) // 2
        ok = span_tokens(cum, mid, end[act]) <= budget[act]
        hi[act[ok]] = mid[ok]
        lo[act[~ok]] = mid[~ok] + 1


def sample_sentence_pairs(chunk_indptr: np.ndarray, doc_chunk_indptr: np.ndarray, unit_cum: np.ndarray,
                          doc_unit_indptr: np.ndarray, link_indptr: np.ndarray, link_indices: np.ndarray,
                          indegree: np.ndarray, max_tokens: int, mix=(1 / 3, 1 / 3, 1 / 3), dupe_factor: int = 1,
                          seed: int = 0, linked_sampling: str = "inverse-indegree", partner_segment: str = "random",
                          block_chunks: int = BLOCK, mix_policy: str = "global") -> Pairs:
    """BERT-style pairs: every chunk (a run of whole sentences of <= max_tokens) is an anchor.

    chunk_indptr [C+1]: the units of chunk c are [chunk_indptr[c], chunk_indptr[c+1]) (global unit
    indices, chunks of a document back to back); doc_chunk_indptr [D+1]: the chunks of document d;
    unit_cum [U+1]: cumulative unit lengths in tokens (may be kept modulo 2**32, see span_tokens).
    - contiguous: the chunk is split after k of its n units (k uniform in 1..n-1): A the first k, B the rest;
    - random/linked: A the chunk's first k units (k as above; 1 for a one-unit chunk), B the run of
      whole units of the partner document that starts at a uniformly drawn unit (its first with
      ``partner_segment="lead"``) and fills what A leaves of max_tokens; when the partner's end comes
      first, the run reaches back to earlier units instead. If A leaves no room for the drawn unit, A
      is shortened (never below one unit; units are at most max_tokens // 2 tokens).
    """
    num_docs = len(doc_unit_indptr) - 1
    num_chunks = len(chunk_indptr) - 1
    cls = np.empty(num_chunks, np.int8)
    outdeg_pos = np.diff(link_indptr) > 0
    for lo in range(0, num_chunks, block_chunks):  # blocks: no int64 per chunk at once
        c = np.arange(lo, min(num_chunks, lo + block_chunks), dtype=np.int64)
        doc = np.searchsorted(doc_chunk_indptr, c, side="right") - 1
        cls[c] = _classes(chunk_indptr[c + 1] - chunk_indptr[c] >= 2, outdeg_pos[doc], num_docs)
    del outdeg_pos
    probs, target = _relation_plan(np.bincount(cls, minlength=8).astype(np.float64), num_docs, len(link_indices),
                                   mix, mix_policy)
    out, dropped = _Out(num_chunks * int(dupe_factor), len(unit_cum) - 1), 0
    for anchor, dupe, label, d in _draws(cls, probs, dupe_factor, seed, block_chunks):
        dropped += d
        doc = np.searchsorted(doc_chunk_indptr, anchor, side="right") - 1
        lo = chunk_indptr[anchor].astype(np.int64)
        n = chunk_indptr[anchor + 1].astype(np.int64) - lo
        u_split = uniforms(seed, anchor, dupe, stream=3)
        a_hi = lo + 1 + np.minimum(np.floor(u_split * np.maximum(n - 1, 1)).astype(np.int64), np.maximum(n - 2, 0))
        b_lo = a_hi.copy()
        b_hi = lo + n
        o = np.flatnonzero(label != CONTIGUOUS)
        if len(o):
            pd = _partner_docs(doc[o], anchor[o], dupe[o], label[o], link_indptr, link_indices, indegree,
                               linked_sampling, num_docs, seed)
            first, last = doc_unit_indptr[pd].astype(np.int64), doc_unit_indptr[pd + 1].astype(np.int64)
            if partner_segment == "lead":
                s = first
            else:
                u_seg = uniforms(seed, anchor[o], dupe[o], stream=2)
                s = first + np.minimum(np.floor(u_seg * (last - first)).astype(np.int64), last - first - 1)
            lo_o = lo[o]
            room_a = max_tokens - span_tokens(unit_cum, s, s + 1)  # A may take at most this
            a_o = _last_within(unit_cum, lo_o, lo_o + 1, a_hi[o], room_a)
            budget = max_tokens - span_tokens(unit_cum, lo_o, a_o)
            e = _last_within(unit_cum, s, s + 1, np.minimum(last, s + budget), budget)
            b = _first_within(unit_cum, e, np.maximum(first, e - budget), s, budget)
            a_hi[o], b_lo[o], b_hi[o] = a_o, b, e
        out.add(lo, a_hi, b_lo, b_hi, label)
    return out.pairs(target, dropped)


def mix_by_anchor_kind(label: np.ndarray, anchor_has_links: np.ndarray) -> dict:
    """Relation mix separately for anchors whose document has out-links and for those without."""
    counts = np.bincount(anchor_has_links.astype(np.int64) * 3 + label, minlength=6).reshape(2, 3)
    out = {}
    for name, row in (("with_links", counts[1]), ("without_links", counts[0])):
        n = max(int(row.sum()), 1)
        out[name] = {"total": int(row.sum()), "mix": {k: float(row[i] / n) for i, k in enumerate(RELATION_NAMES)}}
    return out


def mix_of(labels: np.ndarray) -> dict:
    n = max(len(labels), 1)
    return {name: float((labels == i).sum() / n) for i, name in enumerate(RELATION_NAMES)}

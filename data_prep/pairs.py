"""LinkBERT's pair sampler: every anchor segment gets a contiguous, random or linked partner.

Everything here is vectorised numpy over all anchors, and every draw depends only on (seed, anchor
index, dupe index) plus global corpus facts (segment table, link graph), never on how the work was
split, so any --workers or MPI rank count gives the same pairs.

- Relation: the target mix (default thirds) cannot be applied to every anchor alike (the last segment
  of a document has no next segment, a document without out-links has no linked partner). Anchors
  fall into classes by which relations they can take; per-class probabilities come from a tiny linear
  program so that the *overall* mix equals the target (or gets as close as the corpus allows). Within a class the relation comes
  from a Weyl (golden-ratio) sequence over the class's (anchor, dupe) draws, which hits each class's
  probabilities to within 1/N instead of binomial noise, so small corpora get the target mix too.
- Linked partner document: one of the anchor document's out-links, drawn with probability
  proportional to 1/in-degree (LinkBERT's diversity rule, §4.3) or uniformly.
- Partner segment of a random or linked document: a uniformly random segment of it by default, the
  lead segment with ``partner_segment="lead"``. Random is the default so that linked and random B
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
    anchor: np.ndarray    # anchor index: global chunk (sentences) or segment (fixed) index
    partner: np.ndarray   # global unit index where B starts
    label: np.ndarray     # int8 relation
    target_mix: tuple     # the mix actually aimed at (after "no links -> 50/50")
    dropped_anchor_draws: int  # (anchor, dupe) draws with no possible relation (one-document corpus)
    a_lo: np.ndarray | None = None  # global unit span [a_lo, a_hi) of A and [partner, b_hi) of B
    a_hi: np.ndarray | None = None  # (sentences segmenting; with fixed segments A and B are one unit)
    b_hi: np.ndarray | None = None

    def spans(self):
        """(a_lo, a_hi, b_lo, b_hi) global unit indices, either segmenting."""
        if self.a_lo is None:
            return self.anchor, self.anchor + 1, self.partner, self.partner + 1
        return self.a_lo, self.a_hi, self.partner, self.b_hi


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


def _relation_plan(anchor_doc, has_next, num_docs, link_indptr, link_indices, mix, mix_policy):
    """Anchor classes (bit 0 next, bit 1 random, bit 2 linked), per-class probabilities, target."""
    target = np.asarray(mix, dtype=np.float64)
    if len(link_indices) == 0 and target[LINKED] > 0:
        target[LINKED] = 0.0  # no links at all: BERT's contiguous/random setting (50/50 from thirds)
    target = target / target.sum()
    outdeg = np.diff(link_indptr)
    cls = (has_next.astype(np.int8) + np.int8(2 if num_docs >= 2 else 0)
           + (outdeg[anchor_doc] > 0).astype(np.int8) * 4)
    counts = np.bincount(cls, minlength=8).astype(np.float64)
    class_allowed = ((np.arange(8)[:, None] >> np.arange(3)) & 1).astype(bool)
    if mix_policy == "per-anchor":
        # each anchor takes the target restricted to what it can take (thirds: uniform over them)
        naive = class_allowed * target
        tot = naive.sum(1, keepdims=True)
        probs = np.divide(naive, tot, out=np.zeros_like(naive), where=tot > 0)
    else:
        probs = fit_class_probs(class_allowed, counts, target)
    return cls, probs, target


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


def _partner_docs(doc, anchor, dupe, label, link_indptr, link_indices, weights, num_docs, seed):
    """Partner document of each random/linked draw (-1 for contiguous)."""
    partner_doc = np.full(len(anchor), -1, dtype=np.int64)
    u_doc = uniforms(seed, anchor, dupe, stream=1)
    m = label == RANDOM
    j = np.floor(u_doc[m] * (num_docs - 1)).astype(np.int64)
    partner_doc[m] = j + (j >= doc[m])
    m = label == LINKED
    if m.any():
        # weights: cumulative (1/in-degree or 1) over the CSR of out-links; a row's slice is its anchor's
        lo_idx, hi_idx = link_indptr[doc[m]], link_indptr[doc[m] + 1]
        lo = np.where(lo_idx > 0, weights[np.maximum(lo_idx - 1, 0)], 0.0)
        hi = weights[hi_idx - 1]
        pick = np.searchsorted(weights, lo + u_doc[m] * (hi - lo), side="right")
        partner_doc[m] = link_indices[np.clip(pick, lo_idx, hi_idx - 1)]
    return partner_doc


def _link_weights(link_indices, indegree, linked_sampling):
    if not len(link_indices):
        return None
    w = np.ones(len(link_indices)) if linked_sampling == "uniform" else 1.0 / indegree[link_indices]
    return np.cumsum(w)


def _finish(parts, target, dropped, fields) -> Pairs:
    if parts:
        cols = [np.concatenate([p[i] for p in parts]) for i in range(len(fields))]
    else:
        cols = [np.zeros(0, np.int8 if f == "label" else np.int64) for f in fields]
    return Pairs(target_mix=tuple(float(x) for x in target), dropped_anchor_draws=dropped, **dict(zip(fields, cols)))


def sample_pairs(doc_seg_indptr: np.ndarray, link_indptr: np.ndarray, link_indices: np.ndarray,
                 indegree: np.ndarray, mix=(1 / 3, 1 / 3, 1 / 3), dupe_factor: int = 1, seed: int = 0,
                 linked_sampling: str = "inverse-indegree", partner_segment: str = "random",
                 block_segments: int = 1 << 22, mix_policy: str = "global") -> Pairs:
    """Fixed segments: every segment is an anchor; contiguous B is the next segment of the document."""
    num_docs = len(doc_seg_indptr) - 1
    num_segs = int(doc_seg_indptr[-1])
    seg_doc = np.repeat(np.arange(num_docs, dtype=np.int64), np.diff(doc_seg_indptr))
    has_next = np.arange(1, num_segs + 1, dtype=np.int64) < doc_seg_indptr[seg_doc + 1]
    cls, probs, target = _relation_plan(seg_doc, has_next, num_docs, link_indptr, link_indices, mix, mix_policy)
    del has_next
    weights = _link_weights(link_indices, indegree, linked_sampling)
    parts, dropped = [], 0
    for anchor, dupe, label, d in _draws(cls, probs, dupe_factor, seed, block_segments):
        dropped += d
        doc = seg_doc[anchor]
        pd = _partner_docs(doc, anchor, dupe, label, link_indptr, link_indices, weights, num_docs, seed)
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
        parts.append((anchor, partner, label))
    return _finish(parts, target, dropped, ("anchor", "partner", "label"))


def sample_sentence_pairs(chunk_indptr: np.ndarray, chunk_doc: np.ndarray, unit_cum: np.ndarray,
                          doc_unit_indptr: np.ndarray, link_indptr: np.ndarray, link_indices: np.ndarray,
                          indegree: np.ndarray, max_tokens: int, mix=(1 / 3, 1 / 3, 1 / 3), dupe_factor: int = 1,
                          seed: int = 0, linked_sampling: str = "inverse-indegree", partner_segment: str = "random",
                          block_chunks: int = 1 << 22, mix_policy: str = "global") -> Pairs:
    """BERT-style pairs: every chunk (a run of whole sentences of <= max_tokens) is an anchor.

    chunk_indptr [C+1]: the units of chunk c are [chunk_indptr[c], chunk_indptr[c+1]) (global unit
    indices, chunks of a document back to back); unit_cum [U+1]: cumulative unit lengths in tokens.
    - contiguous: the chunk is split after k of its n units (k uniform in 1..n-1): A the first k, B the rest;
    - random/linked: A the chunk's first k units (k as above; 1 for a one-unit chunk), B the run of
      whole units of the partner document that starts at a uniformly drawn unit (its first with
      ``partner_segment="lead"``) and fills what A leaves of max_tokens; when the partner's end comes
      first, the run reaches back to earlier units instead. If A leaves no room for the drawn unit, A
      is shortened (never below one unit; units are at most max_tokens // 2 tokens).
    """
    num_docs = len(doc_unit_indptr) - 1
    n_units = np.diff(chunk_indptr)
    cls, probs, target = _relation_plan(chunk_doc, n_units >= 2, num_docs, link_indptr, link_indices, mix,
                                        mix_policy)
    weights = _link_weights(link_indices, indegree, linked_sampling)
    parts, dropped = [], 0
    for anchor, dupe, label, d in _draws(cls, probs, dupe_factor, seed, block_chunks):
        dropped += d
        doc = chunk_doc[anchor]
        lo, n = chunk_indptr[anchor], n_units[anchor]
        u_split = uniforms(seed, anchor, dupe, stream=3)
        a_hi = lo + 1 + np.minimum(np.floor(u_split * np.maximum(n - 1, 1)).astype(np.int64), np.maximum(n - 2, 0))
        b_lo = a_hi.copy()
        b_hi = lo + n
        o = label != CONTIGUOUS
        if o.any():
            pd = _partner_docs(doc[o], anchor[o], dupe[o], label[o], link_indptr, link_indices, weights,
                               num_docs, seed)
            first, last = doc_unit_indptr[pd], doc_unit_indptr[pd + 1]
            if partner_segment == "lead":
                s = first
            else:
                u_seg = uniforms(seed, anchor[o], dupe[o], stream=2)
                s = first + np.minimum(np.floor(u_seg * (last - first)).astype(np.int64), last - first - 1)
            lo_o = lo[o]
            room_a = max_tokens - (unit_cum[s + 1] - unit_cum[s])  # A may take at most this
            a_cap = np.searchsorted(unit_cum, unit_cum[lo_o] + room_a, side="right") - 1
            a_o = np.maximum(np.minimum(a_hi[o], a_cap), lo_o + 1)
            budget = max_tokens - (unit_cum[a_o] - unit_cum[lo_o])
            e = np.minimum(np.searchsorted(unit_cum, unit_cum[s] + budget, side="right") - 1, last)
            e = np.maximum(e, s + 1)
            b = np.maximum(np.searchsorted(unit_cum, unit_cum[e] - budget, side="left"), first)
            a_hi[o], b_lo[o], b_hi[o] = a_o, np.minimum(b, s), e
        parts.append((anchor, lo, a_hi, b_lo, b_hi, label))
    return _finish(parts, target, dropped, ("anchor", "a_lo", "a_hi", "partner", "b_hi", "label"))


def mix_by_anchor_kind(label: np.ndarray, anchor_has_links: np.ndarray) -> dict:
    """Relation mix separately for anchors whose document has out-links and for those without."""
    out = {}
    for name, m in (("with_links", anchor_has_links), ("without_links", ~anchor_has_links)):
        out[name] = {"total": int(m.sum()), "mix": mix_of(label[m])}
    return out


def mix_of(labels: np.ndarray) -> dict:
    n = max(len(labels), 1)
    return {name: float((labels == i).sum() / n) for i, name in enumerate(RELATION_NAMES)}

"""The pair sampler on graphs built for the purpose: 1/in-degree rule, rebalancing, determinism."""
from __future__ import annotations

import numpy as np
from scipy.stats import chisquare

from data_prep.pairs import fit_class_probs, sample_pairs, uniforms


def _graph(num_docs, edges):
    """CSR of a directed edge list, out-links in the given order; in-degrees."""
    indptr = np.zeros(num_docs + 1, dtype=np.int64)
    rows = [[] for _ in range(num_docs)]
    for s, t in edges:
        rows[s].append(t)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.array([t for r in rows for t in r], dtype=np.int64)
    return indptr, indices, np.bincount(indices, minlength=num_docs)


def _hub_graph():
    # doc 0 links to docs 1..4, whose in-degrees are 1, 2, 4, 8 (extra in-links from docs 5..11)
    edges = [(0, 1), (0, 2), (0, 3), (0, 4)]
    for t, k in {2: 1, 3: 3, 4: 7}.items():
        edges += [(5 + j, t) for j in range(k)]
    num_docs = 12
    indptr, indices, indeg = _graph(num_docs, edges)
    assert list(indeg[1:5]) == [1, 2, 4, 8]
    doc_seg_indptr = np.arange(num_docs + 1, dtype=np.int64)  # one segment per document
    return doc_seg_indptr, indptr, indices, indeg


def test_linked_partner_probability_is_inverse_indegree():
    segs, indptr, indices, indeg = _hub_graph()
    p = sample_pairs(segs, indptr, indices, indeg, mix=(0, 0, 1), dupe_factor=8000, seed=3)
    chosen = p.partner[(p.anchor == 0) & (p.label == 2)]
    counts = np.bincount(chosen, minlength=5)[1:5]
    assert counts.sum() == 8000
    expected = np.array([1, 1 / 2, 1 / 4, 1 / 8])
    expected = expected / expected.sum() * counts.sum()
    assert chisquare(counts, expected).pvalue > 1e-3, counts
    # and the alternative really differs: uniform over the 4 out-links
    u = sample_pairs(segs, indptr, indices, indeg, mix=(0, 0, 1), dupe_factor=8000, seed=3,
                     linked_sampling="uniform")
    uc = np.bincount(u.partner[(u.anchor == 0) & (u.label == 2)], minlength=5)[1:5]
    assert chisquare(uc, np.full(4, 2000)).pvalue > 1e-3, uc
    assert chisquare(counts, np.full(4, 2000)).pvalue < 1e-9


def test_every_linked_partner_is_an_out_link_and_random_is_another_doc():
    rng = np.random.default_rng(0)
    num_docs = 60
    edges = sorted({(int(s), int(t)) for s, t in rng.integers(0, num_docs, (200, 2)) if s != t})
    indptr, indices, indeg = _graph(num_docs, edges)
    nseg = rng.integers(1, 6, num_docs)
    segs = np.concatenate([[0], np.cumsum(nseg)]).astype(np.int64)
    p = sample_pairs(segs, indptr, indices, indeg, dupe_factor=5, seed=1)
    seg_doc = np.repeat(np.arange(num_docs), nseg)
    ad, pd = seg_doc[p.anchor], seg_doc[p.partner]
    out = {(s, t) for s, t in edges}
    assert all((a, b) in out for a, b in zip(ad[p.label == 2], pd[p.label == 2]))
    assert (ad[p.label == 1] != pd[p.label == 1]).all()
    c = p.label == 0
    assert (p.partner[c] == p.anchor[c] + 1).all() and (ad[c] == pd[c]).all()
    mix = np.bincount(p.label, minlength=3) / len(p.label)
    assert np.abs(mix - 1 / 3).max() < 0.02, mix
    # random partners cover many documents and their segments (not only the lead)
    assert len(set(pd[p.label == 1])) > 40 and (p.partner - segs[pd])[p.label == 1].max() > 0


def test_pairs_are_a_function_of_seed_anchor_dupe():
    segs, indptr, indices, indeg = _hub_graph()
    a = sample_pairs(segs, indptr, indices, indeg, dupe_factor=3, seed=7)
    b = sample_pairs(segs, indptr, indices, indeg, dupe_factor=3, seed=7)
    c = sample_pairs(segs, indptr, indices, indeg, dupe_factor=3, seed=8)
    assert all(np.array_equal(x, y) for x, y in ((a.anchor, b.anchor), (a.partner, b.partner), (a.label, b.label)))
    assert not np.array_equal(a.partner, c.partner)
    u1 = uniforms(5, np.arange(1000), np.zeros(1000, np.int64), 1)
    u2 = uniforms(5, np.arange(1000)[::-1], np.zeros(1000, np.int64), 1)[::-1]
    assert np.array_equal(u1, u2)  # keyed per element, not a stream
    assert 0 <= u1.min() and u1.max() < 1 and abs(u1.mean() - 0.5) < 0.05


def test_fit_class_probs_matches_target_when_feasible():
    allowed = ((np.arange(8)[:, None] >> np.arange(3)) & 1).astype(bool)
    counts = np.array([0, 0, 100, 300, 0, 0, 250, 350], dtype=float)  # some anchors lack next or links
    probs = fit_class_probs(allowed, counts, np.array([0.3, 0.4, 0.3]))
    assert np.allclose(probs.sum(1)[counts > 0], 1)
    assert not probs[~allowed].any()
    mix = counts @ probs / counts.sum()
    assert np.allclose(mix, [0.3, 0.4, 0.3], atol=1e-9)


def test_one_document_no_random_partner_and_counted():
    segs = np.array([0, 3], dtype=np.int64)
    indptr, indices, indeg = _graph(1, [])
    p = sample_pairs(segs, indptr, indices, indeg)
    assert (p.label == 0).all() and len(p.label) == 2 and p.dropped_anchor_draws == 1


def test_infeasible_target_gets_closest_mix_and_drops_nothing():
    # like short documents: few anchors have a next segment (11%), every anchor has random and links
    allowed = ((np.arange(8)[:, None] >> np.arange(3)) & 1).astype(bool)
    counts = np.zeros(8)
    counts[7], counts[6] = 110, 890
    probs = fit_class_probs(allowed, counts, np.array([1 / 3, 1 / 3, 1 / 3]))
    mix = counts @ probs / counts.sum()
    assert np.allclose(probs.sum(1)[counts > 0], 1)
    assert np.isclose(mix[0], 0.11) and np.isclose(mix[1], mix[2]), mix


def test_blocks_do_not_change_the_pairs():
    rng = np.random.default_rng(2)
    num_docs = 40
    edges = sorted({(int(s), int(t)) for s, t in rng.integers(0, num_docs, (120, 2)) if s != t})
    indptr, indices, indeg = _graph(num_docs, edges)
    segs = np.concatenate([[0], np.cumsum(rng.integers(1, 5, num_docs))]).astype(np.int64)
    a = sample_pairs(segs, indptr, indices, indeg, dupe_factor=3, seed=4)
    b = sample_pairs(segs, indptr, indices, indeg, dupe_factor=3, seed=4, block_segments=7)
    for x, y in ((a.anchor, b.anchor), (a.partner, b.partner), (a.label, b.label)):
        assert np.array_equal(x, y)


def _sentence_corpus(seed=5, num_docs=50, max_tokens=61):
    """Random documents of 1-12 sentences of 3-30 tokens, packed greedily into chunks of <= max_tokens."""
    from data_prep.segments import pack_chunks

    rng = np.random.default_rng(seed)
    units, doc_units, chunk_sizes, chunk_doc = [], [0], [], []
    for d in range(num_docs):
        lens = rng.integers(3, 31, rng.integers(1, 13)).tolist()
        sizes = pack_chunks(lens, max_tokens)
        units += lens
        doc_units.append(len(units))
        chunk_sizes += sizes
        chunk_doc += [d] * len(sizes)
    # cumulative lengths modulo 2**32 from a large offset, as build keeps them: sums must wrap correctly
    unit_cum = ((2**32 - 100 + np.concatenate([[0], np.cumsum(units)])) % 2**32).astype(np.uint32)
    chunk_indptr = np.concatenate([[0], np.cumsum(chunk_sizes)]).astype(np.int64)
    doc_chunks = np.concatenate([[0], np.cumsum(np.bincount(chunk_doc, minlength=num_docs))]).astype(np.int64)
    edges = sorted({(int(s), int(t)) for s, t in rng.integers(0, num_docs, (150, 2)) if s != t})
    return chunk_indptr, doc_chunks, unit_cum, np.array(doc_units, np.int64), edges


def test_sentence_pairs_split_chunks_and_fill():
    from data_prep.pairs import sample_sentence_pairs

    max_tokens = 61
    chunk_indptr, doc_chunks, unit_cum, doc_units, edges = _sentence_corpus(max_tokens=max_tokens)
    chunk_doc = np.repeat(np.arange(len(doc_chunks) - 1), np.diff(doc_chunks))
    indptr, indices, indeg = _graph(len(doc_units) - 1, edges)
    p = sample_sentence_pairs(chunk_indptr, doc_chunks, unit_cum, doc_units, indptr, indices, indeg, max_tokens,
                              dupe_factor=4, seed=2)
    a_lo, a_hi, b_lo, b_hi = p.spans()
    anchor = np.searchsorted(chunk_indptr, a_lo)
    assert len(p.label) == 4 * len(chunk_doc) and (np.bincount(anchor) == 4).all()
    unit_doc = np.searchsorted(doc_units, np.arange(unit_cum.size - 1), side="right") - 1
    ntok = lambda lo, hi: (unit_cum[hi].astype(np.int64) - unit_cum[lo]) % 2**32  # noqa: E731
    assert (a_lo == chunk_indptr[anchor]).all() and (a_hi > a_lo).all() and (b_hi > b_lo).all()
    assert (a_hi <= chunk_indptr[anchor + 1]).all()
    assert (ntok(a_lo, a_hi) + ntok(b_lo, b_hi) <= max_tokens).all()
    assert (unit_doc[b_lo] == unit_doc[b_hi - 1]).all()  # B never crosses documents
    c = p.label == 0
    assert (b_lo[c] == a_hi[c]).all() and (b_hi[c] == chunk_indptr[anchor[c] + 1]).all()
    pd = unit_doc[b_lo]
    assert (pd[p.label == 1] != chunk_doc[anchor[p.label == 1]]).all()
    out = set(edges)
    assert all((a, b) in out for a, b in zip(chunk_doc[anchor[p.label == 2]], pd[p.label == 2]))
    # the split point varies: many A lengths; B fills what A leaves unless its document is too short
    assert len(np.unique(a_hi[c] - a_lo[c])) >= 3 and len(np.unique(ntok(a_lo, a_hi)[c])) > 20
    o = ~c
    room = max_tokens - ntok(a_lo, a_hi)[o]
    doc_len = unit_cum[doc_units[pd[o] + 1]] - unit_cum[doc_units[pd[o]]]
    short = ntok(b_lo, b_hi)[o] < np.minimum(room, doc_len) - 30  # 30 = the longest unit
    assert not short.any()
    mix = np.bincount(p.label, minlength=3) / len(p.label)
    assert np.abs(mix - 1 / 3).max() < 0.02, mix
    q = sample_sentence_pairs(chunk_indptr, doc_chunks, unit_cum, doc_units, indptr, indices, indeg, max_tokens,
                              dupe_factor=4, seed=2, block_chunks=7)
    for x, y in zip(p.spans() + (p.label,), q.spans() + (q.label,)):
        assert np.array_equal(x, y)


def test_per_anchor_policy_is_uniform_over_what_an_anchor_can_take():
    from data_prep.pairs import mix_by_anchor_kind, sample_sentence_pairs

    chunk_indptr, doc_chunks, unit_cum, doc_units, edges = _sentence_corpus(seed=9, num_docs=300)
    chunk_doc = np.repeat(np.arange(len(doc_chunks) - 1), np.diff(doc_chunks))
    edges = [(s, t) for s, t in edges if s % 2]  # only odd documents have out-links
    indptr, indices, indeg = _graph(len(doc_units) - 1, edges)
    multi = np.diff(chunk_indptr) >= 2
    args = (chunk_indptr, doc_chunks, unit_cum, doc_units, indptr, indices, indeg, 61)
    per = sample_sentence_pairs(*args, dupe_factor=6, seed=1, mix_policy="per-anchor")
    glob = sample_sentence_pairs(*args, dupe_factor=6, seed=1)
    per_anchor = np.searchsorted(chunk_indptr, per.a_lo)
    has_links = np.diff(indptr)[chunk_doc[per_anchor]] > 0
    sel = multi[per_anchor]
    m = np.bincount(per.label[sel & has_links], minlength=3) / (sel & has_links).sum()
    assert np.abs(m - 1 / 3).max() < 0.02, m       # next, random and linked possible: thirds
    m = np.bincount(per.label[sel & ~has_links], minlength=3) / (sel & ~has_links).sum()
    assert np.abs(m - [0.5, 0.5, 0]).max() < 0.02, m  # no out-links: BERT's 50/50
    # global gets closer to the overall target, by skewing the kinds apart
    g = np.bincount(glob.label, minlength=3) / len(glob.label)
    pa = np.bincount(per.label, minlength=3) / len(per.label)
    assert np.abs(g - 1 / 3).max() < np.abs(pa - 1 / 3).max() - 0.03, (g, pa)
    kinds = mix_by_anchor_kind(glob.label, np.diff(indptr)[chunk_doc[np.searchsorted(chunk_indptr, glob.a_lo)]] > 0)
    assert kinds["with_links"]["mix"]["linked"] > 0.45 and kinds["without_links"]["mix"]["linked"] == 0

"""`linkbert-prep links`: similarity links for corpora without links, edge lists, and their provenance."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from data_prep.cli import main as prep_main
from data_prep.errors import PrepError
from data_prep.inspect import link_source_lines
from data_prep.links import LinksOptions, make_links
from data_prep.shards import MANIFEST, RELATION_NAMES, Manifest, ShardError
from data_prep.similarity import (
    DUP_COSINE,
    dense_neighbours,
    join,
    sparse_neighbours,
    sparse_prepare,
    sparse_search,
    term_counts,
    tfidf_weights,
)
from tests.data_prep.build_checks import JARGON, read_jsonl, run_build, write_jsonl
from tests.needs import missing
from tests.procs import VENV_BIN, child_env, run


def _links(path) -> dict:
    return {d["id"]: d["links"] for d in read_jsonl(path)}


@pytest.fixture(scope="module")
def jargon(tmp_path_factory):
    """The bundled dictionary with its links stripped, and its real links (resolvable, not self)."""
    tmp = tmp_path_factory.mktemp("links")
    docs = read_jsonl(JARGON)
    ids = {d["id"] for d in docs}
    real = {d["id"]: {t for t in d["links"] if t in ids and t != d["id"]} for d in docs}
    stripped = write_jsonl(tmp / "stripped.jsonl", [{**d, "links": []} for d in docs])
    return tmp, stripped, real, docs


def _recall(real: dict, pred: dict, k: int = 5) -> float:
    hit = sum(len(set(pred[i][:k]) & r) for i, r in real.items())
    return hit / sum(len(r) for r in real.values())


def test_recall_against_exact_tfidf_baseline(jargon):
    """Held-out check: tfidf and bm25 recover >= 0.9x the real links an exact TF-IDF cosine top-5 does."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    tmp, stripped, real, docs = jargon
    x = TfidfVectorizer().fit_transform([f"{d['title']}\n{d['text']}" for d in docs])
    s = cosine_similarity(x)
    np.fill_diagonal(s, -1)
    base = {d["id"]: [docs[j]["id"] for j in np.argsort(-s[i], kind="stable")[:5]] for i, d in enumerate(docs)}
    exact = _recall(real, base)
    assert exact > 0.15   # similarity is a real signal here (random partners: ~0.002)
    for method in ("tfidf", "bm25"):
        out = tmp / f"{method}.jsonl"
        stats = make_links(LinksOptions(corpus=[stripped], out=str(out), method=method, k=5))
        got = _links(out)
        assert all(len(v) <= 5 and k not in v for k, v in got.items())   # at most k links, never itself
        # a few very short entries share no word with enough others to fill 5
        assert 0.99 * 5 * len(docs) <= stats["links"]["written"] == sum(map(len, got.values()))
        assert stats["link_source"]["exact"] is True
        assert _recall(real, got) >= 0.9 * exact, (method, _recall(real, got), exact)


def test_neighbours_sorted_by_score_then_index(tmp_path):
    texts = ["apple banana cherry", "apple banana cherry date", "apple banana", "apple banana",
             "cherry date elder", "fig grape", "fig grape apple", "elder fig"]
    w = tfidf_weights(term_counts(texts))
    nb = sparse_neighbours(w, "tfidf", 3, tmp_path / "w")
    dense = (w @ w.T).toarray()
    for i in range(len(texts)):
        idx = [j for j in nb.index[i] if j >= 0]
        assert i not in idx
        sc = nb.score[i, :len(idx)]
        assert np.all(np.diff(sc) <= 1e-6)
        for a, b, sa, sb in zip(idx, idx[1:], sc, sc[1:]):
            assert sa > sb or a < b          # equal scores: lower document index first
        np.testing.assert_allclose(sc, dense[i, idx], rtol=1e-5)
    # docs 2 and 3 are identical: neither is linked to the other, and the skip is counted
    assert 3 not in nb.index[2] and 2 not in nb.index[3] and nb.duplicates >= 2


def test_output_identical_for_any_workers(jargon, monkeypatch):
    """Byte-identical output for 1 worker with the default blocks and 2 workers with many small blocks."""
    from data_prep import similarity

    tmp, stripped, _, docs = jargon
    sub = write_jsonl(tmp / "sub.jsonl", read_jsonl(stripped)[:700])
    for exact_max in (None, 0):     # exact product, and the pruned large-corpus path
        outs = []
        for w in (1, 2):
            if w == 2:   # many small blocks, and counting chunks spread over the workers
                monkeypatch.setattr(similarity, "block_rows", lambda n, exact: 64)
                monkeypatch.setattr(similarity, "COUNT_CHUNK_DOCS", 100)
            out = tmp / f"w{w}_{exact_max}.jsonl"
            make_links(LinksOptions(corpus=[sub], out=str(out), method="bm25", k=4, workers=w,
                                    exact_max_docs=exact_max))
            outs.append(out.read_bytes())
            monkeypatch.undo()
        assert outs[0] == outs[1]
    # the pruned path agrees mostly with the exact one
    ex, pr = _links(tmp / "w1_None.jsonl"), _links(tmp / "w1_0.jsonl")
    assert sum(len(set(ex[i]) & set(pr[i])) for i in ex) >= 0.8 * sum(map(len, ex.values()))


def test_chunked_counts_equal_scikit_learn(jargon):
    """The counts merged from chunks are scikit-learn's one-process CountVectorizer matrix, bit for bit
    (vocabulary order, pruning, values), whatever the chunk size; empty and stop-word-only texts included."""
    from sklearn.feature_extraction.text import CountVectorizer

    from data_prep.similarity import TOKEN_PATTERN

    _, _, _, docs = jargon
    texts = [f"{d['title']}\n{d['text']}" for d in docs[:600]]
    texts[5:5] = ["", "the of and", "zzyzx"]
    ref = CountVectorizer(token_pattern=TOKEN_PATTERN, stop_words="english", min_df=2, max_df=0.5,
                          dtype=np.float32).fit_transform(texts)
    ref.sort_indices()
    for chunk in (7, 250, 5000):
        got = term_counts(iter(texts), chunk_docs=chunk)
        assert got.shape == ref.shape and got.dtype == np.float32
        for a in ("indptr", "indices", "data"):
            assert np.array_equal(getattr(got, a), getattr(ref, a)), (chunk, a)
    with pytest.raises(PrepError, match="no shared words"):
        term_counts(iter(["alpha beta", "gamma delta", "epsilon zeta", "eta theta"]))


def test_rank_shares_join_to_the_whole(jargon, tmp_path, monkeypatch):
    """Rows split between 1, 2 or 3 ranks (whole blocks each, in rank order) join to the one-process answer."""
    from data_prep import similarity

    _, _, _, docs = jargon
    w = tfidf_weights(term_counts(f"{d['title']}\n{d['text']}" for d in docs[:500]))
    n, exact = sparse_prepare(w, tmp_path / "w", exact_max_docs=0)
    monkeypatch.setattr(similarity, "block_rows", lambda n, exact: 96)
    whole = sparse_search(tmp_path / "w", "tfidf", 4, n, exact)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((300, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    monkeypatch.setattr(similarity, "DENSE_BLOCK", 64)
    dense_whole = dense_neighbours(emb, 3)
    for size in (2, 3):
        parts = [sparse_search(tmp_path / "w", "tfidf", 4, n, exact, part=(r, size)) for r in range(size)]
        assert all(len(p.index) for p in parts)   # every rank has rows to score
        got = join(parts)
        assert np.array_equal(got.index, whole.index) and np.array_equal(got.score, whole.score)
        assert got.duplicates == whole.duplicates
        got = join([dense_neighbours(emb, 3, part=(r, size)) for r in range(size)])
        assert np.array_equal(got.index, dense_whole.index) and np.array_equal(got.score, dense_whole.score)


@pytest.mark.mpi
def test_two_mpi_ranks_write_the_same_bytes(jargon):
    """`mpirun -n 2 linkbert-prep links` (each rank 1 worker) writes the bytes of one process."""
    mpirun = VENV_BIN / "mpirun"
    if not mpirun.exists():
        missing("no mpirun in the environment (pip install mpich)")
    tmp, stripped, _, _ = jargon
    common = ["--method", "bm25", "--k", "4", "--exact-max-docs", "0", "--no-progress"]  # 3 blocks of 1024
    ref = tmp / "mpi_ref.jsonl"
    assert prep_main(["links", "--corpus", str(stripped), "--out", str(ref), *common]) == 0
    out = tmp / "mpi_2.jsonl"
    cp = run([str(mpirun), "-n", "2", str(VENV_BIN / "linkbert-prep"), "links", "--corpus", str(stripped),
              "--out", str(out), *common], timeout=150, env=child_env(OMP_NUM_THREADS=1))
    assert "with 2 rank(s) x 1 worker(s)" in cp.stdout and cp.stdout.count("wrote ") == 1, cp.stdout
    assert out.read_bytes() == ref.read_bytes()
    assert json.loads(Path(str(out) + ".stats.json").read_text())["ranks"] == 2
    assert not (tmp / "mpi_2.jsonl.work").exists()


@pytest.fixture
def small(tmp_path):
    docs = [
        {"id": "a", "title": "A", "text": "sailing boats harbour wind sails", "links": ["c", "a", "zz", "c"]},
        {"id": "b", "text": "sailing boats regatta wind harbour", "links": []},
        {"id": "c", "text": "harbour cranes containers ships wind", "links": []},
        {"id": "d", "text": "ships containers cranes port logistics", "links": ["a"]},
        {"id": "e", "text": "regatta sails wind boats racing"},
        {"id": "f", "text": "port logistics trucks containers", "links": []},
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs)
    edges = tmp_path / "edges.tsv.gz"
    with gzip.open(edges, "wt") as f:
        f.write("# citing\tcited\na\tf\na\tb\nb\tnope\nnope\ta\nd\td\na\tf\n\nb\te\n")
    return tmp_path, corpus, edges


def test_merge_and_edges_order_and_counts(small):
    tmp, corpus, edges = small
    out = tmp / "m.jsonl.gz"
    st = make_links(LinksOptions(corpus=[corpus], out=str(out), method="tfidf", k=2, merge=True,
                                 from_edges=[str(edges)]))
    got = _links(out)
    assert got["a"][:4] == ["c", "zz", "f", "b"]      # own links first (self and repeat dropped), then edges
    # ... then new neighbours only: b and c (most similar) are there already, e is added; f shares no word
    assert got["a"][4:] == ["e"]
    assert got["b"][0] == "e" and len(got["b"]) == 3  # edge, then 2 neighbours not already there
    assert all(d not in v for d, v in got.items())
    assert got["d"][0] == "a"
    assert st["edges"] == {"read": 7, "malformed": 0, "unknown_id": 2, "self_link": 1}
    assert st["links"]["edges_repeated"] == 1 and st["links"]["own_self_dropped"] == 1
    assert st["link_source"]["edges"] == [str(edges)] and st["link_source"]["merge"] is True
    assert json.loads(Path(str(out) + ".stats.json").read_text()) == st
    # without --merge the own links are replaced; --method none adds the edges only
    make_links(LinksOptions(corpus=[corpus], out=str(tmp / "n.jsonl"), method="none", from_edges=[str(edges)]))
    got = _links(tmp / "n.jsonl")
    assert got == {"a": ["f", "b"], "b": ["e"], "c": [], "d": [], "e": [], "f": []}


def test_bad_edge_file_is_one_line_or_counted(small, capsys):
    tmp, corpus, _ = small
    bad = tmp / "bad.tsv"
    bad.write_text("a\tb\na b c\nc\td\n")
    rc = prep_main(["links", "--corpus", str(corpus), "--out", str(tmp / "o.jsonl"), "--from-edges", str(bad),
                    "--method", "none"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"{bad}:2: expected source_id<TAB>target_id, got 1 tab-separated field(s)" in err
    rc = prep_main(["links", "--corpus", str(corpus), "--out", str(tmp / "o.jsonl"), "--from-edges", str(bad),
                    "--method", "tfidf", "--k", "1", "--skip-bad-lines"])
    out = capsys.readouterr().out
    assert rc == 0 and "malformed 1" in out
    assert json.loads((tmp / "o.jsonl.stats.json").read_text())["edges"]["malformed"] == 1
    with pytest.raises(PrepError, match="--method dense needs --model"):
        make_links(LinksOptions(corpus=[corpus], out=str(tmp / "x.jsonl"), method="dense"))


def test_dense_runs_with_a_local_model(jargon, minilm_dir):
    tmp, stripped, real, _ = jargon
    sub = write_jsonl(tmp / "dense_in.jsonl", read_jsonl(stripped)[:16])
    out = tmp / "dense.jsonl"
    st = make_links(LinksOptions(corpus=[sub], out=str(out), method="dense", k=3, model=str(minilm_dir)))
    got = _links(out)
    assert len(got) == 16 and all(len(v) == 3 and k not in v for k, v in got.items())
    assert st["link_source"]["model"] == str(minilm_dir) and 0 < st["links"]["mean_score"] < DUP_COSINE + 0.1


def test_build_on_links_is_linked_and_records_the_source(jargon, minilm_dir):
    tmp, stripped, _, _ = jargon
    sub = write_jsonl(tmp / "build_in.jsonl", read_jsonl(stripped)[:120])
    linked = tmp / "linked.jsonl"
    st = make_links(LinksOptions(corpus=[sub], out=str(linked), method="tfidf", k=5))
    m = run_build(linked, minilm_dir, tmp / "data", max_seq_len=64)
    mix = m.stats["pairs"]["mix"]
    assert abs(mix[RELATION_NAMES[2]] - 1 / 3) < 0.03, mix    # a linked third, as from hyperlinks
    assert m.stats["links"]["used"] == st["links"]["written"] > 0.95 * 5 * 120   # every link resolves
    assert m.link_sources == [{"corpus": str(linked), "method": "tfidf", "k": 5, "model": None, "merge": False,
                               "edges": [], "exact": True}]
    read = Manifest.read(tmp / "data")
    assert read.link_sources == m.link_sources
    lines = link_source_lines(read)
    assert "method tfidf, k 5" in lines[0] and lines[1].startswith("in-degree: ")


def test_manifest_link_sources_backward_compatible(tmp_path):
    (tmp_path / "s.h5").write_bytes(b"")
    raw = {"format": "linkbert-pairs", "version": 1, "shards": [{"path": "s.h5", "num_pairs": 4}]}
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    m = Manifest.read(tmp_path)
    assert m.link_sources == [] and "link_sources" not in m.to_dict()
    assert link_source_lines(m) == ["link source: the corpus's own links"]
    (tmp_path / MANIFEST).write_text(json.dumps({**raw, "link_sources": "tfidf"}))
    with pytest.raises(ShardError, match="field link_sources must be a list of objects"):
        Manifest.read(tmp_path)


"""`linkbert-prep links`: quality against real links, and cost at scale.

quality: a hyperlinked corpus with its links stripped; recall@k / precision@k of its real (resolvable,
non-self) links among each method's k links, beside an exact scikit-learn TF-IDF cosine baseline
(TfidfVectorizer defaults, full similarity matrix) and k random partners. Also the pruned (large-corpus)
sparse path and FAISS HNSW forced on the same corpus, with their recall against the exact answer.

    python benchmarks/bench_links.py quality [--corpus data_prep/corpora/jargon.jsonl.gz] [--dense MODEL]
    python benchmarks/bench_links.py scale --sizes 200000 1000000 [--method tfidf]

scale: generated documents (80-200 words from a Zipf(1.1) vocabulary of 500k words, plus a few topic
words), each size in its own process; prints docs/s, peak RSS, time ratio and memory growth per document.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _load(path):
    from data_prep.corpus import iter_documents
    docs = list(iter_documents([path]))
    return [d[1] for d in docs], docs


def _real_links(ids, docs) -> list[set]:
    pos = {i: r for r, i in enumerate(ids)}
    return [{pos[t] for t in links if t in pos and pos[t] != r} for r, (_, _, _, links) in enumerate(docs)]


def _pred_rows(path, ids) -> list[list[int]]:
    from data_prep.corpus import iter_documents
    pos = {i: r for r, i in enumerate(ids)}
    return [[pos[t] for t in links if t in pos] for _, _, _, links in iter_documents([path])]


def _score(real, pred, k) -> tuple[float, float]:
    hit = sum(len(set(p[:k]) & r) for p, r in zip(pred, real))
    n_real = sum(len(r) for r in real)
    n_pred = sum(len(p[:k]) for p in pred)
    return hit / max(n_real, 1), hit / max(n_pred, 1)


def _exact_baseline(docs, k) -> list[list[int]]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    from data_prep.links import _doc_text
    x = TfidfVectorizer().fit_transform([_doc_text({"title": d[1], "text": d[2]}) for d in docs])
    s = cosine_similarity(x)
    np.fill_diagonal(s, -1)
    return [list(np.argsort(-row, kind="stable")[:k]) for row in s]


def _overlap(a, b, k) -> float:
    """Recall of a's lists against b's (the exact answer)."""
    return sum(len(set(x[:k]) & set(y[:k])) for x, y in zip(a, b)) / max(sum(len(y[:k]) for y in b), 1)


def _reuse_embeddings() -> None:
    """The HNSW run reuses the exact dense run's embeddings (same model, same texts): only the search differs."""
    from data_prep import similarity
    original, cache = similarity.embed, {}

    def embed(texts, model, **kw):
        if model not in cache:
            cache[model] = original(texts, model, **kw)
        else:
            for _ in texts:   # the caller collects ids while the texts are read
                pass
        return cache[model]

    similarity.embed = embed


def quality(args) -> None:
    from data_prep.links import LinksOptions, make_links
    ids, docs = _load(args.corpus)
    real = _real_links(ids, docs)
    k = args.k
    rows = []
    base = _exact_baseline(docs, k)
    rows.append(("exact sklearn TF-IDF cosine", *_score(real, base, k), None))
    rng = np.random.default_rng(0)
    rand = [list(rng.choice(np.delete(np.arange(len(ids)), i), k, replace=False)) for i in range(len(ids))]
    rows.append(("random", *_score(real, rand, k), None))
    runs = [("tfidf", "tfidf", None, None), ("bm25", "bm25", None, None),
            ("tfidf pruned (large-corpus path)", "tfidf", None, 0), ("bm25 pruned (large-corpus path)", "bm25", None, 0)]
    if args.dense:
        runs += [("dense", "dense", args.dense, None), ("dense HNSW (large-corpus path)", "dense", args.dense, 0)]
    preds = {}
    _reuse_embeddings()
    with tempfile.TemporaryDirectory() as tmp:
        for name, method, model, exact_max in runs:
            out = Path(tmp) / f"{len(preds)}.jsonl"
            t = time.time()
            make_links(LinksOptions(corpus=[args.corpus], out=str(out), method=method, k=k, model=model,
                                    exact_max_docs=exact_max))
            secs = time.time() - t
            preds[name] = _pred_rows(out, ids)
            rows.append((name, *_score(real, preds[name], k), secs))
    exact_r = rows[0][1]
    print(f"corpus {args.corpus}: {len(ids)} documents, {sum(map(len, real))} real links, k={k}")
    print(f"{'method':38s} recall@{k}  precision@{k}  vs exact  seconds")
    for name, r, p, secs in rows:
        print(f"{name:38s} {r:8.4f}  {p:11.4f}  {r / exact_r:8.2f}  {'' if secs is None else f'{secs:.1f}'}")
    for approx, exact in (("tfidf pruned (large-corpus path)", "tfidf"), ("bm25 pruned (large-corpus path)", "bm25"),
                          ("dense HNSW (large-corpus path)", "dense")):
        if approx in preds:
            print(f"recall of '{approx}' against exact {exact}: {_overlap(preds[approx], preds[exact], k):.4f}")


# ---------------------------------------------------------------------------------------------- scale

def make_corpus(path: Path, n: int, seed: int = 0, vocab: int = 500_000) -> None:
    """n documents of 80-200 words: Zipf(1.1) background words plus words of one of n/50 topics."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i:x}" for i in range(vocab)])
    topics = max(1, n // 50)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n, 10000):
            m = min(n, start + 10000) - start
            lens = rng.integers(80, 201, m)
            z = rng.zipf(1.1, lens.sum()) - 1
            z = np.minimum(z, vocab - 1)
            topic = rng.integers(0, topics, m)
            pos = 0
            for j in range(m):
                ln = lens[j]
                tw = (vocab - 1 - (topic[j] * 7 + rng.integers(0, 7, 8))) % vocab
                text = " ".join(words[np.concatenate([z[pos:pos + ln], tw])])
                pos += ln
                f.write(json.dumps({"id": f"d{start + j}", "text": text}) + "\n")


def scale_child(corpus: str, out: str, method: str, workers: int) -> dict:
    from data_prep.links import LinksOptions, make_links
    t = time.time()
    make_links(LinksOptions(corpus=[corpus], out=out, method=method, k=5, workers=workers))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it could report the parent's size
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    # the largest worker's peak (Linux: KiB; its memory-mapped matrix pages are shared page cache)
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": time.time() - t, "peak_kb": hwm, "worker_peak_kb": worker}


def scale(args) -> None:
    res = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in args.sizes:
            corpus = Path(tmp) / f"gen{n}.jsonl"
            t = time.time()
            make_corpus(corpus, n)
            print(f"generated {n} documents in {time.time() - t:.0f} s", flush=True)
            cmd = [sys.executable, __file__, "scale-child", str(corpus), str(Path(tmp) / "out.jsonl"),
                   args.method, str(args.workers)]
            p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if p.returncode:
                sys.exit(p.stderr)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            res[n] = r
            print(f"{n:>9} docs: {r['seconds']:.1f} s ({n / r['seconds']:.0f} docs/s), peak RSS "
                  f"{r['peak_kb'] / 1024:.0f} MiB ({r['peak_kb'] * 1024 / n:.0f} B/doc), largest worker "
                  f"{r['worker_peak_kb'] / 1024:.0f} MiB", flush=True)
            corpus.unlink()
    if len(args.sizes) >= 2:
        a, b = args.sizes[0], args.sizes[-1]
        ratio = res[b]["seconds"] / res[a]["seconds"]
        growth = (res[b]["peak_kb"] - res[a]["peak_kb"]) * 1024 / (b - a)
        print(f"time({b})/time({a}) = {ratio:.2f} (goal for 200k -> 1M: <= 7); "
              f"memory growth {growth:.0f} B/doc (goal <= 2048)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "scale-child":
        print(json.dumps(scale_child(*sys.argv[2:5], int(sys.argv[5]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--corpus", default=str(ROOT / "data_prep" / "corpora" / "jargon.jsonl.gz"))
    q.add_argument("--k", type=int, default=5)
    q.add_argument("--dense", default=None, help="model folder / Hub id for the dense method")
    s = sub.add_parser("scale")
    s.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    s.add_argument("--method", default="tfidf")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--tmp", default=None)
    args = ap.parse_args()
    quality(args) if args.what == "quality" else scale(args)


if __name__ == "__main__":
    main()

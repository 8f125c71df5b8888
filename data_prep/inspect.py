"""Show a prepared dataset: its stats, a few decoded pairs with their source documents, and a plot.

The plot has the relation mix next to the target, and the in-degree distribution of the documents
chosen as linked partners beside that of all documents: with LinkBERT's 1/in-degree rule the chosen
partners lean toward rarely-linked documents instead of the hubs.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from data_prep.errors import PrepError
from data_prep.shards import DATASETS, RELATION_NAMES, Manifest, ShardError, check_shard_attrs


def add_arguments(p) -> None:
    p.add_argument("dir", help="dataset directory made by `linkbert-prep build`")
    p.add_argument("--num-pairs", type=int, default=3, help="decoded pairs to show")
    p.add_argument("--seed", type=int, default=0, help="which pairs to show")
    p.add_argument("--plot", default=None, help="write a PNG of the relation mix and linked in-degrees")
    p.add_argument("--verify", choices=("full", "quick", "none"), default="quick",
                   help="shard check as pretraining's data.verify does it (default quick; full hashes every shard)")


def run(args) -> int:
    from data_prep.verify import startup_lines
    lines, problems = startup_lines(args.dir, args.verify)   # what linkbert-pretrain would check at start-up
    if problems:   # before reading any pair: a damaged shard is this one line, not an h5py traceback
        raise PrepError(problems[0])
    print(inspect_dataset(args.dir, num_pairs=args.num_pairs, plot=args.plot, seed=args.seed))
    print("\n".join(lines))
    return 0


def load_pairs(dataset_dir, datasets=DATASETS, manifest: Manifest | None = None) -> dict:
    """Every shard's datasets concatenated in manifest order (for inspection and tests; small data)."""
    m = manifest or Manifest.read(dataset_dir)
    parts: dict = {k: [] for k in datasets}
    attrs = None
    for path in m.shard_paths:
        with h5py.File(path, "r") as f:
            attrs = check_shard_attrs(path, f.attrs)
            for k in datasets:
                parts[k].append(f[k][...])
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    out["attrs"] = attrs
    return out


def load_doc_ids(dataset_dir, manifest: Manifest | None = None) -> list[str]:
    manifest = manifest or Manifest.read(dataset_dir)
    with open(Path(dataset_dir) / manifest.docs, encoding="utf-8") as f:
        return [json.loads(line)["id"] for line in f]


def _tokenizer(dataset_dir, manifest: Manifest):
    from transformers import AutoTokenizer

    folder = manifest.tokenizer_dir()
    if folder is not None:
        return AutoTokenizer.from_pretrained(folder)
    raise PrepError(f"{dataset_dir}: tokenizer folder missing; rebuild or pass it along with the dataset")


def inspect_dataset(dataset_dir, num_pairs: int = 3, plot: str | None = None, seed: int = 0) -> str:
    try:
        m = Manifest.read(dataset_dir)
    except ShardError as e:
        raise PrepError(str(e)) from e
    if not m.stats:
        raise PrepError(f"{dataset_dir}/manifest.json: no stats (not written by `linkbert-prep build`); "
                        "rebuild it to inspect it")
    st = m.stats
    lines = [f"dataset {dataset_dir}: {len(m.shards)} shard(s), max_seq_len {m.max_seq_len}, "
             f"tokenizer {m.tokenizer_name} (vocab {m.vocab_size or '?'})"]
    d, lk, p = st["documents"], st["links"], st["pairs"]
    lines.append(f"documents: {d['in']} in, {d['used']} used, skipped {_nonzero(d['skipped'])}")
    lines.append(f"links: {lk['in']} in, {lk['used']} used, dropped {_nonzero(lk['dropped'])}")
    lines += link_source_lines(m)
    sg = st["segments"]
    lines.append(f"anchors: {sg['total']} {'chunks' if sg.get('segmenting', 'sentences') == 'sentences' else 'segments'}"
                 f" (mean {sg['mean_tokens']:.1f} tokens) of {sg.get('units', sg['total'])} units, tokens {st['tokens']}")
    lines.append("pairs: " + f"{p['total']} = " + ", ".join(
        f"{n} {p[n]} ({p['mix'][n]:.1%}, target {p['target_mix'][n]:.1%})" for n in RELATION_NAMES)
        + (f"; mean fill {p['mean_fill']:.1%}, mix policy {p.get('mix_policy', 'global')}" if "mean_fill" in p else ""))
    for kind, v in p.get("mix_by_anchor", {}).items():
        lines.append(f"  anchors {kind.replace('_', ' ')}: {v['total']} pairs, " + ", ".join(
            f"{n} {v['mix'][n]:.1%}" for n in RELATION_NAMES))
    # Only small per-row arrays are read whole; token rows are read for the shown pairs alone.
    data = load_pairs(dataset_dir, ("pair_labels", "partner_doc"), m)
    doc_ids = load_doc_ids(dataset_dir, m)
    n = len(data["pair_labels"])
    if num_pairs and n:
        tok = _tokenizer(dataset_dir, m)
        rows = np.random.default_rng(seed).choice(n, size=min(num_pairs, n), replace=False)
        ends = np.cumsum([s.num_pairs for s in m.shards])
        unit = "segment" if st["segments"].get("segmenting") == "fixed" else "sentence"  # where A and B start
        for r in sorted(rows.tolist()):
            k = int(np.searchsorted(ends, r, side="right"))
            i = r - (int(ends[k - 1]) if k else 0)
            with h5py.File(m.shards[k].path, "r") as f:
                row = {name: f[name][i] for name in DATASETS}
            ids = row["input_ids"].astype(np.int64)
            a, s = int(row["a_lens"]), int(row["seq_lens"])
            lines.append(f"--- pair {r}: {RELATION_NAMES[int(row['pair_labels'])]}, "
                         f"A = {doc_ids[row['anchor_doc']]!r} {unit} {row['anchor_seg']}, "
                         f"B = {doc_ids[row['partner_doc']]!r} {unit} {row['partner_seg']}")
            lines.append("A: " + tok.decode(ids[1:a - 1].tolist()))
            lines.append("B: " + tok.decode(ids[a:s - 1].tolist()))
    if plot:
        plot_dataset(dataset_dir, data, m, plot)
        lines.append(f"plot written to {plot}")
    return "\n".join(lines)


def link_source_lines(m: Manifest) -> list[str]:
    """Where the links came from and how their in-degrees spread (similarity graphs grow hubs too)."""
    if m.link_sources:
        lines = []
        for src in m.link_sources:
            extra = "".join(f", {k} {src[k]}" for k in ("model",) if src.get(k))
            edges = f", edges from {', '.join(src['edges'])}" if src.get("edges") else ""
            lines.append(f"link source: {Path(src.get('corpus', '?')).name}: `linkbert-prep links` method "
                         f"{src.get('method')}, k {src.get('k')}{extra}{edges}"
                         f"{', own links kept first' if src.get('merge') else ''}")
    else:
        lines = ["link source: the corpus's own links"]
    gpath = Path(m.folder) / m.graph if m.folder is not None else None
    if gpath is not None and gpath.is_file():
        indeg = np.load(gpath)["indegree"]
        if len(indeg):
            edges = [0, 1, 2, 5, 10, 100, 1000]
            counts = np.histogram(indeg, bins=[*edges, max(int(indeg.max()), 1000) + 1])[0]
            names = ["0", "1", "2-4", "5-9", "10-99", "100-999", "1000+"]
            p50, p99 = np.percentile(indeg, [50, 99])
            lines.append("in-degree: " + ", ".join(f"{nm} {c}" for nm, c in zip(names, counts) if c)
                         + f" (median {p50:g}, p99 {p99:g}, max {int(indeg.max())})")
    return lines


def _nonzero(d: dict) -> str:
    nz = {k: v for k, v in d.items() if v}
    return ", ".join(f"{k} {v}" for k, v in nz.items()) if nz else "none"


def plot_dataset(dataset_dir, data: dict, manifest: Manifest, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    p = manifest.stats["pairs"]
    x = np.arange(3)
    ax1.bar(x - 0.2, [p["mix"][n] for n in RELATION_NAMES], 0.4, label="actual")
    ax1.bar(x + 0.2, [p["target_mix"][n] for n in RELATION_NAMES], 0.4, label="target")
    ax1.set_xticks(x, RELATION_NAMES)
    ax1.set_ylabel("fraction of pairs")
    ax1.set_title(f"relation mix ({p['total']} pairs)")
    ax1.legend()
    gpath = Path(dataset_dir) / manifest.graph
    if gpath.is_file():
        g = np.load(gpath)
        indeg = g["indegree"]
        per_link = indeg[g["indices"]]  # what choosing uniformly among out-links would give
        chosen = indeg[data["partner_doc"][data["pair_labels"] == 2]]
        linked_to = indeg[indeg > 0]
        top = max(int(indeg.max()) if len(indeg) else 1, 1)
        bins = np.unique(np.geomspace(1, top + 1, 30).astype(int))
        if len(linked_to):
            ax2.hist(linked_to, bins=bins, density=True, histtype="step", label="linked-to documents")
            ax2.hist(per_link, bins=bins, density=True, histtype="step", label="uniform over links")
        if len(chosen):
            ax2.hist(chosen, bins=bins, density=True, alpha=0.5, label="chosen linked partners")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.legend()
    ax2.set_xlabel("in-degree")
    ax2.set_title("in-degree: linked partners vs all documents")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

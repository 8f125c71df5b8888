"""The link ablation: does pretraining on linked pairs teach a model to use a linked document?

    python benchmarks/bench_ablation.py --corpus C --tokenizer T --init-from M --steps S [--seeds N] \
        --out DIR [--quick]

1. Split the corpus by document: held-out documents (a seeded walk that takes a document together with
   the documents its text names through links, so the held-out set holds probe items) never enter any
   training corpus; training documents lose their links into the held-out set.
2. Build three datasets from the training documents with the same tokenizer, length and seed:
   `bert` (contiguous/random pairs only, --pair-mix 1,1,0), `linkbert` (the corpus's own links,
   1,1,1) and `linkbert-sim` (links from `linkbert-prep links --method tfidf --k 5`, 1,1,1; skipped with
   one line while that command does not exist).
3. Train each from the same --init-from weights with the same steps, batch, sequence length, learning
   rate and seeds (linkbert-pretrain, 2 ranks, ZeRO-2, bf16), export to Hugging Face.
4. Score each export (and the starting weights, as a reference) with `linkbert-eval crossdoc` on the
   held-out documents, and its MLM loss on the held-out documents' text (the same masked positions for
   every model). Write DIR/ablation.json and DIR/ablation.png (docs/ablation.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finetune.crossdoc_items import Doc, mention_pattern, read_corpus  # noqa: E402

ARMS = {"bert": "1,1,0", "linkbert": "1,1,1", "linkbert-sim": "1,1,1"}
# Opt-in (--arms): the same two mixes on a training corpus where no document names itself (each
# document's own title removed from its text, as the probe removes B's title from B). A linked pair then
# cannot teach "copy B's title from B into A's masked mention", which the probe never allows.
NOTITLE_ARMS = {"bert-notitle": "1,1,0", "linkbert-notitle": "1,1,1"}
# Opt-in: as many linked pairs as the graph gives (--pair-mix 0,0,1: every anchor with an out-link gets a linked
# partner; the others fall back; 74% linked on the Jargon File), for whether more linked pairs move the probe.
ALL_ARMS = {**ARMS, **NOTITLE_ARMS, "linked-max": "0,0,1"}
# (arm, baseline) pairs reported as paired differences when both ran
DIFFERENCES = {"linkbert_minus_bert": ("linkbert", "bert"), "linkbert_sim_minus_bert": ("linkbert-sim", "bert"),
               "linkbert_notitle_minus_bert_notitle": ("linkbert-notitle", "bert-notitle"),
               "linked_max_minus_bert": ("linked-max", "bert")}
QUICK = dict(steps=120, seeds=1, max_seq_len=128, micro_batch=16, n=800, probe_seq_len=128, held_out=0.2,
             mlm_chunks=192, dupe_factor=1)
MIN_ITEMS = 400   # fewer probe items than this and the run says its intervals will be too wide
# The full run, sized to what a 2-core machine finishes in ~100 minutes per corpus: 300 steps x 32 pairs x 3
# seeds per arm (the step count at which every arm used the second segment on both readings), 3 pair draws
# per anchor so the arms see fresh pairs, 1000 probe items at the training length. A GPU run raises
# --steps and --n.
FULL = dict(steps=300, seeds=3, max_seq_len=128, micro_batch=16, n=1000, probe_seq_len=128, held_out=0.2,
            mlm_chunks=192, dupe_factor=3)


def log(msg: str) -> None:
    print(f"[ablation {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- split and corpora

def split_documents(docs: list[Doc], frac: float, seed: int) -> set[str]:
    """Held-out ids: about `frac` of the documents, taken in a seeded order each with the link targets
    its text mentions (so held-out documents link to held-out documents and the probe has items)."""
    index = {d.id: i for i, d in enumerate(docs)}
    target = max(1, int(round(frac * len(docs))))
    held: set[str] = set()
    for i in np.random.default_rng(seed).permutation(len(docs)):
        d = docs[int(i)]
        group = {d.id} | {t for t in d.links if t in index and t != d.id
                          and mention_pattern(docs[index[t]].title).search(d.text)}
        if len(held | group) > target:
            continue
        held |= group
        if len(held) >= target:
            break
    return held


def write_corpus(path: Path, docs: list[Doc], keep: set[str]) -> int:
    """The documents in `keep`, links restricted to `keep`; returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            if d.id in keep:
                f.write(json.dumps({"id": d.id, "title": d.title, "text": d.text,
                                    "links": [t for t in d.links if t in keep]}, ensure_ascii=False) + "\n")
                n += 1
    return n


def similarity_corpus(train: Path, out: Path) -> Path | None:
    """The training corpus with links from `linkbert-prep links --method tfidf --k 5`, or None (one line)."""
    from data_prep import cli
    if "links" not in cli.SUBCOMMANDS:
        log("linkbert-sim: skipped (this checkout has no `linkbert-prep links`)")
        return None
    if not out.is_file():
        rc = cli.main(["links", "--corpus", str(train), "--out", str(out), "--method", "tfidf", "--k", "5"])
        if rc != 0 or not out.is_file():
            log(f"linkbert-sim: skipped (`linkbert-prep links` exited {rc})")
            return None
    return out


def untitled_corpus(out: Path, docs: list[Doc], keep: set[str]) -> Path:
    """The documents in `keep` (as write_corpus writes them) with each one's own title (and the words it
    begins) removed from its text."""
    from dataclasses import replace

    from finetune.crossdoc_items import remove_title
    write_corpus(out, [replace(d, text=remove_title(d.text, d.title)) for d in docs if d.id in keep], keep)
    return out


def build_dataset(corpus: Path, tokenizer: str, out: Path, mix: str, max_seq_len: int, seed: int,
                  dupe_factor: int = 1) -> Path:
    from data_prep.cli import main as prep
    from data_prep.shards import MANIFEST
    if not (out / MANIFEST).is_file():
        rc = prep(["build", "--corpus", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out),
                   "--max-seq-len", str(max_seq_len), "--seed", str(seed), "--workers", "1",
                   "--pair-mix", mix, "--dupe-factor", str(dupe_factor), "--quiet"])
        if rc:
            raise SystemExit(f"bench_ablation: linkbert-prep build {out} failed (exit {rc})")
    return out


def _manifest_and_ids(data: Path):
    """A dataset's manifest and its document ids in row order (what anchor_doc/partner_doc index)."""
    from data_prep.shards import Manifest
    man = Manifest.read(data)
    return man, [json.loads(x)["id"] for x in (data / man.docs).read_text(encoding="utf-8").splitlines() if x.strip()]


def dataset_doc_ids(data: Path) -> tuple[set[str], int, float]:
    """Ids of every document in any pair of a dataset (anchor or partner), pairs, mean non-pad tokens."""
    import h5py
    man, ids = _manifest_and_ids(data)
    used, pairs, tokens = set(), 0, 0
    for shard in man.shard_paths:
        with h5py.File(shard, "r") as h:
            rows = np.concatenate([h["anchor_doc"][:], h["partner_doc"][:]])
            used.update(ids[int(i)] for i in np.unique(rows))
            pairs += len(h["seq_lens"])
            tokens += int(h["seq_lens"][:].sum())
    return used, pairs, tokens / max(1, pairs)


def probe_like_pairs(data: Path, titles: dict[str, str]) -> dict:
    """How often a dataset poses the probe's task: pairs whose A segment mentions the partner document's
    title (the probe's match), and of those, how many have the title spelled in the partner segment too (a
    masked mention could be copied). Decoded from the shards; `titles` by document id."""
    import h5py
    from transformers import AutoTokenizer
    man, ids = _manifest_and_ids(data)
    tok = AutoTokenizer.from_pretrained(data / "tokenizer")
    patterns: dict[int, object] = {}
    pairs = mention = copyable = 0
    for shard in man.shard_paths:
        with h5py.File(shard, "r") as h:
            x, a_lens, lens = h["input_ids"][:], h["a_lens"][:], h["seq_lens"][:]
            anchor, partner = h["anchor_doc"][:], h["partner_doc"][:]
        pairs += len(x)
        for i in range(len(x)):
            title = titles.get(ids[partner[i]], "")
            if anchor[i] == partner[i] or len(title) < 3:
                continue
            if partner[i] not in patterns:
                patterns[partner[i]] = mention_pattern(title)
            pat = patterns[partner[i]]
            if pat.search(tok.decode(x[i, 1:a_lens[i] + 1])):
                mention += 1
                copyable += bool(pat.search(tok.decode(x[i, a_lens[i] + 2:lens[i] - 1])))
    return {"pairs": pairs, "a_mentions_partner": mention, "partner_spells_title": copyable}


# ---------------------------------------------------------------- training

def train(data: Path, init: str, run: Path, steps: int, seed: int, cfg: dict, timeout: float) -> Path:
    """linkbert-pretrain on 2 ranks (torchrun, ZeRO-2, bf16; one per GPU on a GPU node) from `init`; the
    final Hugging Face export."""
    from pretrain.demo import free_port, run_tree
    hf = run / "hf"
    if (hf / "config.json").is_file():
        return hf
    import torch
    ranks = max(1, min(2, torch.cuda.device_count())) if torch.cuda.is_available() else 2   # one rank per GPU
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(ranks),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "pretrain.cli", "--data", str(data), "--output", str(run), "--init-from", str(init),
           "--deepspeed-config", str(ROOT / "ds_configs" / "zero2.json"), "--precision", "bf16",
           "--max-steps", str(steps), "--micro-batch-size", str(cfg["micro_batch"]), "--grad-accum", "1",
           "--lr", str(cfg["lr"]), "--seed", str(seed), "--save-every", "0", "--schedule.warmup_ratio=0.1",
           "--data.held_out=64", "--metrics.eval_batches=4", "--metrics.progress=false",
           "--metrics.tensorboard=false"]
    rc = run_tree(cmd, timeout)
    if rc != 0 or not (hf / "config.json").is_file():
        raise SystemExit(f"bench_ablation: linkbert-pretrain {run} exited {rc} without an export")
    return hf


# ---------------------------------------------------------------- held-out MLM loss

def heldout_mlm_loss(model_dir: Path, docs: list[Doc], max_seq_len: int, seed: int, max_chunks: int,
                     batch: int = 32) -> float:
    """Mean cross-entropy at 15% of the held-out documents' tokens (all replaced by [MASK]), the
    positions drawn once from `seed`: the same positions for every model with this vocabulary. At most
    `max_chunks` windows of `max_seq_len` tokens, in corpus order."""
    import torch
    from transformers import AutoTokenizer

    from finetune.crossdoc import Scorer
    tok = AutoTokenizer.from_pretrained(model_dir)
    scorer = Scorer(model_dir, batch)
    rng = np.random.default_rng(seed)
    inputs, targets = [], []
    width = max_seq_len - 2
    for d in docs:
        ids = tok(d.text, add_special_tokens=False)["input_ids"]
        for lo in range(0, len(ids), width):
            chunk = ids[lo:lo + width]
            k = max(1, int(round(0.15 * len(chunk))))
            pos = np.sort(rng.choice(len(chunk), size=k, replace=False))
            x = [tok.cls_token_id] + chunk + [tok.sep_token_id]
            tgt = [x[p + 1] for p in pos]
            for p in pos:
                x[p + 1] = tok.mask_token_id
            inputs.append((x, [0] * len(x), [int(p) + 1 for p in pos]))
            targets.append(tgt)
        if len(inputs) >= max_chunks:
            inputs, targets = inputs[:max_chunks], targets[:max_chunks]
            break
    total, count = 0.0, 0
    for lo in range(0, len(inputs), batch):
        for lp, tgt in zip(scorer.log_probs(inputs[lo:lo + batch]), targets[lo:lo + batch]):
            total -= float(lp[torch.arange(len(tgt)), torch.tensor(tgt)].sum())
            count += len(tgt)
    return total / max(1, count)


# ---------------------------------------------------------------- scoring and pooling

def read_outcomes(report: dict, report_path: Path) -> list[dict]:
    path = report_path.with_name(report["examples_file"])
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def pooled(outcome_sets: list[list[dict]], candidates: int, seed: int) -> tuple[dict, dict]:
    """One arm's report over its seeds: per item the mean outcome over seeds, then the usual statistics;
    also the per-item `linked` means, raw and effect (for the paired differences between arms)."""
    from finetune.crossdoc import CONDITIONS, EFFECT_CONDITIONS, TITLED, effect_correct, summarize_arrays
    conds = CONDITIONS + ((TITLED,) if all(TITLED in outs[0] for outs in outcome_sets if outs) else ())
    # [seeds, items] outcomes per condition; the arm's report uses their mean over seeds
    raw = {c: np.array([[o[c]["correct"] for o in outs] for outs in outcome_sets], dtype=float) for c in conds}
    effect = {c: np.array([[effect_correct(o, c) for o in outs] for outs in outcome_sets], dtype=float)
              for c in EFFECT_CONDITIONS}
    got, eff = {c: v.mean(axis=0) for c, v in raw.items()}, {c: v.mean(axis=0) for c, v in effect.items()}
    per_seed = [{"raw": r, "effect": e} for r, e in zip(raw["linked"], effect["linked"])]
    return (summarize_arrays(got, candidates, seed, eff),
            {"raw": got["linked"], "effect": eff["linked"], "per_seed": per_seed,
             **({TITLED: got[TITLED]} if TITLED in got else {})})


def score_arm(name: str, exports: list[Path], held_corpus: Path, held_docs: list[Doc], out: Path,
              cfg: dict, seed: int) -> tuple[dict, np.ndarray]:
    from finetune.crossdoc import run_crossdoc, summary_line
    runs, outcome_sets = [], []
    for s, hf in enumerate(exports):
        rp = out / "reports" / f"{name}-seed{s}.json"
        rep = run_crossdoc(str(hf), str(held_corpus), str(rp), n=cfg["n"], candidates=cfg["candidates"],
                           seed=seed, max_seq_len=cfg["probe_seq_len"], titled=cfg.get("titled", False))
        loss = heldout_mlm_loss(hf, held_docs, cfg["max_seq_len"], seed, cfg["mlm_chunks"])
        log(f"{name} seed {s}: {summary_line(rep)}; held-out MLM loss {loss:.3f}")
        runs.append({"seed": s, "crossdoc": rep, "eval_mlm_loss": round(loss, 5), "export": str(hf)})
        outcome_sets.append(read_outcomes(rep, rp))
    shas = {r["crossdoc"]["items_sha256"] for r in runs}
    if len(shas) != 1:
        raise SystemExit(f"bench_ablation: {name}: seeds scored on different items ({shas})")
    report, got = pooled(outcome_sets, cfg["candidates"], seed)
    report.update(n=runs[0]["crossdoc"]["n"], items_sha256=shas.pop())
    arm = {"crossdoc": report, "eval_mlm_loss": round(float(np.mean([r["eval_mlm_loss"] for r in runs])), 5),
           "runs": runs}
    return arm, got


def arm_difference(a: dict, b: dict, seed: int) -> dict:
    """Paired bootstrap of arm a minus arm b on the `linked` condition over the same items: raw accuracy
    (`mean`, `ci95`) and the effect reading (`effect`), on the seed-averaged outcomes. With several seeds,
    `per_seed` pairs seed s of one arm with seed s of the other: the bootstrap above resamples items, not
    training runs, so the spread over seeds is the check that a difference is not one lucky run."""
    from finetune.crossdoc import bootstrap_ci
    d, e = a["raw"] - b["raw"], a["effect"] - b["effect"]
    out = {"mean": round(float(d.mean()), 5), "ci95": bootstrap_ci(d, seed),
           "effect": {"mean": round(float(e.mean()), 5), "ci95": bootstrap_ci(e, seed)}}
    pairs = list(zip(a.get("per_seed", []), b.get("per_seed", [])))
    if len(pairs) > 1:
        out["per_seed"] = [{"seed": s, "mean": round(float((x["raw"] - y["raw"]).mean()), 5),
                            "effect": round(float((x["effect"] - y["effect"]).mean()), 5)}
                           for s, (x, y) in enumerate(pairs)]
    if "titled" in a and "titled" in b:   # the diagnostic: B with its title left in
        t = a["titled"] - b["titled"]
        out["titled"] = {"mean": round(float(t.mean()), 5), "ci95": bootstrap_ci(t, seed)}
    return out


# ---------------------------------------------------------------- picture

def _bars(ax, rows, conds, get, ylabel, chance):
    for j, (cond, color) in enumerate(conds):
        w = 0.78 / len(conds)
        xs = [i + (j - (len(conds) - 1) / 2) * w for i in range(len(rows))]
        stats = [get(r, cond) for _, r in rows]
        acc = [st["acc"] for st in stats]
        err = [[a - st["ci95"][0] for a, st in zip(acc, stats)], [st["ci95"][1] - a for a, st in zip(acc, stats)]]
        ax.bar(xs, acc, width=w * 0.96, color=color, label=cond, yerr=err, capsize=3)
    ax.axhline(chance, color="k", lw=0.8, ls="--", label=f"chance {chance:.2f}")
    top = max([get(r, c)["ci95"][1] for _, r in rows for c, _ in conds] + [chance])
    ax.set_ylim(0, top + 0.1)   # room for the legend above the bars
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{n}\nMLM {r['eval_mlm_loss']:.2f}" for n, r in rows])
    ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=7, ncol=len(conds) + 1, loc="upper left")


def plot(result: dict, path: Path) -> None:
    """Left: raw accuracy per condition; right: the effect reading (linked vs random against A alone)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [("start", result["reference"])] if result.get("reference") else []
    rows += list(result["arms"].items())
    if not rows:
        return
    chance = rows[0][1]["crossdoc"]["chance"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(2.0 + 3.0 * len(rows), 4.4))
    raw = [("linked", "tab:green"), ("random", "tab:orange"), ("none", "tab:gray")]
    if all("titled" in r["crossdoc"] for _, r in rows):   # the diagnostic, B with its title left in
        raw.append(("titled", "tab:blue"))
    _bars(ax1, rows, raw, lambda r, c: r["crossdoc"][c], "raw cloze accuracy (95% CI)", chance)
    _bars(ax2, rows, [("linked", "tab:green"), ("random", "tab:orange")],
          lambda r, c: r["crossdoc"]["effect"][c], "effect: answer raised most vs A alone (95% CI)", chance)
    d = result.get("linkbert_minus_bert")
    sub = (f"; linkbert-bert on linked: raw {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], "
           f"effect {d['effect']['mean']:+.3f} [{d['effect']['ci95'][0]:+.3f}, {d['effect']['ci95'][1]:+.3f}]"
           if d and "effect" in d else "")
    fig.suptitle(f"{Path(result['corpus']).name}, {result['steps']} steps x {result['seeds']} seed(s), "
                 f"n={rows[0][1]['crossdoc']['n']}{sub}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--corpus", required=True, help="linked corpus JSONL (.gz/.bz2) with titles")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder or Hub id (the --init-from one)")
    p.add_argument("--init-from", required=True, help="BERT weights every arm starts from (folder or Hub id)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per arm and seed (--quick: 120; else 300)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds per arm (--quick: 1; else 3)")
    p.add_argument("--out", required=True, help="output folder (datasets, runs, reports, ablation.json/.png)")
    p.add_argument("--quick", action="store_true", help="120 steps, 1 seed, 800 probe items at 128 tokens, 192 MLM windows "
                                                        "(<= 25 min on 2 idle cores)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--candidates", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="split, datasets and probe items")
    p.add_argument("--n", type=int, default=None, help="probe items (--quick: 800, else 1000)")
    p.add_argument("--dupe-factor", type=int, default=None,
                   help="pairs drawn per anchor when building each arm's data (--quick: 1, else 3)")
    p.add_argument("--held-out", type=float, default=None,
                   help="fraction of the documents held out for the probe (0.2); raise it for a small corpus")
    p.add_argument("--titled", action="store_true",
                   help="also score crossdoc's diagnostic `titled` condition (B with its title left in)")
    p.add_argument("--arms", default=",".join(ARMS),
                   help=f"comma list of {', '.join(ALL_ARMS)} (default: {', '.join(ARMS)})")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per training run")
    a = p.parse_args(argv)
    cfg = dict(QUICK if a.quick else FULL)
    cfg.update(lr=a.lr, candidates=a.candidates, titled=a.titled)
    cfg["steps"] = a.steps if a.steps is not None else cfg["steps"]
    cfg["seeds"] = a.seeds if a.seeds is not None else cfg["seeds"]
    if a.n is not None:
        cfg["n"] = a.n
    if a.dupe_factor is not None:
        if a.dupe_factor < 1:
            p.error(f"--dupe-factor {a.dupe_factor}: give >= 1")
        cfg["dupe_factor"] = a.dupe_factor
    if a.held_out is not None:
        if not 0 < a.held_out < 0.9:
            p.error(f"--held-out {a.held_out}: give a fraction between 0 and 0.9")
        cfg["held_out"] = a.held_out
    bad = [x for x in a.arms.split(",") if x not in ALL_ARMS]
    if bad or cfg["steps"] < 1 or cfg["seeds"] < 1:
        p.error(f"--arms {a.arms} --steps {cfg['steps']} --seeds {cfg['seeds']}: arms from {', '.join(ALL_ARMS)}, "
                "steps and seeds >= 1")
    return a, cfg


def prepare(args, cfg, out: Path) -> tuple[list[Doc], Path, dict[str, Path]]:
    """Split, write the training/held-out corpora, build each arm's dataset; check the split held."""
    docs = read_corpus(args.corpus)
    held = split_documents(docs, cfg["held_out"], args.seed)
    train_ids = {d.id for d in docs} - held
    held_corpus, train_corpus = out / "corpus" / "heldout.jsonl", out / "corpus" / "train.jsonl"
    write_corpus(held_corpus, docs, held)
    write_corpus(train_corpus, docs, train_ids)
    log(f"{len(docs)} documents: {len(train_ids)} train, {len(held)} held out -> {held_corpus}")
    datasets, titles = {}, {d.id: d.title for d in docs}
    for name in args.arms.split(","):
        corpus = (similarity_corpus(train_corpus, out / "corpus" / "sim.jsonl") if name == "linkbert-sim" else
                  untitled_corpus(out / "corpus" / "train-notitle.jsonl", docs, train_ids) if name in NOTITLE_ARMS
                  else train_corpus)
        if corpus is None:
            continue
        data = build_dataset(corpus, args.tokenizer, out / "data" / name, ALL_ARMS[name], cfg["max_seq_len"], args.seed,
                             cfg["dupe_factor"])
        used, pairs, mean_len = dataset_doc_ids(data)
        if used & held:
            raise SystemExit(f"bench_ablation: {name}: held-out documents in training pairs: {sorted(used & held)[:5]}")
        log(f"{name}: {pairs} pairs ({mean_len:.1f} tokens each), no held-out document in any pair -> {data}")
        datasets[name] = data
        cfg.setdefault("tokens_per_pair", {})[name] = round(mean_len, 2)
        cfg.setdefault("probe_like_pairs", {})[name] = like = probe_like_pairs(data, titles)
        log(f"{name}: A mentions the partner's title in {like['a_mentions_partner']} pairs "
            f"({like['partner_spells_title']} with the title spelled in the partner too)")
    return [d for d in docs if d.id in held], held_corpus, datasets


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")   # DeepSpeed would pick cpu itself, with a warning
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ.get("ABLATION_SCORE_THREADS", "2")))
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held_docs, held_corpus, datasets = prepare(args, cfg, out)
    from data_prep.hub import resolve
    init = resolve(args.init_from, "--init-from")
    result = {"corpus": str(args.corpus), "steps": cfg["steps"], "seeds": cfg["seeds"], "config": cfg,
              "init_from": str(args.init_from), "arms": {}, "skipped_arms": sorted(set(args.arms.split(",")) - set(datasets))}
    ref, _ = score_arm("start", [init], held_corpus, held_docs, out, cfg, args.seed)
    result["reference"] = ref
    if ref["crossdoc"]["n"] < MIN_ITEMS:   # a paired 0/1 difference over n items: 95% half-width ~ 1/sqrt(n)
        log(f"only {ref['crossdoc']['n']} probe items (the held-out documents hold no more): intervals will be "
            f"about +-{1 / ref['crossdoc']['n'] ** 0.5:.2f} wide, too wide to resolve effects of a few points; "
            f"use a larger corpus or a larger --held-out (now {cfg['held_out']})")
    result["wall_s"] = round(time.time() - t0, 1)
    linked = {}
    for name, data in datasets.items():
        t = time.time()
        exports = [train(data, str(init), out / "runs" / f"{name}-seed{s}", cfg["steps"], s, cfg, args.timeout)
                   for s in range(cfg["seeds"])]
        log(f"{name}: trained {cfg['seeds']} x {cfg['steps']} steps in {time.time() - t:.0f} s")
        result["arms"][name], linked[name] = score_arm(name, exports, held_corpus, held_docs, out, cfg, args.seed)
        for key, (arm, base) in DIFFERENCES.items():
            if arm in linked and base in linked:
                result[key] = arm_difference(linked[arm], linked[base], args.seed)
        result["wall_s"] = round(time.time() - t0, 1)
        (out / "ablation.json").write_text(json.dumps(result, indent=1) + "\n")   # after each arm: a stopped
        plot(result, out / "ablation.png")                                            # run keeps what it scored
    rows = [f"{n}: linked {a['crossdoc']['linked']['acc']:.3f} random {a['crossdoc']['random']['acc']:.3f} "
            f"none {a['crossdoc']['none']['acc']:.3f} linked-random {a['crossdoc']['linked_minus_random']['mean']:+.3f} "
            f"{a['crossdoc']['linked_minus_random']['ci95']}; effect linked-random "
            f"{a['crossdoc']['effect']['linked_minus_random']['mean']:+.3f} "
            f"{a['crossdoc']['effect']['linked_minus_random']['ci95']} {'valid' if a['crossdoc']['valid'] else 'NOT valid'}"
            f"; MLM {a['eval_mlm_loss']:.3f}"
            + (f"; titled {a['crossdoc']['titled']['acc']:.3f}" if "titled" in a["crossdoc"] else "")
            for n, a in [("start", ref), *result["arms"].items()]]
    print("\n".join(rows))
    for key, (name, base) in DIFFERENCES.items():
        if key in result:
            d = result[key]
            seeds = (" (per seed, effect: " + ", ".join(f"{r['effect']:+.3f}" for r in d["per_seed"]) + ")"
                     if "per_seed" in d else "")
            print(f"{name} - {base} on linked: raw {d['mean']:+.3f} {d['ci95']}, "
                  f"effect {d['effect']['mean']:+.3f} {d['effect']['ci95']}{seeds}")
    print(f"ablation: {out / 'ablation.json'} {out / 'ablation.png'} ({result['wall_s'] / 60:.1f} min)"
          + (f"; skipped: {', '.join(result['skipped_arms'])}" if result["skipped_arms"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

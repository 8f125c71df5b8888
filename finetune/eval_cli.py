"""`linkbert-eval`: zero-shot evaluations of a Hugging Face checkpoint (no fine-tuning).

    linkbert-eval crossdoc --model HF_DIR_OR_HUB_ID --corpus CORPUS.jsonl[.gz] --out REPORT.json
        [--n 1000] [--candidates 5] [--seed 0] [--max-seq-len 256]

Errors a user can cause are one line (exit 2).
"""
from __future__ import annotations

import argparse
import sys

from finetune.errors import FinetuneError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linkbert-eval", description=__doc__.strip().splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("crossdoc", help="cross-document cloze: does the model use a linked document?",
                       description="Mask a mention of a linked document's title in a document and rank the "
                                   "title among same-length distractors with the linked document, a random "
                                   "one, or nothing as second segment (docs/ablation.md).")
    c.add_argument("--model", required=True, help="Hugging Face masked-LM folder (BERT family) or Hub id")
    c.add_argument("--corpus", required=True, help="corpus JSONL (.gz/.bz2): {id, title, text, links} per line")
    c.add_argument("--out", required=True, help="REPORT.json; the per-item outcomes go beside it "
                                                "(REPORT.examples.jsonl)")
    c.add_argument("--n", type=int, default=1000, help="items drawn (fewer when the corpus has fewer; default 1000)")
    c.add_argument("--candidates", type=int, default=5, help="titles ranked per item, the answer included (5)")
    c.add_argument("--seed", type=int, default=0, help="items, distractors and random documents (0)")
    c.add_argument("--max-seq-len", type=int, default=256, help="tokens per input, both segments (256)")
    c.add_argument("--batch-size", type=int, default=32, help="inputs per forward pass (32)")
    c.add_argument("--titled", action="store_true",
                   help="also score a diagnostic `titled` condition: B's text with its title left in (the answer "
                        "can be copied), to tell copying the title from reading B")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from finetune.crossdoc import run_crossdoc, summary_line
        rep = run_crossdoc(args.model, args.corpus, args.out, n=args.n, candidates=args.candidates,
                           seed=args.seed, max_seq_len=args.max_seq_len, batch_size=args.batch_size,
                           titled=args.titled)
    except FinetuneError as e:
        print(f"linkbert-eval {args.command}: error: {e}", file=sys.stderr)
        return 2
    print(summary_line(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())

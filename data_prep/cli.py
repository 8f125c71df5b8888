"""`linkbert-prep`: convert real corpora, build link-aware pair shards, inspect them, train a vocabulary.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only wires them, so tests call those functions directly.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from data_prep.errors import PrepError

SUBCOMMANDS = {
    "convert": ("data_prep.convert", "turn PubMed XML, Wikipedia dumps or HTML folders into corpus JSONL"),
    "links": ("data_prep.links", "give a corpus links: each document's k most similar documents and/or an edge list"),
    "build": ("data_prep.build", "tokenize, segment, link and pair a corpus into HDF5 shards"),
    "verify": ("data_prep.verify", "check every shard's size, pair count and sha256 against the manifest"),
    "inspect": ("data_prep.inspect", "show a prepared dataset's stats, decoded pairs and a plot"),
    "train-tokenizer": ("data_prep.train_tokenizer", "train a WordPiece vocabulary on a corpus"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkbert-prep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (modname, help_) in SUBCOMMANDS.items():
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except PrepError as e:   # every user error of this package (ShardError included); bugs keep tracebacks
        print(f"linkbert-prep {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # temporary files are removed on the way out (staging folder, .partial)
        print(f"linkbert-prep {args.command}: interrupted (Ctrl-C): temporary files removed, a previous output "
              "left as it was", file=sys.stderr)
        return 130


def entry() -> None:
    """Console script: after a Ctrl-C (exit 130) leave at once. Cleanup is done by then (staging folder and
    partial files removed, the folder lock released); a normal interpreter exit would still join the worker
    pool's queue feeder thread, blocked on a pipe its stopped workers no longer read, and hang. The workers
    die with this process (PR_SET_PDEATHSIG)."""
    rc = main()
    if rc == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(rc)


if __name__ == "__main__":
    entry()

"""Convert real sources into the corpus JSON Lines that `linkbert-prep build` reads (docs/formats.md section 1).

Kinds: PubMed XML, Wikipedia dumps / WikiExtractor output, folders of HTML pages, dictd dictionaries."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.converters import KINDS, kind_module
from data_prep.converters.common import ConvertStats, CorpusWriter, expand_inputs
from data_prep.errors import PrepError


def convert(kind: str, inputs: list[str | Path], out: str | Path, progress: bool = True, **options) -> dict:
    """Convert ``inputs`` (files or directories) of ``kind`` into ``out``; returns the stats summary
    (also written to ``<out>.stats.json``). ``options`` go to the kind's ``iter_documents``."""
    if kind not in KINDS:
        raise PrepError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    mod = kind_module(kind)
    stats = ConvertStats(kind)
    out = Path(out)
    # A previous run's output in an input folder is not an input (a .jsonl would pass for WikiExtractor's).
    own = {out.with_name(out.name + suffix).resolve() for suffix in ("", ".partial", ".stats.json")}
    if kind == "html":
        # A folder is one site: ids are paths relative to it, so it is not expanded into files.
        paths = [Path(p) for p in inputs]
        for p in paths:
            if not p.is_dir():
                raise PrepError(f"{p}: html input must be a folder of HTML pages")
    else:
        named = {Path(p).resolve() for p in inputs}
        paths = expand_inputs(inputs, lambda q: mod.accepts(q) and (q.resolve() not in own or q.resolve() in named))
    stats.inputs = [str(p) for p in paths]
    if any(p.resolve() in own for p in paths):
        raise PrepError(f"--out {out} is also an input; choose another output path")
    if kind in ("wikipedia", "pubmed"):
        options.setdefault("work_dir", out.parent)  # staging files beside the output, not in a small /tmp
    with CorpusWriter(out, stats, track_ids=getattr(mod, "TRACK_IDS", True)) as writer:
        writer.write_all(mod.iter_documents(paths, stats, progress=progress, **options))
        return writer.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=sorted(KINDS), help="source kind")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="input files or directories (html: the site's folder; dictd: the .index file)")
    p.add_argument("--out", required=True, help="output corpus: .jsonl, .jsonl.gz or .jsonl.bz2")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they show only when stderr is a terminal)")
    p.add_argument("--workers", type=int, default=1,
                   help="pubmed: input files converted in parallel; wikipedia: processes parsing wikitext "
                        "(output identical for any number; default 1)")
    p.add_argument("--keep-title-only", action="store_true",
                   help="pubmed: keep citations that have a title but no abstract (skipped by default)")


def run(args: argparse.Namespace) -> int:
    options = {}
    if args.kind == "pubmed" and args.keep_title_only:
        options["keep_title_only"] = True
    if args.workers < 1:
        raise PrepError(f"--workers {args.workers}: give 1 or more")
    if args.kind in ("wikipedia", "pubmed") and args.workers > 1:
        options["workers"] = args.workers
    # Bars only on a terminal: in a batch job's log, carriage-return redraws are noise.
    progress = not args.no_progress and sys.stderr.isatty()
    summary = convert(args.kind, args.inputs, args.out, progress=progress, **options)
    for line in _summary_lines(summary):
        print(line, file=sys.stdout)
    print(f"wrote {summary['out']} (stats: {summary['out']}.stats.json)")
    return 0


def _summary_lines(summary: dict) -> list[str]:
    docs = summary["documents"]
    lines = [f"{summary['kind']}: {len(summary['inputs'])} input(s), {docs['read']} documents read, "
             f"{docs['written']} written, {sum(docs['skipped'].values())} skipped in {summary['seconds']} s"]
    lines += [f"  skipped ({reason}): {n}" for reason, n in docs["skipped"].items()]
    lines += [f"  links {what}: {n}" for what, n in summary["links"].items()]
    lines += [f"  {what}: {n}" for what, n in summary["other"].items()]
    return lines

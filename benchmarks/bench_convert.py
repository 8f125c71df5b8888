"""`linkbert-prep convert` throughput and memory beside the read-and-parse ceiling, in one run.

Each measurement runs in a fresh process (its own peak RSS, interpreter start-up excluded):
  pubmed ceiling : gunzip + lxml iterparse of every PubmedArticle, cleared, nothing extracted
  pubmed convert : the whole converter (fields, sections, cited PMIDs, JSON, gzip output)
  wiki ceiling   : bunzip2 + iterparse of every page, nothing extracted
  wiki convert W : the whole converter with --workers W (wikitext parsing dominates)
and prints docs/s, MB/s (compressed input and uncompressed XML), peak RSS and the ratios.

    .venv/bin/python benchmarks/bench_convert.py [--pubmed FILE.xml.gz] [--wiki FILE.xml.bz2] [--workers 2]

Defaults are the real files in ../shared/data when that folder exists (a developer checkout).
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

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def _uncompressed_size(path: str) -> int:
    import bz2
    import gzip

    opener = gzip.open if path.endswith(".gz") else bz2.open if path.endswith(".bz2") else open
    n = 0
    with opener(path, "rb") as f:
        while chunk := f.read(1 << 22):
            n += len(chunk)
    return n


def child(args: list[str]) -> dict:
    what, path = args[0], args[1]
    me = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = me.ru_utime + me.ru_stime
    t0 = time.perf_counter()
    if what in ("pubmed-ceiling", "wiki-ceiling"):
        from lxml import etree

        from data_prep.converters.common import open_input

        stream, bar = open_input(Path(path), progress=False)
        tag = "PubmedArticle" if what == "pubmed-ceiling" else "{*}page"
        n = 0
        for _, el in etree.iterparse(stream, events=("end",), tag=tag, huge_tree=True):
            n += 1
            el.clear(keep_tail=False)
            while el.getprevious() is not None:
                del el.getparent()[0]
        result = {"read": n, "written": 0}
    else:
        from data_prep.convert import convert

        kind, workers = ("pubmed", 1) if what == "pubmed" else ("wikipedia", int(args[2]))
        with tempfile.TemporaryDirectory() as tmp:
            opts = {"workers": workers} if kind == "wikipedia" else {}
            s = convert(kind, [path], Path(tmp) / "out.jsonl.gz", progress=False, **opts)
        result = {"read": s["documents"]["read"], "written": s["documents"]["written"]}
    result["seconds"] = time.perf_counter() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu_seconds"] = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - cpu0
    self_kb, kids_kb = me.ru_maxrss, kids.ru_maxrss
    result["rss_mb"] = self_kb / 1024
    result["worker_rss_mb"] = kids_kb / 1024
    return result


def measure(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--child", *args], env=env, check=True,
                         capture_output=True, text=True, timeout=3600).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(name: str, r: dict, size: int, raw: int) -> None:
    s, c = r["seconds"], r["cpu_seconds"]
    extra = f", largest worker {r['worker_rss_mb']:.0f} MB" if r["worker_rss_mb"] else ""
    print(f"{name:18s} {r['read']:>6d} read {r['written']:>6d} written | wall {s:6.2f} s {r['read'] / s:7.0f} docs/s "
          f"{size / s / 1e6:5.2f} MB/s in {raw / s / 1e6:5.1f} MB/s XML | CPU {c:6.2f} s {r['read'] / c:7.0f} docs/s "
          f"{raw / c / 1e6:5.1f} MB/s XML | peak RSS {r['rss_mb']:.0f} MB{extra}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2:])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pubmed", default=str(SHARED / "pubmed20n0014.xml.gz"))
    p.add_argument("--wiki", default=str(SHARED / "enwiki-sample.xml.bz2"))
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    print(f"cores: {os.cpu_count()}")
    if Path(a.pubmed).is_file():
        size, raw = os.path.getsize(a.pubmed), _uncompressed_size(a.pubmed)
        print(f"pubmed: {a.pubmed} ({size / 1e6:.1f} MB, {raw / 1e6:.1f} MB XML)")
        ceil, ours = measure("pubmed-ceiling", a.pubmed), measure("pubmed", a.pubmed)
        report("ceiling (parse)", ceil, size, raw)
        report("convert", ours, size, raw)
        print(f"convert / ceiling throughput: wall {ceil['seconds'] / ours['seconds']:.2f}, "
              f"CPU {ceil['cpu_seconds'] / ours['cpu_seconds']:.2f}")
    else:
        print(f"pubmed: {a.pubmed} not found; pass --pubmed FILE")
    if Path(a.wiki).is_file():
        size, raw = os.path.getsize(a.wiki), _uncompressed_size(a.wiki)
        print(f"wikipedia: {a.wiki} ({size / 1e6:.1f} MB, {raw / 1e6:.1f} MB XML)")
        ceil = measure("wiki-ceiling", a.wiki)
        one = measure("wikipedia", a.wiki, "1")
        many = measure("wikipedia", a.wiki, str(a.workers))
        report("ceiling (parse)", ceil, size, raw)
        report("convert 1 worker", one, size, raw)
        report(f"convert {a.workers} workers", many, size, raw)
        print(f"convert {a.workers} workers / 1 worker speed-up (wall): {one['seconds'] / many['seconds']:.2f}; "
              f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    else:
        print(f"wikipedia: {a.wiki} not found; pass --wiki FILE")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Wikipedia: MediaWiki XML dumps (`.xml`, `.xml.bz2`) and WikiExtractor output with links kept
(``wikiextractor --json --links``, or its ``<doc ...>`` form), detected per file from its first bytes.

Collect-then-resolve: every input is read once, articles are staged (gzip, in ``work_dir``) with their
link targets as written, redirects are collected on the way; then the staged articles are written with
each target followed through the redirect chain to an article title. A dump is decompressed and
parsed once (bzip2 dominates the cost of a full dump); the staging file is cheap to re-read.
"""
from __future__ import annotations

import contextlib
import gzip
import html
import itertools
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from lxml import etree
from tqdm import tqdm

from data_prep.converters.common import ConvertStats, iter_xml_elements, open_input
from data_prep.converters.wikitext import DEFAULT_NAMESPACES, normalize_title, wikitext_to_text
from data_prep.errors import PrepError
from data_prep.parallel import spawn_pool

_WIKIEXTRACTOR_FILE = re.compile(r"^wiki_\d+(\.bz2|\.gz)?$")
_ANCHOR = re.compile(r'<a href="([^"]*)">(.*?)</a>', re.S)
_DOC_START = re.compile(r"^<doc\b([^>]*)>\s*$")
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_REDIRECT_TEXT = re.compile(r"^\s*#REDIRECT\s*:?\s*\[\[([^\]|]+)", re.I)
MAX_REDIRECT_HOPS = 32


def accepts(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".stats.json"):  # a conversion's summary, not WikiExtractor output
        return False
    return bool(name.endswith((".xml", ".xml.bz2", ".xml.gz", ".json", ".jsonl", ".json.bz2", ".jsonl.bz2",
                               ".json.gz", ".jsonl.gz")) or _WIKIEXTRACTOR_FILE.match(name))


def sniff(path: Path) -> str:
    """"dump", "wikiextractor-json" or "wikiextractor-doc", from the first bytes of the (decompressed) file."""
    stream, bar = open_input(path, progress=False)
    try:
        head = stream.read(4096)
    except (OSError, EOFError) as e:
        raise PrepError(f"{path}: cannot read ({e}); is the file complete and of the right type?") from None
    finally:
        stream.close()
        bar.close()
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if text.startswith("<mediawiki") or (text.startswith("<?xml") and "<mediawiki" in text):
        return "dump"
    if text.startswith("<doc"):
        return "wikiextractor-doc"
    if text.startswith("{"):
        return "wikiextractor-json"
    raise PrepError(f"{path}: neither a MediaWiki XML dump nor WikiExtractor output (starts with "
                    f"{text[:40]!r}); give pages-articles*.xml[.bz2] or wikiextractor --json --links output")


def _count_not_article(stats: ConvertStats, counts: dict[str, int]) -> None:
    for reason, n in counts.items():
        stats.links["read"] += n
        stats.links[f"not_article_{reason}"] += n


def read_dump(path: Path, stats: ConvertStats, redirects: dict[str, str], progress: bool
              ) -> Iterator[tuple[str, str, frozenset]]:
    """Article pages of a dump as (title, wikitext, namespace names); redirects go into ``redirects``."""
    namespaces = frozenset(DEFAULT_NAMESPACES)
    for el in iter_xml_elements(path, ("{*}page", "{*}siteinfo"), ("mediawiki",), progress=progress):
        if etree.QName(el).localname == "siteinfo":
            namespaces |= {n.text.casefold() for n in el.iter("{*}namespace") if n.text}
        else:
            page = _dump_page(el, stats, redirects, namespaces)
            if page is not None:
                yield page


def _dump_page(el, stats: ConvertStats, redirects: dict[str, str], namespaces):
    stats.documents["read"] += 1
    title = " ".join((el.findtext("{*}title") or "").split())
    ns = (el.findtext("{*}ns") or "").strip()
    if not ns:  # old export formats have no <ns>: the title prefix says it
        ns = "0" if normalize_title(title, namespaces)[0] else "other"
    text = el.findtext("{*}revision/{*}text") or ""
    red = el.find("{*}redirect")
    target = red.get("title") if red is not None else None
    if target is None:
        m = _REDIRECT_TEXT.match(text)
        target = m.group(1) if m else None
    if ns != "0":
        stats.skip("not_article_namespace")
        return None
    if not title:
        stats.skip("no_title")
        return None
    if target is not None:
        resolved, _ = normalize_title(target, namespaces)
        if resolved:
            redirects[title] = resolved
        stats.skip("redirect")
        return None
    return title, text, namespaces


def _parse_page(page: tuple[str, str, frozenset]) -> tuple[str, str, list[str], dict[str, int]]:
    title, wikitext, namespaces = page
    return (title, *wikitext_to_text(wikitext, namespaces))


def parse_pages(pages: Iterator[tuple[str, str, frozenset]], stats: ConvertStats, pool=None,
                batch: int = 256) -> Iterator[dict]:
    """Wikitext to documents, in input order. With a process pool, ``batch`` pages at a time, the next
    batch read from the dump while the workers parse this one; two batches in flight bound the memory
    (``Pool.imap`` would read the whole dump ahead into its task queue)."""
    if pool is None:
        yield from _documents(map(_parse_page, pages), stats)
        return
    pending = None
    while True:
        chunk = list(itertools.islice(pages, batch))
        upcoming = pool.map_async(_parse_page, chunk, chunksize=max(1, batch // 64)) if chunk else None
        if pending is not None:
            yield from _documents(pending.get(), stats)
        if upcoming is None:
            return
        pending = upcoming


def _documents(parsed, stats: ConvertStats) -> Iterator[dict]:
    for title, plain, links, not_article in parsed:
        _count_not_article(stats, not_article)
        stats.links["read"] += len(links)
        if not plain:
            stats.skip("empty_text")
            stats.links["dropped_with_skipped_document"] += len(links)
            continue
        yield {"id": title, "title": title, "text": plain, "links": links}


def strip_anchors(text: str, stats: ConvertStats) -> tuple[str, list[str]]:
    """WikiExtractor's ``<a href="Target%20name">anchor</a>``: anchor text kept, targets decoded.

    WikiExtractor 3.x HTML-escapes its own anchors (``&lt;a href=...&gt;``), so entities are decoded
    first; hrefs are URL-quoted, so they hold no quote characters either way."""
    links: list[str] = []

    def repl(m: re.Match) -> str:
        href = m.group(1)
        stats.links["read"] += 1
        if "://" in href or href.startswith("//"):
            stats.links["not_article_external"] += 1
        else:
            target, reason = normalize_title(unquote(href))
            if target is None:
                stats.links[f"not_article_{reason}"] += 1
            else:
                links.append(target)
        return m.group(2)

    text = _ANCHOR.sub(repl, html.unescape(text))
    lines = [" ".join(ln.split()) for ln in text.split("\n")]
    return "\n".join(ln for ln in lines if ln), links


def _extracted_doc(path: Path, where: str, title, text, stats: ConvertStats) -> Iterator[dict]:
    stats.documents["read"] += 1
    if not isinstance(title, str) or not title.strip():
        raise PrepError(f"{path}:{where}: field 'title' missing or not a string; is this WikiExtractor output?")
    if not isinstance(text, str):
        raise PrepError(f"{path}:{where}: field 'text' missing or not a string; is this WikiExtractor output?")
    title = " ".join(html.unescape(title).split())
    plain, links = strip_anchors(text, stats)
    first, _, rest = plain.partition("\n")
    if first == title:  # WikiExtractor repeats the title as the first line of the text
        plain = rest
    if not plain.strip():
        stats.skip("empty_text")
        stats.links["dropped_with_skipped_document"] += len(links)
        return
    yield {"id": title, "title": title, "text": plain, "links": links}


def _lines(path: Path, progress: bool) -> Iterator[tuple[int, str]]:
    stream, bar = open_input(path, progress)
    try:
        for lineno, raw in enumerate(stream, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PrepError(f"{path}:{lineno}: not valid UTF-8 ({e.reason})") from None
    except (OSError, EOFError) as e:
        raise PrepError(f"{path}: cannot read ({e}); is the file complete and of the right type?") from None
    finally:
        stream.close()
        bar.close()


def read_wikiextractor_json(path: Path, stats: ConvertStats, progress: bool) -> Iterator[dict]:
    for lineno, line in _lines(path, progress):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise PrepError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected wikiextractor --json lines") from None
        if not isinstance(rec, dict):
            raise PrepError(f"{path}:{lineno}: expected a JSON object with 'title' and 'text'")
        yield from _extracted_doc(path, str(lineno), rec.get("title"), rec.get("text"), stats)


def read_wikiextractor_doc(path: Path, stats: ConvertStats, progress: bool) -> Iterator[dict]:
    start, attrs, body = 0, {}, []
    for lineno, line in _lines(path, progress):
        if start == 0:
            m = _DOC_START.match(line.strip())
            if m:
                start, attrs, body = lineno, dict(_ATTR.findall(m.group(1))), []
            elif line.strip():
                raise PrepError(f"{path}:{lineno}: text outside a <doc> ... </doc> block")
        elif line.strip() == "</doc>":
            yield from _extracted_doc(path, str(start), attrs.get("title"), "".join(body), stats)
            start = 0
        else:
            body.append(line)
    if start:
        raise PrepError(f"{path}:{start}: <doc> opened here is never closed; is the file complete?")


def resolve(target: str, redirects: dict[str, str], articles: set[str]) -> tuple[str, str]:
    """Follow a link through redirects: (title, how) with how in direct/redirect/unresolved/loop."""
    if target in articles or target not in redirects:
        return target, "direct" if target in articles else "unresolved"
    seen = {target}
    t = target
    for _ in range(MAX_REDIRECT_HOPS):
        t = redirects[t]
        if t in articles:
            return t, "redirect"
        if t not in redirects:
            return t, "unresolved"
        if t in seen:
            return target, "loop"
        seen.add(t)
    return target, "loop"


_HOW = {"direct": "resolved_direct", "redirect": "resolved_via_redirect", "unresolved": "unresolved_kept",
        "loop": "redirect_loop_kept"}
_READERS = {"wikiextractor-json": read_wikiextractor_json, "wikiextractor-doc": read_wikiextractor_doc}


def iter_documents(inputs: list[Path], stats: ConvertStats, progress: bool = True,
                   work_dir: str | Path | None = None, workers: int = 1) -> Iterator[dict]:
    """``workers`` > 1: several input files (split dumps, WikiExtractor folders) are read in that many
    processes, one file each; a single dump has its wikitext parsed in that many processes
    (mwparserfromhell is the bottleneck). The output is identical whatever the number."""
    redirects: dict[str, str] = {}
    articles: set[str] = set()
    with contextlib.ExitStack() as stack:
        # The folder first: on exit the pool is terminated before the folder its workers write in is removed.
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=work_dir, prefix=".wikipedia-stage-")))
        pool = stack.enter_context(spawn_pool(workers)) if workers > 1 else None
        stage = tmp / "articles.jsonl.gz"
        staged = 0
        with gzip.open(stage, "wt", encoding="utf-8", compresslevel=1) as f:
            for doc_id, line in _staged(inputs, stats, progress, pool, redirects, tmp):
                articles.add(doc_id)
                f.write(line + "\n")
                staged += 1
        stats.other["redirects_collected"] = len(redirects)
        with gzip.open(stage, "rt", encoding="utf-8") as f:
            for line in tqdm(f, total=staged, desc="resolving links", unit="doc", disable=not progress,
                             leave=False):
                doc = json.loads(line)
                resolved = []
                for target in doc["links"]:
                    title, how = resolve(target, redirects, articles)
                    stats.links[_HOW[how]] += 1
                    resolved.append(title)
                doc["links"] = resolved
                yield doc


def _file_documents(path: Path, stats: ConvertStats, redirects: dict[str, str], progress: bool, pool
                    ) -> Iterator[dict]:
    form = sniff(path)
    stats.other[f"inputs_{form}"] += 1
    if form == "dump":
        return parse_pages(read_dump(path, stats, redirects, progress), stats, pool)
    return _READERS[form](path, stats, progress)


def _file_to_part(job: tuple[str, str]) -> tuple[str, list[str], dict[str, str], dict]:
    """Worker: one input file's articles (links as written) to a part file, plus its redirects and counts."""
    path, part = job
    stats, redirects, ids = ConvertStats("wikipedia"), {}, []
    with open(part, "w", encoding="utf-8") as f:
        for doc in _file_documents(Path(path), stats, redirects, False, None):
            ids.append(doc["id"])
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    counts = {name: dict(getattr(stats, name)) for name in ("documents", "skipped", "links", "other")}
    return part, ids, redirects, counts


def _staged(inputs: list[Path], stats: ConvertStats, progress: bool, pool, redirects: dict[str, str],
            tmp: Path) -> Iterator[tuple[str, str]]:
    """(id, JSON line) of every article in input order, redirects collected into ``redirects``."""
    if pool is None or len(inputs) < 2:
        for path in inputs:
            for doc in _file_documents(path, stats, redirects, progress, pool):
                yield doc["id"], json.dumps(doc, ensure_ascii=False)
        return
    jobs = [(str(p), str(tmp / f"part{i:06d}.jsonl")) for i, p in enumerate(inputs)]
    done = pool.imap(_file_to_part, jobs)  # in input order; workers run ahead on disk, not in memory
    for part, ids, file_redirects, counts in tqdm(done, total=len(jobs), desc="wikipedia files", unit="file",
                                                  disable=not progress):
        redirects.update(file_redirects)  # later files win, as when read one after another
        for name, counter in counts.items():
            getattr(stats, name).update(counter)
        with open(part, encoding="utf-8") as f:
            for doc_id, line in zip(ids, f):
                yield doc_id, line.rstrip("\n")
        os.unlink(part)

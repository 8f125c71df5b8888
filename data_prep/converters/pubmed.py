"""MEDLINE/PubMed baseline and update XML (`.xml`, `.xml.gz`): one document per citation, cited PMIDs as links.

Streamed with lxml ``iterparse``: each ``PubmedArticle`` is read, turned into a record and cleared, and
the finished siblings are deleted from the root, so memory stays flat for a 20 GB input. Duplicate
PMIDs (a citation revised in an update file) are found with a bitmap indexed by PMID (~5 MB for all
of PubMed) instead of a set of strings (~2 GB): the first record read is kept, later ones counted.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from data_prep.converters.common import ConvertStats, SerializedDoc, iter_xml_elements
from data_prep.errors import PrepError
from data_prep.parallel import spawn_pool

TRACK_IDS = False  # PMIDs are de-duplicated here with a bitmap
_RECORDS = ("PubmedArticle", "PubmedBookArticle", "DeleteCitation")
# Placeholder titles MEDLINE uses for citations that have none.
_NO_TITLE = {"", "[not available].", "not available", "[not available]"}
_UNLABELLED = {"", "UNLABELLED", "UNASSIGNED"}


def _is_pmid(s: str) -> bool:
    return 0 < len(s) <= 10 and s.isascii() and s.isdigit()


@dataclass
class AbstractSection:
    label: str          # the Label attribute as written ("BACKGROUND", "METHOD"), "" if unlabelled
    category: str       # NlmCategory ("BACKGROUND", "METHODS", ...), "" if absent
    text: str


@dataclass
class Citation:
    pmid: str
    title: str
    sections: list[AbstractSection] = field(default_factory=list)
    cited: list[str] = field(default_factory=list)  # cited PMIDs, in order, de-duplicated
    cited_read: int = 0                              # cited ids as written, before de-duplication
    bad_cited: int = 0                               # cited ids that are not PMIDs (counted, dropped)

    @property
    def abstract(self) -> str:
        return "\n".join(f"{s.label}: {s.text}" if s.label else s.text for s in self.sections)

    @property
    def text(self) -> str:
        return "\n".join(p for p in (self.title, self.abstract) if p)


def accepts(path: Path) -> bool:
    return path.name.lower().endswith((".xml", ".xml.gz"))


def _text(el) -> str:
    # itertext: titles and abstracts hold inline markup (<i>, <sup>, MathML) whose words belong in the text.
    return " ".join("".join(el.itertext()).split()) if el is not None else ""


def _citation(rec) -> Citation:
    doc = rec.find("MedlineCitation")
    if doc is None:
        doc = rec.find("BookDocument")
    if doc is None:
        raise ValueError("neither MedlineCitation nor BookDocument")
    pmid = (doc.findtext("PMID") or "").strip()
    art = doc.find("Article")
    holder = art if art is not None else doc
    title = _text(holder.find("ArticleTitle"))
    if not title and art is None:
        title = _text(doc.find("Book/BookTitle"))
    if title.casefold() in _NO_TITLE:
        title = ""
    sections = []
    for at in holder.findall("Abstract/AbstractText"):
        text = _text(at)
        if text:
            label = (at.get("Label") or "").strip()
            sections.append(AbstractSection("" if label.upper() in _UNLABELLED else label,
                                            (at.get("NlmCategory") or "").strip(), text))
    cited: list[str] = []
    bad = 0
    # Document order: CommentsCorrections sit in MedlineCitation, the ReferenceList after it (in PubmedData
    # for articles, in BookDocument for books).
    ids = [p.text for p in doc.iterfind("CommentsCorrectionsList/CommentsCorrections[@RefType='Cites']/PMID")]
    ids += [a.text for a in rec.iterfind(".//ReferenceList//Reference/ArticleIdList/ArticleId[@IdType='pubmed']")]
    seen = set()
    for raw in ids:
        pid = (raw or "").strip()
        if not _is_pmid(pid):
            bad += 1
        elif pid not in seen:
            seen.add(pid)
            cited.append(pid)
    return Citation(pmid, title, sections, cited, len(ids), bad)


def iter_citations(path: str | Path, stats: ConvertStats | None = None, progress: bool = False
                   ) -> Iterator[Citation]:
    """Every citation of one PubMed XML file, streamed, with its structured abstract sections.

    ``DeleteCitation`` blocks (update files) are counted in ``stats`` and yield nothing."""
    path = Path(path)
    count = 0
    for el in iter_xml_elements(path, _RECORDS, ("PubmedArticleSet", "PubmedBookArticleSet"),
                                "; give MEDLINE/PubMed baseline or update XML", progress, load_dtd=False,
                                remove_blank_text=False):
        if el.tag == "DeleteCitation":
            if stats is not None:
                stats.other["delete_citation_pmids_ignored"] += len(el.findall("PMID"))
            continue
        count += 1
        try:
            citation = _citation(el)
        except ValueError as e:
            raise PrepError(f"{path}: line {el.sourceline}: {el.tag} record #{count}: {e}; "
                            "is this MEDLINE/PubMed XML?") from None
        yield citation


def _record(cit: Citation, keep_title_only: bool) -> str:
    """One citation as a tab-separated record: pmid, fate (a skip reason or "doc"), link counts (cited as
    written, not PMIDs, kept), title-less flag, then the document's JSON. Workers write these to part files
    and the main process de-duplicates and counts, so serial and parallel runs share one code path."""
    fate = "doc"
    if not _is_pmid(cit.pmid):
        fate = "no_valid_pmid"
    elif not cit.sections and not cit.title:
        fate = "no_title_no_abstract"
    elif not cit.sections and not keep_title_only:
        fate = "no_abstract"
    payload = ""
    if fate == "doc":
        payload = json.dumps({"id": cit.pmid, "title": cit.title, "text": cit.text, "links": cit.cited},
                             ensure_ascii=False)
    return (f"{cit.pmid if fate != 'no_valid_pmid' else ''}\t{fate}\t{cit.cited_read}\t{cit.bad_cited}\t"
            f"{len(cit.cited)}\t{int(not cit.title)}\t{payload}")


def _file_records(job: tuple[str, str, bool]) -> tuple[str, dict]:
    """Worker: one input file to a part file of records; returns its path and the file's extra counts."""
    path, part, keep_title_only = job
    stats = ConvertStats("pubmed")
    with open(part, "w", encoding="utf-8") as f:
        for cit in iter_citations(path, stats):
            f.write(_record(cit, keep_title_only) + "\n")
    return part, dict(stats.other)


def _records(inputs: list[Path], stats: ConvertStats, progress: bool, keep_title_only: bool, workers: int,
             work_dir) -> Iterator[str]:
    if workers <= 1 or len(inputs) < 2:
        for path in inputs:
            for cit in iter_citations(path, stats, progress):
                yield _record(cit, keep_title_only)
        return
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".pubmed-parts-") as tmp, \
            spawn_pool(workers) as pool:
        jobs = [(str(p), str(Path(tmp) / f"{i:06d}.tsv"), keep_title_only) for i, p in enumerate(inputs)]
        done = pool.imap(_file_records, jobs)  # in input order; workers run ahead on disk, not in memory
        for part, other in tqdm(done, total=len(jobs), desc="pubmed files", unit="file", disable=not progress):
            stats.other.update(other)
            with open(part, encoding="utf-8") as f:
                yield from (line.rstrip("\n") for line in f)
            os.unlink(part)


def iter_documents(inputs: list[Path], stats: ConvertStats, progress: bool = True,
                   keep_title_only: bool = False, workers: int = 1, work_dir=None) -> Iterator:
    """Corpus documents: id = PMID, title, text = title + abstract sections, links = cited PMIDs.

    A citation with no abstract is skipped (counted as ``no_abstract``) unless ``keep_title_only``:
    a ~15-token title gives no contiguous pair and LinkBERT's PubMed corpus was abstracts.
    ``workers`` > 1 converts input files in parallel processes; the output is identical."""
    seen = bytearray()
    for rec in _records(inputs, stats, progress, keep_title_only, workers, work_dir):
        pmid, fate, n_read, n_bad, n_kept, no_title, payload = rec.split("\t", 6)
        stats.documents["read"] += 1
        if fate == "no_valid_pmid":
            stats.skip(fate)
            continue
        n = int(pmid)
        if n >> 3 >= len(seen):
            seen.extend(bytes((n >> 3) + 1 - len(seen) + (1 << 20)))
        if seen[n >> 3] & (1 << (n & 7)):
            stats.skip("duplicate_id")
            continue
        seen[n >> 3] |= 1 << (n & 7)
        n_read, n_bad, n_kept = int(n_read), int(n_bad), int(n_kept)
        stats.links["read"] += n_read
        stats.links["dropped_not_a_pmid"] += n_bad
        stats.links["dropped_repeated"] += n_read - n_bad - n_kept
        if fate != "doc":
            stats.skip(fate)
            stats.links["dropped_with_skipped_document"] += n_kept
            continue
        if no_title == "1":
            stats.other["no_title_abstract_only"] += 1
        yield SerializedDoc(pmid, payload, n_kept)

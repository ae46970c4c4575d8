"""Read corpus files into distinct ``Paper`` records.

Formats, chosen by file suffix (and, for JSON, by content):

* ``.txt`` listing-page dumps: a title line, then an abstract line; page furniture such as
  "Subscribe", "new", "Daily Papers", "byAK and the research community", dates like "Jun 6",
  and the first title glued to "Subscribe" are recognised and skipped.
* ``.jsonl``: one object a line with ``title``, ``abstract`` and optional ``id``, ``url``,
  ``authors``, ``year``, ``venue``, ``doi``, ``arxiv_id``, ``citation_key``.
* ``.csv``: a header row with the same field names.
* ``.bib`` (BibTeX, ``index_build.bibtex``), ``.ris`` (``index_build.ris``), ``.json``
  (CSL-JSON, ``index_build.csl``), and the arXiv metadata snapshot (JSON lines with ``id``,
  ``categories``, ``update_date``, ...; ``index_build.arxiv``), which is streamed.

Nothing is dropped silently: every entry that cannot be used becomes a ``Problem`` naming the
file and line, and the ``CorpusReport`` counts entries read, duplicates merged and problems.
Papers are merged across files and formats by DOI, then arXiv id, then normalised title.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index_build.records import ABSTRACT_MAX_CHARS, TITLE_MAX_CHARS, Entry, Problem, length_problem
from rag.errors import CorpusError
from rag.identifiers import find_arxiv_id, normalize_arxiv_id, normalize_doi
from rag.text import clean_whitespace, normalize_title, paper_id_for
from rag.types import Paper, SourceRef

logger = logging.getLogger(__name__)

CORPUS_SUFFIXES = (".txt", ".jsonl", ".csv", ".json", ".bib", ".ris")

# Page furniture of the listing pages, compared case-insensitively after whitespace cleaning.
_BOILERPLATE = {
    "new",
    "subscribe",
    "daily papers",
    "byak and the research community",
    "get trending papers in your email inbox!",
    "get trending papers in your email inbox once a day!",
}
_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec"
_DATE = re.compile(rf"^(?:{_MONTHS})[a-z]*\.? \d{{1,2}}(?:,? \d{{4}})?$", re.IGNORECASE)
_GLUED_SUBSCRIBE = re.compile(r"^Subscribe(?=[A-Z0-9\"'(\[])")

# An abstract is prose: many words. Titles in real listings stay well under this (the
# longest of the bundled corpus has 21 words, the shortest abstract 49).
ABSTRACT_MIN_WORDS = 25
ABSTRACT_MIN_CHARS = 200

__all__ = [
    "ABSTRACT_MAX_CHARS",
    "CORPUS_SUFFIXES",
    "TITLE_MAX_CHARS",
    "CorpusReport",
    "Entry",
    "Problem",
    "corpus_files",
    "read_corpus",
]


@dataclass(frozen=True, slots=True)
class CorpusReport:
    """What reading the corpus did: counts, every problem (skipped), every warning (kept)."""

    files: tuple[str, ...]
    entries: int
    papers: int
    duplicates: int
    problems: tuple[Problem, ...] = field(default_factory=tuple)
    warnings: tuple[Problem, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": list(self.files),
            "entries": self.entries,
            "papers": self.papers,
            "duplicates": self.duplicates,
            "skipped": len(self.problems),
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [w.to_dict() for w in self.warnings],
        }


def corpus_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and directories into the sorted list of corpus files they hold."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES)
            if not inside:
                raise CorpusError(f"{path}: directory holds no corpus files ({', '.join(CORPUS_SUFFIXES)})")
            found.extend(inside)
        elif path.is_file():
            if path.suffix.lower() not in CORPUS_SUFFIXES:
                raise CorpusError(
                    f"{path}: unknown corpus format {path.suffix!r}; use one of {', '.join(CORPUS_SUFFIXES)}"
                )
            found.append(path)
        else:
            raise CorpusError(f"{path}: no such file or directory")
    if not found:
        raise CorpusError("no corpus files given")
    return found


def read_corpus(
    paths: Iterable[str | Path],
    *,
    limit: int | None = None,
    arxiv_categories: Sequence[str] = (),
) -> tuple[list[Paper], CorpusReport]:
    """Read every corpus file and merge duplicates by DOI, then arXiv id, then normalised title.

    Entries with the same DOI or arXiv id are one paper, whatever their titles and abstracts say
    (the first abstract read is kept). Entries matched by title only are merged when their
    abstracts agree up to case, punctuation and spacing; a title read again with a *different*
    abstract keeps the first version and reports the other as a problem, because two abstracts
    under one title would make citations ambiguous. A merged paper keeps every source and the
    richest metadata: each field from the first entry that has it, the longest author list.

    Args:
        paths: corpus files and directories.
        limit: read at most this many usable entries from each file (the arXiv snapshot is then
            read only that far).
        arxiv_categories: keep only arXiv metadata records in one of these categories ("cs.LG";
            "cs" takes every "cs.*"); other formats are not filtered.

    Raises:
        CorpusError: a path is missing or unreadable, or no usable entry remains.
    """
    if limit is not None and limit < 1:
        raise CorpusError(f"limit must be at least 1, got {limit}")
    files = corpus_files(paths)
    found: list[Problem] = []
    merger = _Merger(found)
    for path in files:
        for entry in _entries_of_file(path, found, limit=limit, arxiv_categories=tuple(arxiv_categories)):
            merger.add(entry)

    problems = [p for p in found if not p.warning]
    warnings = [p for p in found if p.warning]
    for problem in problems:
        logger.warning("skipped %s", problem)
    for warning in warnings:
        logger.warning("%s", warning)
    papers = merger.papers()
    report = CorpusReport(
        files=tuple(p.name for p in files),
        entries=merger.entries,
        papers=len(papers),
        duplicates=merger.duplicates,
        problems=tuple(problems),
        warnings=tuple(warnings),
    )
    if not papers:
        detail = "".join(f"\n  {p}" for p in problems[:20])
        raise CorpusError(f"the corpus is empty: no usable title + abstract entry in {len(files)} file(s)" + detail)
    return papers, report


class _Merger:
    """De-duplication state: papers in reading order, looked up by DOI, arXiv id and title."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        self.slots: list[Paper] = []
        self.by_doi: dict[str, int] = {}
        self.by_arxiv: dict[str, int] = {}
        self.by_title: dict[str, int] = {}
        self.by_id: dict[str, str] = {}
        self.entries = 0
        self.duplicates = 0

    def papers(self) -> list[Paper]:
        return list(self.slots)

    def add(self, entry: Entry) -> None:
        self.entries += 1
        slot = None
        if entry.doi is not None:
            slot = self.by_doi.get(entry.doi)
        if slot is None and entry.arxiv_id is not None:
            slot = self.by_arxiv.get(entry.arxiv_id)
        key = normalize_title(entry.title)
        distinct = False  # same title as a paper read before, but provably another paper
        if slot is None and key in self.by_title:
            seen = self.slots[self.by_title[key]]
            if normalize_title(seen.abstract) != normalize_title(entry.abstract) and _other_paper(seen, entry):
                distinct = True  # two arXiv papers titled "Erratum", two DOIs: both are kept
            elif normalize_title(seen.abstract) != normalize_title(entry.abstract):
                first = seen.sources[0]
                self.problems.append(
                    Problem(
                        entry.source.file,
                        entry.source.line,
                        f"title {entry.title!r} was already read at {first.file}:{first.line} "
                        "with a different abstract; kept the first version",
                    )
                )
                return
            else:
                slot = self.by_title[key]
        if slot is not None:
            merged = _merge(self.slots[slot], entry)
            self.slots[slot] = merged
            self._register(merged, slot, key)
            self.duplicates += 1
            return
        try:
            pid = entry.paper_id or paper_id_for(entry.title)
            if distinct and not entry.paper_id:
                pid = paper_id_for(f"{entry.title} {entry.doi or entry.arxiv_id}")
        except ValueError as exc:  # a title of punctuation only ("***", ":") names nothing
            self.problems.append(
                Problem(entry.source.file, entry.source.line, f"unusable title {entry.title!r}: {exc}")
            )
            return
        if pid in self.by_id:
            self.problems.append(
                Problem(
                    entry.source.file,
                    entry.source.line,
                    f"id {pid!r} is already used by the paper titled {self.by_id[pid]!r}",
                )
            )
            return
        self.by_id[pid] = entry.title
        paper = Paper(
            paper_id=pid,
            title=entry.title,
            abstract=entry.abstract,
            sources=(entry.source,),
            url=entry.url,
            authors=entry.authors,
            year=entry.year,
            venue=entry.venue,
            doi=entry.doi,
            arxiv_id=entry.arxiv_id,
            citation_key=entry.citation_key,
            entry_type=entry.entry_type,
            title_latex=entry.title_latex,
            abstract_latex=entry.abstract_latex,
        )
        self.slots.append(paper)
        self._register(paper, len(self.slots) - 1, key)

    def _register(self, paper: Paper, slot: int, title_key: str) -> None:
        self.by_title.setdefault(normalize_title(paper.title), slot)
        self.by_title.setdefault(title_key, slot)
        if paper.doi is not None:
            self.by_doi.setdefault(paper.doi, slot)
        if paper.arxiv_id is not None:
            self.by_arxiv.setdefault(paper.arxiv_id, slot)


def _other_paper(paper: Paper, entry: Entry) -> bool:
    """Whether identifiers of the same kind say that a same-titled entry is another paper."""
    return bool(
        (paper.doi and entry.doi and paper.doi != entry.doi)
        or (paper.arxiv_id and entry.arxiv_id and paper.arxiv_id != entry.arxiv_id)
    )


_MERGED_FIELDS = ("url", "year", "venue", "doi", "arxiv_id", "citation_key", "entry_type")


def _merge(paper: Paper, entry: Entry) -> Paper:
    """``paper`` with ``entry`` as one more source and the metadata it lacked.

    The text (title, abstract and their LaTeX) stays the first entry's, so that a citation
    always means one text; every other field is filled from the first entry that has it, and
    the longest author list wins (a listing may give none, an arXiv record all of them).
    """
    changes: dict[str, Any] = {"sources": (*paper.sources, entry.source)}
    for name in _MERGED_FIELDS:
        if getattr(paper, name) is None and getattr(entry, name) is not None:
            changes[name] = getattr(entry, name)
    if len(entry.authors) > len(paper.authors):
        changes["authors"] = entry.authors
    return dataclasses.replace(paper, **changes)


def _entries_of_file(
    path: Path, problems: list[Problem], *, limit: int | None, arxiv_categories: tuple[str, ...]
) -> Iterator[Entry]:
    """The usable entries of one file, at most ``limit``; reports a file that has none."""
    from index_build import arxiv

    suffix = path.suffix.lower()
    streamed = suffix in (".json", ".jsonl") and arxiv.is_arxiv_metadata(path)
    if streamed:
        inner: Iterator[Entry] = arxiv.read_arxiv(path, problems, categories=arxiv_categories)
    else:
        inner = iter(_read_file(path, problems))
    count = 0
    try:
        for entry in itertools.islice(inner, limit):
            count += 1
            yield entry
    finally:
        close = getattr(inner, "close", None)
        if close is not None:
            close()  # an arXiv stream stopped by the limit closes its file now
    if count == 0:
        if streamed and arxiv_categories:
            problems.append(
                Problem(path.name, 1, f"no usable entries in this file in categories {', '.join(arxiv_categories)}")
            )
        else:
            problems.append(Problem(path.name, 1, "no usable entries in this file"))
    logger.info("read %d entries from %s", count, path.name)


def _read_file(path: Path, problems: list[Problem]) -> list[Entry]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    lines = _decode_lines(path.name, data, problems)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return list(_parse_jsonl(path.name, lines, problems))
    if suffix == ".csv":
        return list(_parse_csv(path.name, lines, problems))
    if suffix == ".bib":
        from index_build.bibtex import parse_bibtex

        return list(parse_bibtex(path.name, lines, problems))
    if suffix == ".ris":
        from index_build.ris import parse_ris

        return list(parse_ris(path.name, lines, problems))
    if suffix == ".json":
        from index_build.csl import parse_json_file

        return list(parse_json_file(path.name, lines, problems, record_entry=_record_entry))
    return list(parse_listing(path.name, lines, problems))


def _decode_lines(name: str, data: bytes, problems: list[Problem]) -> list[str | None]:
    """Split into lines (LF, CRLF or CR) and decode each; an undecodable line becomes None.

    Decoding line by line loses only the entry with the bad bytes, not the whole file.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out: list[str | None] = []
    for number, raw in enumerate(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"), 1):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            problems.append(
                Problem(name, number, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
            )
            out.append(None)
    if out and out[-1] == "":
        out.pop()
    return out


def _is_abstract(line: str) -> bool:
    return len(line.split()) >= ABSTRACT_MIN_WORDS or len(line) >= ABSTRACT_MIN_CHARS


def parse_listing(name: str, lines: Sequence[str | None], problems: list[Problem]) -> Iterator[Entry]:
    """Parse a listing-page dump: title line, abstract line, with page furniture in between.

    Lines are classified rather than counted, so a missing line costs one entry (reported)
    instead of shifting every later title onto the wrong abstract.
    """
    pending: tuple[int, str] | None = None  # (line number, title) waiting for its abstract
    seen_entry = False
    for number, raw in enumerate(lines, 1):
        if raw is None:  # undecodable: already reported; it breaks the entry it belongs to
            if pending is not None:
                problems.append(Problem(name, pending[0], f"title {pending[1]!r} lost its abstract to bad bytes"))
            pending = None
            continue
        line = clean_whitespace(raw)
        if not line or line.casefold() in _BOILERPLATE or _DATE.match(line):
            continue
        if not seen_entry and pending is None:
            line = _GLUED_SUBSCRIBE.sub("", line)
        if len(line) > ABSTRACT_MAX_CHARS:
            problems.append(
                Problem(
                    name,
                    number,
                    f"line is {len(line):,} characters long, more than an abstract may have "
                    f"({ABSTRACT_MAX_CHARS:,}); skipped",
                )
            )
            if pending is not None:
                problems.append(Problem(name, pending[0], f"title {pending[1]!r} lost its abstract (too long)"))
            pending = None
            continue
        if _is_abstract(line):
            if pending is None:
                problems.append(Problem(name, number, f"abstract with no title: {line[:60]!r}..."))
                continue
            title_line, title = pending
            pending = None
            seen_entry = True
            yield Entry(title=title, abstract=line, source=SourceRef(name, title_line))
        else:
            if pending is not None:
                problems.append(Problem(name, pending[0], f"title with no abstract: {pending[1]!r}"))
            pending = (number, line)
    if pending is not None:
        problems.append(Problem(name, pending[0], f"title with no abstract (file ends after it): {pending[1]!r}"))


def _record_entry(name: str, number: int, record: Any, problems: list[Problem]) -> Entry | None:
    """Validate one JSONL / CSV record; report and return None when it cannot be used."""
    if not isinstance(record, dict):
        problems.append(
            Problem(name, number, f"expected an object with title and abstract, got {type(record).__name__}")
        )
        return None
    fields: dict[str, str] = {}
    for key in ("title", "abstract"):
        value = record.get(key)
        if not isinstance(value, str) or not clean_whitespace(value):
            problems.append(Problem(name, number, f"field {key!r} is missing or empty"))
            return None
        fields[key] = clean_whitespace(value)
        too_long = length_problem(name, number, key, fields[key])
        if too_long is not None:
            problems.append(too_long)
            return None
    pid = record.get("id")
    if pid is not None and not isinstance(pid, (str, int)):
        problems.append(Problem(name, number, f"field 'id' must be a string, got {type(pid).__name__}"))
        return None
    pid_text = clean_whitespace(str(pid)) if pid not in (None, "") else None
    authors_raw = record.get("authors")
    if isinstance(authors_raw, str):
        authors = tuple(a.strip() for a in re.split(r"[;,]", authors_raw) if a.strip())
    elif isinstance(authors_raw, list):
        authors = tuple(str(a).strip() for a in authors_raw if str(a).strip())
    else:
        authors = ()
    year_raw = record.get("year")
    year: int | None = None
    if year_raw not in (None, ""):
        try:
            year = int(str(year_raw).strip())
        except ValueError:
            problems.append(Problem(name, number, f"field 'year' is not a whole number: {year_raw!r}"))
            return None
    url = record.get("url")
    url_text = str(url).strip() if url else None
    text = {k: _optional_text(record.get(k)) for k in ("venue", "doi", "arxiv_id", "citation_key")}
    doi = normalize_doi(text["doi"])
    arxiv_id = normalize_arxiv_id(text["arxiv_id"]) or find_arxiv_id(url_text, text["doi"])
    for key, given, parsed in (("doi", text["doi"], doi), ("arxiv_id", text["arxiv_id"], arxiv_id)):
        if given and parsed is None:
            problems.append(Problem(name, number, f"field {key!r} is not a valid {key}: {given[:80]!r}; ignored", True))
    return Entry(
        title=fields["title"],
        abstract=fields["abstract"],
        source=SourceRef(name, number),
        paper_id=pid_text,
        url=url_text,
        authors=authors,
        year=year,
        venue=text["venue"],
        doi=doi,
        arxiv_id=arxiv_id,
        citation_key=text["citation_key"],
    )


def _optional_text(value: Any) -> str | None:
    """A cleaned string field, or None when absent, empty or not text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    return clean_whitespace(value)[:TITLE_MAX_CHARS] or None


def _parse_jsonl(name: str, lines: Sequence[str | None], problems: list[Problem]) -> Iterator[Entry]:
    for number, raw in enumerate(lines, 1):
        if raw is None or not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(Problem(name, number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        except RecursionError:  # "[[[[..." thousands deep: the decoder gives up, the file goes on
            problems.append(Problem(name, number, "not valid JSON (nested too deeply)"))
            continue
        entry = _record_entry(name, number, record, problems)
        if entry is not None:
            yield entry


def _parse_csv(name: str, lines: Sequence[str | None], problems: list[Problem]) -> Iterator[Entry]:
    # Undecodable lines were reported already; blank them so record line numbers stay right.
    text = "\n".join(line if line is not None else "" for line in lines)
    # The csv module refuses fields over 131,072 characters and loses the rest of the file on
    # that error; lift its limit to this file's size so an oversized field is reported by
    # _record_entry (as too long) and later records are still read.
    if len(text) >= csv.field_size_limit():
        csv.field_size_limit(min(len(text) + 1, 2**31 - 1))
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("title", "abstract") if c not in header]
    if missing:
        problems.append(
            Problem(name, 1, f"CSV header lacks column(s) {', '.join(missing)}; found: {', '.join(header) or 'none'}")
        )
        return
    reader.fieldnames = header
    start = 2
    while True:
        number = start
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field beyond the csv module's 131,072-character limit
            problems.append(Problem(name, number, f"unreadable CSV record ({exc}); skipped"))
            if reader.line_num < start:  # no progress: give up on the rest rather than loop
                break
            start = reader.line_num + 1
            continue
        start = reader.line_num + 1
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        entry = _record_entry(name, number, row, problems)
        if entry is not None:
            yield entry

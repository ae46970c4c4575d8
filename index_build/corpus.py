"""Read corpus files into distinct ``Paper`` records.

Three formats:

* ``.txt`` listing-page dumps: a title line, then an abstract line; page furniture such as
  "Subscribe", "new", "Daily Papers", "byAK and the research community", dates like "Jun 6",
  and the first title glued to "Subscribe" are recognised and skipped.
* ``.jsonl``: one object a line with ``title``, ``abstract`` and optional ``id``, ``url``,
  ``authors``, ``year``.
* ``.csv``: a header row with the same field names.

Nothing is dropped silently: every entry that cannot be used becomes a ``Problem`` naming the
file and line, and the ``CorpusReport`` counts entries read, duplicates merged and problems.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import CorpusError
from rag.text import clean_whitespace, normalize_title, paper_id_for
from rag.types import Paper, SourceRef

logger = logging.getLogger(__name__)

CORPUS_SUFFIXES = (".txt", ".jsonl", ".csv")

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
# Longer than any abstract (the bundled longest is under 2,500 characters): a 10 MB line is a
# dump gone wrong, and embedding it would cost hours. Reported and skipped.
ABSTRACT_MAX_CHARS = 50_000
TITLE_MAX_CHARS = 1_000


@dataclass(frozen=True, slots=True)
class Problem:
    """An entry or file that was skipped, and why."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclass(frozen=True, slots=True)
class Entry:
    """One title + abstract as read from a file, before de-duplication."""

    title: str
    abstract: str
    source: SourceRef
    paper_id: str | None = None
    url: str | None = None
    authors: tuple[str, ...] = ()
    year: int | None = None


@dataclass(frozen=True, slots=True)
class CorpusReport:
    """What reading the corpus did: counts and every problem, for the build summary."""

    files: tuple[str, ...]
    entries: int
    papers: int
    duplicates: int
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": list(self.files),
            "entries": self.entries,
            "papers": self.papers,
            "duplicates": self.duplicates,
            "skipped": len(self.problems),
            "problems": [p.to_dict() for p in self.problems],
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


def read_corpus(paths: Iterable[str | Path]) -> tuple[list[Paper], CorpusReport]:
    """Read every corpus file and merge duplicates by normalised title.

    Duplicates with the same abstract are merged (the paper keeps every source); a duplicate
    title with a different abstract keeps the first version and reports the other as a
    problem, because two abstracts under one title would make citations ambiguous.

    Raises:
        CorpusError: a path is missing or unreadable, or no usable entry remains.
    """
    files = corpus_files(paths)
    problems: list[Problem] = []
    entries: list[Entry] = []
    for path in files:
        entries.extend(_read_file(path, problems))

    by_title: dict[str, Paper] = {}
    by_id: dict[str, str] = {}
    duplicates = 0
    for entry in entries:
        key = normalize_title(entry.title)
        seen = by_title.get(key)
        if seen is not None:
            if seen.abstract == entry.abstract:
                by_title[key] = _with_source(seen, entry.source)
                duplicates += 1
            else:
                first = seen.sources[0]
                problems.append(
                    Problem(
                        entry.source.file,
                        entry.source.line,
                        f"title {entry.title!r} was already read at {first.file}:{first.line} "
                        "with a different abstract; kept the first version",
                    )
                )
            continue
        try:
            pid = entry.paper_id or paper_id_for(entry.title)
        except ValueError as exc:  # a title of punctuation only ("***", ":") names nothing
            problems.append(Problem(entry.source.file, entry.source.line, f"unusable title {entry.title!r}: {exc}"))
            continue
        if pid in by_id:
            problems.append(
                Problem(
                    entry.source.file,
                    entry.source.line,
                    f"id {pid!r} is already used by the paper titled {by_id[pid]!r}",
                )
            )
            continue
        by_id[pid] = entry.title
        by_title[key] = Paper(
            paper_id=pid,
            title=entry.title,
            abstract=entry.abstract,
            sources=(entry.source,),
            url=entry.url,
            authors=entry.authors,
            year=entry.year,
        )

    for problem in problems:
        logger.warning("skipped %s", problem)
    papers = list(by_title.values())
    report = CorpusReport(
        files=tuple(p.name for p in files),
        entries=len(entries),
        papers=len(papers),
        duplicates=duplicates,
        problems=tuple(problems),
    )
    if not papers:
        detail = "".join(f"\n  {p}" for p in problems[:20])
        raise CorpusError(f"the corpus is empty: no usable title + abstract entry in {len(files)} file(s)" + detail)
    return papers, report


def _with_source(paper: Paper, source: SourceRef) -> Paper:
    return Paper(
        paper_id=paper.paper_id,
        title=paper.title,
        abstract=paper.abstract,
        sources=(*paper.sources, source),
        url=paper.url,
        authors=paper.authors,
        year=paper.year,
    )


def _read_file(path: Path, problems: list[Problem]) -> list[Entry]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    lines = _decode_lines(path.name, data, problems)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        entries = list(_parse_jsonl(path.name, lines, problems))
    elif suffix == ".csv":
        entries = list(_parse_csv(path.name, lines, problems))
    else:
        entries = list(parse_listing(path.name, lines, problems))
    if not entries:
        problems.append(Problem(path.name, 1, "no usable entries in this file"))
    logger.info("read %d entries from %s", len(entries), path.name)
    return entries


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
        limit = TITLE_MAX_CHARS if key == "title" else ABSTRACT_MAX_CHARS
        if len(fields[key]) > limit:
            problems.append(
                Problem(name, number, f"field {key!r} is {len(fields[key]):,} characters long (limit {limit:,})")
            )
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
    return Entry(
        title=fields["title"],
        abstract=fields["abstract"],
        source=SourceRef(name, number),
        paper_id=pid_text,
        url=str(url).strip() if url else None,
        authors=authors,
        year=year,
    )


def _parse_jsonl(name: str, lines: Sequence[str | None], problems: list[Problem]) -> Iterator[Entry]:
    for number, raw in enumerate(lines, 1):
        if raw is None or not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(Problem(name, number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
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

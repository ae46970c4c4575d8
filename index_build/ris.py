"""RIS (.ris) files, as Zotero, Mendeley, EndNote and most publishers export them.

RIS is plain text, so titles and abstracts are taken as written (only whitespace is cleaned).
The file is split into records here (``TY  -`` ... ``ER  -``) so that each record keeps the line
it starts on and a broken one costs only itself; rispy parses the tags of each record.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from index_build.records import Entry, Problem, find_year, length_problem
from rag.identifiers import find_arxiv_id, normalize_doi
from rag.text import clean_whitespace
from rag.types import SourceRef

_TAG = re.compile(r"^([A-Z][A-Z0-9])  -(?: |$)")
# "1.", "2." before each record: a record counter some writers (EndNote, rispy) put there.
_COUNTER = re.compile(r"^\s*\d+\.\s*$")
# RIS reference types -> BibTeX entry types (for export); anything else is "misc".
RIS_TO_BIBTEX = {
    "JOUR": "article",
    "EJOUR": "article",
    "MGZN": "article",
    "CONF": "inproceedings",
    "CPAPER": "inproceedings",
    "CHAP": "incollection",
    "BOOK": "book",
    "EBOOK": "book",
    "RPRT": "techreport",
    "THES": "phdthesis",
    "UNPB": "unpublished",
}


def parse_ris(name: str, lines: Sequence[str | None], problems: list[Problem]) -> Iterator[Entry]:
    """The entries of a .ris file; records without title or abstract become problems."""
    record: list[str] | None = None
    start = 0
    broken = False
    stray: int | None = None  # first line of text found outside any record
    for number, raw in enumerate(lines, 1):
        line = (raw or "").rstrip("\r")
        if raw is None:
            if record is not None:
                broken = True
            continue
        tag = _TAG.match(line)
        if tag and tag.group(1) == "TY":
            if stray is not None:
                problems.append(Problem(name, stray, "text outside a TY ... ER record"))
                stray = None
            if record is not None:  # the previous record never ended: read what it has
                problems.append(Problem(name, start, "record has no ER line before the next TY; read up to it", True))
                yield from _finish(name, start, record, broken, problems)
            record, start, broken = [line], number, False
        elif tag and tag.group(1) == "ER":
            if record is None:
                problems.append(Problem(name, number, "ER line without a TY line before it"))
                continue
            record.append(line)
            yield from _finish(name, start, record, broken, problems)
            record = None
        elif record is not None:
            record.append(line)
        elif line.strip() and stray is None and not _COUNTER.match(line):
            stray = number
    if stray is not None:
        problems.append(Problem(name, stray, "text outside a TY ... ER record"))
    if record is not None:
        problems.append(Problem(name, start, "record has no ER line (the file ends first); read up to the end", True))
        yield from _finish(name, start, record, broken, problems)


def _finish(name: str, line: int, record: list[str], broken: bool, problems: list[Problem]) -> Iterator[Entry]:
    if broken:
        problems.append(Problem(name, line, "record lost to bytes that are not UTF-8"))
        return
    import rispy

    if not record[-1].startswith("ER"):
        record = [*record, "ER  - "]
    try:
        parsed = rispy.loads("\n".join(record))
    except Exception as exc:  # rispy raises on a few malformed tags; the rest of the file stays
        problems.append(Problem(name, line, f"unreadable RIS record ({type(exc).__name__}: {exc})"))
        return
    if not parsed:
        problems.append(Problem(name, line, "unreadable RIS record"))
        return
    entry = ris_entry(name, line, parsed[0], problems)
    if entry is not None:
        yield entry


def _first(record: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, list):
            value = next((v for v in value if isinstance(v, str) and v.strip()), None)
        if isinstance(value, str) and value.strip():
            return clean_whitespace(value)
    return None


def ris_entry(name: str, line: int, record: dict[str, Any], problems: list[Problem]) -> Entry | None:
    """One parsed RIS record (rispy's field names) as an entry."""
    key = _first(record, "id")
    label = f"record {key!r}: " if key else ""
    title_raw = _first(record, "title", "primary_title")
    abstract_raw = _first(record, "abstract", "notes_abstract")
    if title_raw is None:
        problems.append(Problem(name, line, f"{label}no title (TI or T1)"))
        return None
    if abstract_raw is None:
        problems.append(Problem(name, line, f"{label}no abstract (AB or N2)"))
        return None
    # RIS is plain text (no LaTeX): "$5" is money, not math.
    title, abstract = title_raw, abstract_raw
    for field, value in (("title", title), ("abstract", abstract)):
        too_long = length_problem(name, line, field, value, label) if value else None
        if not value or too_long is not None:
            problems.append(too_long or Problem(name, line, f"{label}field {field!r} is empty"))
            return None
    year_raw = _first(record, "year", "publication_year", "date")
    year = find_year(year_raw) if year_raw else None
    if year_raw and year is None:
        problems.append(Problem(name, line, f"{label}field 'PY' holds no year: {year_raw[:40]!r}; ignored", True))
    doi_raw = _first(record, "doi")
    doi = normalize_doi(doi_raw)
    if doi_raw and doi is None:
        problems.append(Problem(name, line, f"{label}field 'DO' is not a DOI: {doi_raw[:60]!r}; ignored", True))
    urls = [u for u in record.get("urls") or () if isinstance(u, str) and u.strip()]
    authors = tuple(
        clean_whitespace(a) for a in (record.get("authors") or record.get("first_authors") or ()) if a.strip()
    )
    kind = str(record.get("type_of_reference") or "").strip().upper()
    return Entry(
        title=title,
        abstract=abstract,
        source=SourceRef(name, line),
        url=urls[0] if urls else None,
        authors=authors,
        year=year,
        venue=_first(
            record, "secondary_title", "journal_name", "alternate_title3", "alternate_title1", "alternate_title2"
        ),
        doi=doi,
        arxiv_id=find_arxiv_id(*urls, doi, _first(record, "journal_name", "secondary_title"), _first(record, "notes")),
        citation_key=key,
        entry_type=RIS_TO_BIBTEX.get(kind, "misc"),
    )

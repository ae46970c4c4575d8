"""The arXiv metadata snapshot (the OAI dump: one JSON object a line, several GB), streamed.

Each line holds ``id``, ``title``, ``abstract``, ``authors`` (one string), ``authors_parsed``
(``[[family, given, suffix], ...]``), ``categories`` (space-separated), ``doi``,
``journal-ref``, ``update_date`` and ``versions``. The file is read one line at a time, so its
size does not matter; only the entries kept (after the category filter and the limit) are held.
Titles and abstracts carry LaTeX (``$\\alpha$``, ``\\"u``), decoded like BibTeX's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from index_build.latex import latex_to_text
from index_build.records import Entry, Problem, find_year, length_problem
from rag.errors import CorpusError
from rag.identifiers import normalize_arxiv_id, normalize_doi
from rag.text import clean_whitespace
from rag.types import SourceRef

logger = logging.getLogger(__name__)

# Keys that only the arXiv metadata records have (a plain JSONL corpus has title/abstract/id).
_ARXIV_KEYS = ("categories", "update_date", "authors_parsed", "journal-ref", "versions")
_SNIFF_BYTES = 1 << 20


def is_arxiv_metadata(path: Path) -> bool:
    """True if the first record of a JSON-lines file is an arXiv metadata record."""
    try:
        with path.open("rb") as fh:
            for raw in fh:
                if raw.strip():
                    first = raw[:_SNIFF_BYTES]
                    break
            else:
                return False
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        record = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(record, dict) and "id" in record and any(k in record for k in _ARXIV_KEYS)


def in_categories(categories: str, wanted: Sequence[str]) -> bool:
    """Whether a record's space-separated categories include one of ``wanted``.

    A wanted value matches itself and its subcategories: "cs" matches "cs.LG" and "cs.CL".
    """
    if not wanted:
        return True
    for category in categories.split():
        for want in wanted:
            if category == want or category.startswith(want + "."):
                return True
    return False


def read_arxiv(path: Path, problems: list[Problem], *, categories: Sequence[str] = ()) -> Iterator[Entry]:
    """Stream the entries of an arXiv metadata file, keeping those in ``categories`` (all if empty).

    Records outside the categories are not entries and are not reported, only counted in the log.
    """
    name = path.name
    outside = 0
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except UnicodeDecodeError as exc:
                problems.append(
                    Problem(name, number, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
                )
                continue
            except json.JSONDecodeError as exc:
                problems.append(Problem(name, number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
                continue
            except RecursionError:
                problems.append(Problem(name, number, "not valid JSON (nested too deeply)"))
                continue
            if not isinstance(record, dict):
                problems.append(
                    Problem(name, number, f"expected an arXiv record (an object), got {type(record).__name__}")
                )
                continue
            cats = record.get("categories")
            if categories and not in_categories(cats if isinstance(cats, str) else "", categories):
                outside += 1
                continue
            entry = arxiv_entry(name, number, record, problems)
            if entry is not None:
                yield entry
    if categories:
        logger.info("%s: %d records outside the categories %s", name, outside, ", ".join(categories))


def arxiv_entry(name: str, number: int, record: dict[str, Any], problems: list[Problem]) -> Entry | None:
    """One arXiv metadata record as an entry; reported and None when it cannot be used."""
    raw_id = record.get("id")
    label = f"record {raw_id!r}: " if isinstance(raw_id, (str, int)) else ""
    texts: dict[str, str] = {}
    for field in ("title", "abstract"):
        value = record.get(field)
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(name, number, f"{label}field {field!r} is missing or empty"))
            return None
        plain = latex_to_text(value)
        if not plain:
            problems.append(Problem(name, number, f"{label}field {field!r} is empty once LaTeX is decoded"))
            return None
        too_long = length_problem(name, number, field, plain, label)
        if too_long is not None:
            problems.append(too_long)
            return None
        texts[field] = plain
    arxiv_id = normalize_arxiv_id(str(raw_id)) if isinstance(raw_id, (str, int)) else None
    if raw_id is not None and arxiv_id is None:
        problems.append(Problem(name, number, f"field 'id' is not an arXiv id: {str(raw_id)[:40]!r}; ignored", True))
    doi_raw = record.get("doi")
    doi = normalize_doi(doi_raw.split()[0]) if isinstance(doi_raw, str) and doi_raw.strip() else None
    journal = record.get("journal-ref")
    title_raw, abstract_raw = clean_whitespace(record["title"]), clean_whitespace(record["abstract"])
    return Entry(
        title=texts["title"],
        abstract=texts["abstract"],
        source=SourceRef(name, number),
        authors=_authors(record),
        year=_year(record, arxiv_id),
        venue=latex_to_text(journal) or None if isinstance(journal, str) else None,
        doi=doi,
        arxiv_id=arxiv_id,
        entry_type="article" if isinstance(journal, str) and journal.strip() else "misc",
        title_latex=title_raw if title_raw != texts["title"] else None,
        abstract_latex=abstract_raw if abstract_raw != texts["abstract"] else None,
    )


def _authors(record: dict[str, Any]) -> tuple[str, ...]:
    parsed = record.get("authors_parsed")
    out: list[str] = []
    if isinstance(parsed, list) and parsed:
        for item in parsed:
            if not isinstance(item, list) or not item:
                continue
            family, given, suffix = [latex_to_text(str(p)) for p in (*item, "", "")[:3]]
            if not family:
                continue
            if given:
                out.append(f"{family}, {suffix}, {given}" if suffix else f"{family}, {given}")
            else:
                out.append(family)
        return tuple(out)
    authors = record.get("authors")
    if isinstance(authors, str):
        plain = latex_to_text(authors).replace(" and ", ", ")
        out = [a.strip() for a in plain.split(",") if a.strip()]
    return tuple(out)


def _year(record: dict[str, Any], arxiv_id: str | None) -> int | None:
    """The year of the first version; else the id's (YYMM...); else the last update's."""
    versions = record.get("versions")
    if isinstance(versions, list) and versions and isinstance(versions[0], dict):
        year = find_year(versions[0].get("created"))
        if year is not None:
            return year
    if arxiv_id:
        digits = arxiv_id.split("/")[-1][:2]
        if digits.isdigit():
            yy = int(digits)
            return 1900 + yy if yy >= 91 else 2000 + yy  # arXiv began in August 1991
    return find_year(record.get("update_date"))

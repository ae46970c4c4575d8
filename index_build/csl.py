"""CSL-JSON (.json): Zotero's and Better BibTeX's "Better CSL JSON" exports, citation.js output.

A file holds an array of items (or one item, or one item a line). Each item is decoded on its
own, at its own line, so a broken item is reported and the items after it are still read:
after a syntax error the reader resumes at the next item that starts at the same indentation
as the first one (or, in a one-line file, at the next ``},{``).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from index_build.records import Entry, Problem, find_year, length_problem
from rag.identifiers import find_arxiv_id, normalize_doi
from rag.text import clean_whitespace
from rag.types import SourceRef

RecordEntry = Callable[[str, int, Any, list[Problem]], "Entry | None"]

# CSL types -> BibTeX entry types (for export); anything else is "misc".
CSL_TO_BIBTEX = {
    "article-journal": "article",
    "article-magazine": "article",
    "article-newspaper": "article",
    "paper-conference": "inproceedings",
    "chapter": "incollection",
    "book": "book",
    "report": "techreport",
    "thesis": "phdthesis",
    "manuscript": "unpublished",
}
# CSL "rich text" markup that Zotero puts in titles: <i>, <b>, <sub>, <sup>, <span class="nocase">.
_RICH = re.compile(r"</?(?:i|b|sub|sup|sc|span)(?:\s[^<>]*)?>", re.IGNORECASE)
_CSL_KEYS = ("type", "issued", "container-title", "DOI", "URL", "citation-key")
_KEY_LIKE = re.compile(r"^[\w\-.:+]+$")


def parse_json_file(
    name: str, lines: Sequence[str | None], problems: list[Problem], *, record_entry: RecordEntry
) -> Iterator[Entry]:
    """Entries of a .json file: a CSL-JSON array or item, or JSON lines (CSL items or plain
    title/abstract records, the latter read by ``record_entry`` like a .jsonl file)."""
    text = "\n".join(line if line is not None else "" for line in lines)
    body = text.lstrip()
    if not body:
        return
    if body[0] == "[":
        yield from _parse_array(name, text, problems)
        return
    # One object a line when the first line is a whole object, or when the file is no single JSON
    # value but several lines start an object (a JSON-lines file whose first line is broken).
    first = next((line for line in lines if line is not None and line.strip()), "")
    if _is_json_object(first or ""):
        yield from _json_lines(name, lines, problems, record_entry)
        return
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        if sum(1 for line in lines if line is not None and line.startswith("{")) > 1:
            yield from _json_lines(name, lines, problems, record_entry)
        elif isinstance(exc, json.JSONDecodeError):
            problems.append(
                Problem(name, exc.lineno, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
            )
        else:
            problems.append(Problem(name, 1, "not valid JSON (nested too deeply)"))
        return
    entry = csl_entry(name, text[: len(text) - len(body)].count("\n") + 1, record, problems)
    if entry is not None:
        yield entry


def _json_lines(
    name: str, lines: Sequence[str | None], problems: list[Problem], record_entry: RecordEntry
) -> Iterator[Entry]:
    for number, raw in enumerate(lines, 1):
        if raw is None or not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(Problem(name, number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        except RecursionError:
            problems.append(Problem(name, number, "not valid JSON (nested too deeply)"))
            continue
        entry = (
            csl_entry(name, number, record, problems)
            if _is_csl(record)
            else record_entry(name, number, record, problems)
        )
        if entry is not None:
            yield entry


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (json.JSONDecodeError, RecursionError):
        return False


def _is_csl(record: Any) -> bool:
    return isinstance(record, dict) and (
        any(k in record for k in _CSL_KEYS) or (isinstance(record.get("author"), list) and "authors" not in record)
    )


def _parse_array(name: str, text: str, problems: list[Problem]) -> Iterator[Entry]:
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    indent: str | None = None
    line, counted = 1, 0

    def line_of(offset: int) -> int:
        nonlocal line, counted
        if offset >= counted:
            line += text.count("\n", counted, offset)
        else:
            line = text.count("\n", 0, offset) + 1
        counted = offset
        return line

    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] == ","):
            pos += 1
        if pos >= len(text):
            problems.append(Problem(name, line_of(len(text)), "the JSON array is not closed with ']'", True))
            return
        if text[pos] == "]":
            return
        start_line = line_of(pos)
        if indent is None:
            line_start = text.rfind("\n", 0, pos) + 1
            indent = text[line_start:pos] if not text[line_start:pos].strip() and line_start > 0 else ""
        try:
            record, end = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError) as exc:
            detail = (
                f"{exc.msg} at line {exc.lineno} column {exc.colno}"
                if isinstance(exc, json.JSONDecodeError)
                else "nested too deeply"
            )
            problems.append(Problem(name, start_line, f"item not valid JSON ({detail})"))
            resume = _next_item(text, pos, indent)
            if resume is None:
                return
            pos = resume
            continue
        entry = csl_entry(name, start_line, record, problems)
        if entry is not None:
            yield entry
        pos = end


def _next_item(text: str, after: int, indent: str) -> int | None:
    """Where the next top-level item probably starts after a broken one (see the module doc)."""
    if indent:
        match = re.compile(r"\n" + re.escape(indent) + r"\{").search(text, after + 1)
        return match.end() - 1 if match else None
    match = re.compile(r"\}\s*,\s*\{").search(text, after + 1)
    return match.end() - 1 if match else None


def _text(value: Any) -> str | None:
    if isinstance(value, list):  # some tools write container-title as a list
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    return clean_whitespace(value) or None


def _plain(value: str) -> str:
    return clean_whitespace(html.unescape(_RICH.sub("", value)))


def _names(value: Any) -> tuple[str, ...]:
    out: list[str] = []
    for person in value if isinstance(value, list) else ():
        if isinstance(person, str):
            if person.strip():
                out.append(clean_whitespace(person))
            continue
        if not isinstance(person, dict):
            continue
        family = " ".join(p for p in (_text(person.get("non-dropping-particle")), _text(person.get("family"))) if p)
        given = " ".join(p for p in (_text(person.get("given")), _text(person.get("dropping-particle"))) if p)
        suffix = _text(person.get("suffix"))
        literal = _text(person.get("literal"))
        if family and given:
            out.append(f"{family}, {suffix}, {given}" if suffix else f"{family}, {given}")
        elif family:
            out.append(family)
        elif literal:
            out.append("{" + literal + "}" if " " in literal else literal)
    return tuple(out)


def _issued_year(item: dict[str, Any]) -> tuple[int | None, str | None]:
    """(year, the raw value when it holds none)."""
    issued = item.get("issued")
    if isinstance(issued, dict):
        parts = issued.get("date-parts")
        if isinstance(parts, list) and parts and isinstance(parts[0], list) and parts[0]:
            year = find_year(parts[0][0])
            return year, None if year else str(parts[0][0])
        for key in ("raw", "literal"):
            if isinstance(issued.get(key), str):
                year = find_year(issued[key])
                return year, None if year else issued[key]
    elif isinstance(issued, (str, int)):
        year = find_year(issued)
        return year, None if year else str(issued)
    year_raw = item.get("year")
    if year_raw not in (None, ""):
        year = find_year(year_raw)
        return year, None if year else str(year_raw)
    return None, None


def csl_entry(name: str, line: int, item: Any, problems: list[Problem]) -> Entry | None:
    """One CSL-JSON item as an entry; reported and None when it cannot be used."""
    if not isinstance(item, dict):
        problems.append(Problem(name, line, f"expected a CSL-JSON item (an object), got {type(item).__name__}"))
        return None
    raw_key = _text(item.get("citation-key")) or _text(item.get("citationKey")) or _text(item.get("id"))
    key = raw_key if raw_key and _KEY_LIKE.match(raw_key) and "//" not in raw_key else None
    label = f"item {raw_key!r}: " if raw_key else ""
    title_raw, abstract_raw = _text(item.get("title")), _text(item.get("abstract"))
    if title_raw is None:
        problems.append(Problem(name, line, f"{label}field 'title' is missing or empty"))
        return None
    if abstract_raw is None:
        problems.append(Problem(name, line, f"{label}field 'abstract' is missing or empty"))
        return None
    title, abstract = _plain(title_raw), _plain(abstract_raw)
    for field, value in (("title", title), ("abstract", abstract)):
        too_long = length_problem(name, line, field, value, label) if value else None
        if not value or too_long is not None:
            problems.append(too_long or Problem(name, line, f"{label}field {field!r} is empty"))
            return None
    year, bad_year = _issued_year(item)
    if bad_year is not None:
        problems.append(Problem(name, line, f"{label}field 'issued' holds no year: {bad_year[:40]!r}; ignored", True))
    doi_raw = _text(item.get("DOI"))
    doi = normalize_doi(doi_raw)
    if doi_raw and doi is None:
        problems.append(Problem(name, line, f"{label}field 'DOI' is not a DOI: {doi_raw[:60]!r}; ignored", True))
    url = _text(item.get("URL"))
    venue = _text(item.get("container-title")) or _text(item.get("event-title")) or _text(item.get("event"))
    return Entry(
        title=title,
        abstract=abstract,
        source=SourceRef(name, line),
        url=url,
        authors=_names(item.get("author")),
        year=year,
        venue=_plain(venue) if venue else None,
        doi=doi,
        arxiv_id=find_arxiv_id(
            url, doi_raw, _text(item.get("number")), _text(item.get("archive_location")), _text(item.get("note")), venue
        ),
        citation_key=key,
        entry_type=CSL_TO_BIBTEX.get(str(item.get("type") or ""), "misc"),
    )

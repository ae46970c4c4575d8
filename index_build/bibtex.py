"""BibTeX (.bib) files as Zotero, Mendeley, JabRef and Google Scholar export them.

Parsed with bibtexparser v2, which splits the file into blocks and keeps going after a broken
one: each broken block becomes a problem at its line, and the entries around it are read. Titles,
abstracts, venues and names are decoded from LaTeX into plain Unicode (``index_build.latex``);
the original title and abstract are kept on the paper when they differ.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

from index_build.latex import latex_to_text
from index_build.records import Entry, Problem, find_year, length_problem
from rag.identifiers import find_arxiv_id, normalize_arxiv_id, normalize_doi
from rag.text import clean_whitespace
from rag.types import SourceRef

logger = logging.getLogger(__name__)

_KEY_IN_RAW = re.compile(r"@\s*\w+\s*[{(]\s*([^,\s{}()]+)")
_VENUE_FIELDS = ("journal", "journaltitle", "booktitle")


def parse_bibtex(name: str, lines: Sequence[str | None], problems: list[Problem]) -> Iterator[Entry]:
    """The entries of a .bib file; broken blocks and unusable entries become problems."""
    import bibtexparser
    from bibtexparser import model

    bad_lines = [number for number, line in enumerate(lines, 1) if line is None]
    text = "\n".join(line if line is not None else "" for line in lines)
    try:
        library = bibtexparser.parse_string(text)
    except Exception as exc:  # the splitter raises on states it considers its own bugs
        problems.append(Problem(name, 1, f"the BibTeX parser gave up on this file ({type(exc).__name__}: {exc})"))
        return
    blocks = library.blocks
    strings = {k.lower(): str(v.value) for k, v in library.strings_dict.items()}
    starts = [(b.start_line or 0) + 1 for b in blocks]
    for i, block in enumerate(blocks):
        line = starts[i]
        end = starts[i + 1] if i + 1 < len(blocks) else len(lines) + 1
        if isinstance(block, (model.String, model.Preamble, model.ExplicitComment, model.ImplicitComment)):
            continue
        broken_bytes = [n for n in bad_lines if line <= n < end]
        if isinstance(block, model.DuplicateBlockKeyBlock):
            previous = (block.previous_block.start_line or 0) + 1
            problems.append(
                Problem(name, line, f"entry {block.key!r}: citation key already used by the entry at line {previous}")
            )
            continue
        if isinstance(block, model.DuplicateFieldKeyBlock):
            entry_block = _first_fields_only(block.ignore_error_block, library)
            if entry_block is None:
                problems.append(Problem(name, line, f"unreadable entry with repeated fields: {block.error}"))
                continue
            problems.append(
                Problem(
                    name,
                    line,
                    f"entry {entry_block.key!r}: field(s) {', '.join(sorted(block.duplicate_keys))} given more than "
                    "once; the first is used",
                    warning=True,
                )
            )
            block = entry_block
        if isinstance(block, model.ParsingFailedBlock):
            key = _KEY_IN_RAW.match(block.raw or "")
            what = f"entry {key.group(1)!r}" if key else "block"
            reason = getattr(block.error, "abort_reason", None) or str(block.error) or type(block.error).__name__
            problems.append(Problem(name, line, f"broken BibTeX {what}: {clean_whitespace(reason)}"))
            continue
        if not isinstance(block, model.Entry):
            continue
        if broken_bytes:
            problems.append(
                Problem(name, line, f"entry {block.key!r} lost to bytes that are not UTF-8 at line {broken_bytes[0]}")
            )
            continue
        entry = _entry(name, line, block, problems, strings)
        if entry is not None:
            yield entry


def _first_fields_only(entry: Any, library: Any) -> Any | None:
    """The entry of a DuplicateFieldKeyBlock with repeated fields dropped, run through the parse
    stack that bibtexparser skipped for it (string references, enclosing braces)."""
    import bibtexparser
    from bibtexparser import model

    if not isinstance(entry, model.Entry):
        return None
    seen: set[str] = set()
    kept = []
    for field in entry.fields:
        if field.key.lower() not in seen:
            seen.add(field.key.lower())
            kept.append(field)
    entry.fields = kept
    fixed = bibtexparser.Library([*library.strings, entry], fail_on_duplicate_key=False)
    for middleware in bibtexparser.middlewares.default_parse_stack():
        fixed = middleware.transform(library=fixed)
    return fixed.entries[0] if fixed.entries else None


def _concatenation(value: str, strings: dict[str, str]) -> str:
    """Resolve ``"A" # {B} # macro``, which bibtexparser v2 leaves as written."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, char in enumerate(value + "#"):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == '"' and depth == 0:
            quoted = not quoted
        elif char == "#" and depth == 0 and not quoted:
            parts.append(value[start:i].strip())
            start = i + 1
    out = []
    for part in parts:
        if len(part) >= 2 and ((part[0], part[-1]) in (("{", "}"), ('"', '"'))):
            out.append(part[1:-1])
        else:
            out.append(strings.get(part.lower(), part))
    return "".join(out)


def _entry(name: str, line: int, block: Any, problems: list[Problem], strings: dict[str, str]) -> Entry | None:
    fields: dict[str, Any] = {}
    field_lines: dict[str, int] = {}
    repeated: list[str] = []
    for field in block.fields:
        key = field.key.lower()  # BibTeX field names are case-insensitive ("Title", "DOI", "arxivId")
        if key in fields and key not in repeated:
            repeated.append(key)
        if key not in fields:
            value = field.value if isinstance(field.value, str) else str(field.value)
            if field.enclosing == "no-enclosing" and "#" in value:
                value = _concatenation(value, strings)
            fields[key] = value
            field_lines[key] = (field.start_line or 0) + 1
    key = block.key
    label = f"entry {key!r}: "
    if repeated:
        problems.append(
            Problem(name, line, f"{label}field(s) {', '.join(repeated)} given more than once; the first is used", True)
        )

    def text(field: str) -> str | None:
        raw = fields.get(field)
        return raw if raw is not None and raw.strip() else None

    raw_title, raw_abstract = text("title"), text("abstract")
    if raw_title is None:
        problems.append(Problem(name, line, f"{label}no title"))
        return None
    if raw_abstract is None:
        problems.append(Problem(name, line, f"{label}no abstract"))
        return None
    title, abstract = latex_to_text(raw_title), latex_to_text(raw_abstract)
    for field, value in (("title", title), ("abstract", abstract)):
        if not value:
            problems.append(Problem(name, field_lines[field], f"{label}field {field!r} is empty once LaTeX is decoded"))
            return None
        too_long = length_problem(name, field_lines[field], field, value, label)
        if too_long is not None:
            problems.append(too_long)
            return None

    year = None
    year_field = "year" if text("year") else "date" if text("date") else None
    if year_field is not None:
        year = find_year(fields[year_field])
        if year is None:
            problems.append(
                Problem(
                    name,
                    field_lines[year_field],
                    f"{label}field {year_field!r} holds no year: {fields[year_field][:40]!r}; ignored",
                    warning=True,
                )
            )

    doi = None
    if text("doi"):
        doi = normalize_doi(fields["doi"])
        if doi is None:
            problems.append(
                Problem(
                    name, field_lines["doi"], f"{label}field 'doi' is not a DOI: {fields['doi'][:60]!r}; ignored", True
                )
            )
    venue_field = next((f for f in _VENUE_FIELDS if text(f)), None)
    venue = latex_to_text(fields[venue_field]) if venue_field else None
    url = fields["url"].split()[0] if text("url") else None
    archive = (fields.get("archiveprefix") or fields.get("eprinttype") or "").strip().lower()
    eprint = text("eprint")
    arxiv_id = (
        normalize_arxiv_id(text("arxivid"))
        or (normalize_arxiv_id(eprint) if eprint and archive in ("", "arxiv") else None)
        or find_arxiv_id(fields.get("journal"), url, doi, fields.get("note"), fields.get("howpublished"))
    )
    return Entry(
        title=title,
        abstract=abstract,
        source=SourceRef(name, line),
        url=url,
        authors=parse_names(fields.get("author") or ""),
        year=year,
        venue=venue or None,
        doi=doi,
        arxiv_id=arxiv_id,
        citation_key=key,
        entry_type=block.entry_type.lower(),
        title_latex=raw_title if clean_whitespace(raw_title) != title else None,
        abstract_latex=raw_abstract if clean_whitespace(raw_abstract) != abstract else None,
    )


def parse_names(value: str) -> tuple[str, ...]:
    """BibTeX names ("Tai, Kai Sheng and von Neumann, John and {Google Research}") as plain
    "Family, Given" strings; a name without given names (a group) stays whole. "others" (BibTeX's
    "et al.") is dropped."""
    from bibtexparser.middlewares.names import parse_single_name_into_parts, split_multiple_persons_names

    if not value.strip():
        return ()
    out: list[str] = []
    for raw in split_multiple_persons_names(value):
        if raw.strip().lower() == "others":
            continue
        try:
            parts = parse_single_name_into_parts(raw, strict=False)
        except Exception:  # a name the parser cannot split is still a name
            plain = latex_to_text(raw)
            if plain:
                out.append(plain)
            continue
        family = latex_to_text(" ".join([*parts.von, *parts.last]))
        given = latex_to_text(" ".join(parts.first))
        suffix = latex_to_text(" ".join(parts.jr))
        if not family:
            family, given = given, ""
        if not family:
            continue
        if given:
            out.append(f"{family}, {suffix}, {given}" if suffix else f"{family}, {given}")
        elif " " in family:
            out.append("{" + family + "}")  # a group name: braces keep it one family name
        else:
            out.append(family)
    return tuple(out)

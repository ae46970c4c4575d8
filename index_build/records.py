"""What every corpus reader produces: ``Entry`` records and ``Problem`` reports.

Shared by the readers of each format (``corpus`` for listings, JSONL and CSV; ``bibtex``,
``ris``, ``csl`` and ``arxiv``), which ``corpus.read_corpus`` dispatches to and merges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rag.types import SourceRef

# Longer than any abstract (the bundled longest is under 2,500 characters): a 10 MB line is a
# dump gone wrong, and embedding it would cost hours. Reported and skipped.
ABSTRACT_MAX_CHARS = 50_000
TITLE_MAX_CHARS = 1_000
_YEAR = re.compile(r"(?<!\d)(1[5-9]\d\d|20\d\d|21\d\d)(?!\d)")


@dataclass(frozen=True, slots=True)
class Problem:
    """An entry or file that was skipped, and why; or, with ``warning``, a field that was ignored
    in an entry that was kept."""

    file: str
    line: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"file": self.file, "line": self.line, "message": self.message}
        if self.warning:
            data["warning"] = True
        return data


@dataclass(frozen=True, slots=True)
class Entry:
    """One title + abstract as read from a file, before de-duplication.

    ``title`` and ``abstract`` are plain text; ``title_latex`` / ``abstract_latex`` keep the
    source markup when the reader decoded LaTeX and the result differs.
    """

    title: str
    abstract: str
    source: SourceRef
    paper_id: str | None = None
    url: str | None = None
    authors: tuple[str, ...] = ()
    year: int | None = None
    venue: str | None = None
    doi: str | None = None
    arxiv_id: str | None = None
    citation_key: str | None = None
    entry_type: str | None = None
    title_latex: str | None = None
    abstract_latex: str | None = None


def find_year(value: Any) -> int | None:
    """The year in a date-like value ("2019", "2019-05-01", "2019///", "May 2019"), or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 1500 <= value <= 2199 else None
    if not isinstance(value, str):
        return None
    match = _YEAR.search(value)
    return int(match.group(1)) if match else None


def length_problem(name: str, line: int, field: str, text: str, what: str = "") -> Problem | None:
    """A problem if a title or abstract is longer than any real one (a dump gone wrong)."""
    limit = TITLE_MAX_CHARS if field == "title" else ABSTRACT_MAX_CHARS
    if len(text) <= limit:
        return None
    return Problem(name, line, f"{what}field {field!r} is {len(text):,} characters long (limit {limit:,})")

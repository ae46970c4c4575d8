"""Metadata filters for retrieval: which papers a search may return.

``filters={"year": (2019, 2023), "author": "Hinton", "venue": "NeurIPS", "source": "my.bib"}``
keeps the papers that match every given key. Values:

* ``year``: a year (2021), a ``(first, last)`` pair with ``None`` for an open end, or a string
  "2019-2023", "2019-", "-2023"; papers without a year never match.
* ``author``: a name or part of one; every word of it must be a word of one author's name
  ("Hinton", "G. Hinton", "van der Maaten"); case and accents are ignored; a one-letter word
  ("G", "G.") is an initial and matches any word it starts.
* ``venue``: text that the venue contains (case and accents ignored).
* ``source``: a corpus file name, or a glob ("*.bib"), that the paper was read from.

``author``, ``venue`` and ``source`` also take a list: any of its values may match.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rag.errors import FilterError
from rag.references import display_name
from rag.types import Paper

FILTER_KEYS = ("year", "author", "venue", "source")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_YEAR_RANGE = re.compile(r"^\s*(\d{4})?\s*(?:(-|–|\.\.)\s*(\d{4})?)?\s*$")


def _fold(text: str) -> str:
    """Case- and accent-insensitive form: "Müller" -> "muller"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _words(text: str) -> list[str]:
    return _WORD.findall(_fold(text))


def parse_year_range(value: Any) -> tuple[int | None, int | None]:
    """(first, last) from 2021, (2019, 2023), [2019, None] or "2019-2023" / "2019-" / "-2023"."""
    if isinstance(value, bool):
        raise FilterError(f"filter 'year' must be a year or a range, got {value!r}")
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = value
        for bound in (lo, hi):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)):
                raise FilterError(f"filter 'year' bounds must be whole years or None, got {value!r}")
        if lo is not None and hi is not None and lo > hi:
            raise FilterError(f"filter 'year' range is empty: {lo} is after {hi}")
        return lo, hi
    if isinstance(value, str):
        match = _YEAR_RANGE.match(value)
        if match and (match.group(1) or match.group(3)):
            lo = int(match.group(1)) if match.group(1) else None
            hi = int(match.group(3)) if match.group(3) else (lo if not match.group(2) else None)
            return parse_year_range((lo, hi))
    raise FilterError(f"filter 'year' must be a year, (first, last) or 'YYYY-YYYY', got {value!r}")


def _as_list(key: str, value: Any) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise FilterError(f"filter {key!r} must be a non-empty string or a list of them, got {value!r}")
    return tuple(v.strip() for v in values)


def _name_matches(query_words: list[str], name: str) -> bool:
    words = _words(display_name(name))
    for q in query_words:
        initial = len(q) == 1
        if not any(w == q or (initial and w.startswith(q)) for w in words):
            return False
    return True


@dataclass(frozen=True, slots=True)
class PaperFilter:
    """Validated filters; ``matches(paper)`` says whether a paper passes all of them."""

    year: tuple[int | None, int | None] | None = None
    authors: tuple[str, ...] = ()
    venues: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, filters: Mapping[str, Any] | None) -> PaperFilter:
        """Check and normalise a filters dict; unknown keys and bad values raise ``FilterError``."""
        if not filters:
            return cls()
        if not isinstance(filters, Mapping):
            raise FilterError(f"filters must be a dict, got {type(filters).__name__}")
        unknown = sorted(set(filters) - set(FILTER_KEYS))
        if unknown:
            raise FilterError(f"unknown filter(s) {', '.join(map(repr, unknown))}; use {', '.join(FILTER_KEYS)}")
        given = {k: v for k, v in filters.items() if v is not None}
        return cls(
            year=parse_year_range(given["year"]) if "year" in given else None,
            authors=_as_list("author", given["author"]) if "author" in given else (),
            venues=_as_list("venue", given["venue"]) if "venue" in given else (),
            sources=_as_list("source", given["source"]) if "source" in given else (),
        )

    @property
    def active(self) -> bool:
        return bool(self.year or self.authors or self.venues or self.sources)

    def describe(self) -> str:
        """The filters in words, for messages."""
        parts = []
        if self.year is not None:
            lo, hi = self.year
            parts.append(f"year {lo}" if lo == hi else f"year {lo or '…'}-{hi or '…'}")
        parts += [f"author {a!r}" for a in self.authors]
        parts += [f"venue {v!r}" for v in self.venues]
        parts += [f"source {s!r}" for s in self.sources]
        return ", ".join(parts) or "no filter"

    def matches(self, paper: Paper) -> bool:
        if self.year is not None:
            lo, hi = self.year
            if paper.year is None or (lo is not None and paper.year < lo) or (hi is not None and paper.year > hi):
                return False
        if self.authors and not any(
            _name_matches(_words(a.replace(".", ". ")), name) for a in self.authors for name in paper.authors
        ):
            return False
        if self.venues and not (paper.venue and any(_fold(v) in _fold(paper.venue) for v in self.venues)):
            return False
        if self.sources and not any(
            fnmatch.fnmatch(f, pattern) for pattern in self.sources for f in paper.source_files
        ):
            return False
        return True

    def select(self, papers: Iterable[Paper]) -> set[str]:
        """Ids of the papers that match."""
        return {p.paper_id for p in papers if self.matches(p)}

    def no_match(self, papers: Collection[Paper]) -> str:
        """Why nothing matched, in words: the filters and how many papers have the metadata
        they test (a year filter over papers without years cannot match)."""
        with_year = sum(p.year is not None for p in papers)
        with_authors = sum(bool(p.authors) for p in papers)
        with_venue = sum(bool(p.venue) for p in papers)
        return (
            f"no paper in the index matches {self.describe()} ({len(papers)} papers: "
            f"{with_year} with a year, {with_authors} with authors, {with_venue} with a venue)"
        )

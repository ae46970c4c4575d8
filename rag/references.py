"""How a paper is cited to a reader, and exported to a reference manager.

``reference_text(paper)`` gives "Tai et al. (2019). Equivariant Transformer Networks. Venue.",
``reference_link(paper)`` the DOI or arXiv URL; a paper with no author, year, venue or
identifier (a listing-page dump) is named by its title and corpus file instead. ``to_bibtex``,
``to_ris`` and ``to_csl_json`` export papers for Zotero, JabRef, Mendeley and citation.js.

Author names are stored as the sources give them: "Family, Given" (BibTeX order, from BibTeX,
RIS, CSL-JSON and arXiv), "{Group Name}" for a group, or "Given Family" from plain JSONL/CSV.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rag.identifiers import arxiv_url, doi_url
from rag.types import Answer, Paper

EXPORT_FORMATS = ("bib", "ris", "csl-json")
# "csl" is accepted as a short name of "csl-json".
_FORMAT_ALIASES = {"csl": "csl-json", "bibtex": "bib"}
_PARTICLES = {
    "van",
    "von",
    "der",
    "den",
    "de",
    "del",
    "della",
    "di",
    "da",
    "du",
    "la",
    "le",
    "dos",
    "das",
    "ter",
    "ten",
}
_BIB_SPECIAL = re.compile(r"([\\{}%&$#_])")


def family_name(author: str) -> str:
    """The family name of a stored author name ("Tai, Kai Sheng" -> "Tai", "Jan de Vries" -> "de Vries")."""
    name = author.strip()
    if name.startswith("{") and name.endswith("}"):
        return name[1:-1].strip()
    if "," in name:
        return name.split(",", 1)[0].strip()
    words = name.split()
    if not words:
        return ""
    i = len(words) - 1
    while i > 0 and words[i - 1].lower() in _PARTICLES:
        i -= 1
    return " ".join(words[i:])


def display_name(author: str) -> str:
    """A stored name as a reader writes it: "Tai, Kai Sheng" -> "Kai Sheng Tai"."""
    name = author.strip()
    if name.startswith("{") and name.endswith("}"):
        return name[1:-1].strip()
    parts = [p.strip() for p in name.split(",")]
    if len(parts) == 2 and parts[1]:
        return f"{parts[1]} {parts[0]}"
    if len(parts) == 3:  # "von Last, Jr, First"
        return f"{parts[2]} {parts[0]} {parts[1]}".strip()
    return name


def short_authors(authors: Sequence[str]) -> str | None:
    """ "Tai", "Tai and Bailis", "Tai et al." (None without authors)."""
    families = [f for f in (family_name(a) for a in authors) if f]
    if not families:
        return None
    if len(families) == 1:
        return families[0]
    if len(families) == 2:
        return f"{families[0]} and {families[1]}"
    return f"{families[0]} et al."


def reference_link(paper: Paper) -> str | None:
    """Where a reader can find the paper: its DOI, else its arXiv page, else its URL."""
    if paper.doi:
        return doi_url(paper.doi)
    if paper.arxiv_id:
        return arxiv_url(paper.arxiv_id)
    return paper.url or None


def has_metadata(paper: Paper) -> bool:
    """Whether anything better than the corpus file is known to cite the paper by."""
    return bool(paper.authors or paper.year or paper.venue or paper.doi or paper.arxiv_id or paper.url)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "?", "!")) else text + "."


def reference_text(paper: Paper) -> str:
    """The reference as one line: "Author et al. (year). Title. Venue." (no link).

    Without authors the title leads: "Title (2019). Venue."; with nothing but the title, the
    corpus file names follow it: "Title (000_993bef3f8d9bd4d6.txt)".
    """
    if not has_metadata(paper):
        files = ", ".join(paper.source_files)
        return f"{paper.title} ({files})" if files else paper.title
    authors = short_authors(paper.authors)
    parts = []
    if authors:
        parts.append(f"{authors} ({paper.year})." if paper.year else _sentence(authors))
        parts.append(_sentence(paper.title))
    else:
        parts.append(_sentence(f"{paper.title} ({paper.year})" if paper.year else paper.title))
    if paper.venue:
        parts.append(_sentence(paper.venue))
    elif paper.arxiv_id:
        parts.append(f"arXiv:{paper.arxiv_id}.")
    return " ".join(parts)


def reference_dict(paper: Paper) -> dict[str, Any]:
    """The reference and the metadata behind it, for JSON output."""
    return {
        "text": reference_text(paper),
        "link": reference_link(paper),
        "authors": list(paper.authors),
        "year": paper.year,
        "venue": paper.venue,
        "doi": paper.doi,
        "arxiv_id": paper.arxiv_id,
        "citation_key": paper.citation_key,
    }


def answer_to_dict(answer: Answer, papers: Mapping[str, Paper]) -> dict[str, Any]:
    """``answer.to_dict()`` with a ``reference`` (``reference_dict``) on every citation, source
    and retrieved paper found in ``papers`` (the index's papers by id)."""
    data = answer.to_dict()
    for key in ("citations", "sources", "retrieved"):
        for item in data.get(key, ()):
            paper = papers.get(item.get("paper_id", ""))
            if paper is not None:
                item["reference"] = reference_dict(paper)
    return data


def cited_papers(answer: Answer, papers: Mapping[str, Paper]) -> list[Paper]:
    """The papers an answer cites, in citation order (for export)."""
    return [papers[c.paper_id] for c in answer.citations if c.paper_id in papers]


# -- export -------------------------------------------------------------------------------------
def citation_keys(papers: Sequence[Paper]) -> list[str]:
    """A distinct key per paper: its own citation key, else "family" + year + first title word."""
    keys: list[str] = []
    used: set[str] = set()
    for paper in papers:
        key = paper.citation_key
        if not key:
            family = re.sub(r"\W+", "", family_name(paper.authors[0]).lower()) if paper.authors else ""
            word = next((w for w in re.findall(r"[a-z0-9]+", paper.title.lower()) if len(w) > 3), "paper")
            key = f"{family or 'anon'}{paper.year or ''}{word}"
        base, n = key, 1
        while key in used:
            key = f"{base}{chr(ord('a') + n - 1)}" if n <= 26 else f"{base}-{n}"
            n += 1
        used.add(key)
        keys.append(key)
    return keys


def _bib_escape(text: str) -> str:
    return _BIB_SPECIAL.sub(lambda m: "\\textbackslash{}" if m.group(1) == "\\" else "\\" + m.group(1), text)


def to_bibtex(papers: Iterable[Paper]) -> str:
    """A .bib file of the papers; the original LaTeX title and abstract when the paper has them."""
    import bibtexparser
    from bibtexparser import model

    items = list(papers)
    blocks: list[Any] = []
    for paper, key in zip(items, citation_keys(items), strict=True):
        kind = paper.entry_type or ("article" if paper.venue else "misc")
        fields = [model.Field("title", paper.title_latex or "{" + _bib_escape(paper.title) + "}")]
        if paper.authors:
            fields.append(model.Field("author", " and ".join(_bib_name(a) for a in paper.authors)))
        if paper.venue:
            venue_field = (
                "booktitle" if kind in ("inproceedings", "incollection", "inbook", "conference") else "journal"
            )
            fields.append(model.Field(venue_field, _bib_escape(paper.venue)))
        if paper.year:
            fields.append(model.Field("year", str(paper.year)))
        if paper.doi:
            fields.append(model.Field("doi", paper.doi))
        if paper.arxiv_id:
            fields += [model.Field("eprint", paper.arxiv_id), model.Field("archiveprefix", "arXiv")]
        if paper.url:
            fields.append(model.Field("url", paper.url))
        fields.append(model.Field("abstract", paper.abstract_latex or _bib_escape(paper.abstract)))
        blocks.append(model.Entry(kind, key, fields))
    return bibtexparser.write_string(bibtexparser.Library(blocks))


def _bib_name(author: str) -> str:
    if author.startswith("{") and author.endswith("}"):
        return author
    return _bib_escape(author)


_BIB_TO_RIS = {
    "article": "JOUR",
    "inproceedings": "CPAPER",
    "conference": "CPAPER",
    "incollection": "CHAP",
    "book": "BOOK",
    "techreport": "RPRT",
    "phdthesis": "THES",
    "mastersthesis": "THES",
    "unpublished": "UNPB",
}
_BIB_TO_CSL = {
    "article": "article-journal",
    "inproceedings": "paper-conference",
    "conference": "paper-conference",
    "incollection": "chapter",
    "book": "book",
    "techreport": "report",
    "phdthesis": "thesis",
    "mastersthesis": "thesis",
    "unpublished": "manuscript",
}


def _unnumbered_ris_writer() -> type:
    import rispy

    class UnnumberedRisWriter(rispy.RisWriter):  # type: ignore[misc]
        """rispy's writer without the "1." line before each record, which not every reader skips."""

        def set_header(self, count: int) -> str:
            return ""

    return UnnumberedRisWriter


def to_ris(papers: Iterable[Paper]) -> str:
    """A .ris file of the papers (plain text: titles and abstracts without LaTeX)."""
    import rispy

    items = list(papers)
    records = []
    for paper, key in zip(items, citation_keys(items), strict=True):
        kind = paper.entry_type or "misc"
        record: dict[str, Any] = {
            "type_of_reference": _BIB_TO_RIS.get(kind, "GEN"),
            "id": key,
            "title": paper.title,
            "abstract": paper.abstract,
        }
        if paper.authors:
            record["authors"] = [display_name(a) if a.startswith("{") else a for a in paper.authors]
        if paper.year:
            record["year"] = str(paper.year)
        if paper.venue:
            record["secondary_title"] = paper.venue
        if paper.doi:
            record["doi"] = paper.doi
        urls = [u for u in (paper.url, arxiv_url(paper.arxiv_id) if paper.arxiv_id else None) if u]
        if urls:
            record["urls"] = list(dict.fromkeys(urls))
        records.append(record)
    return rispy.dumps(records, implementation=_unnumbered_ris_writer())


def to_csl_json(papers: Iterable[Paper]) -> str:
    """A CSL-JSON array of the papers (what Zotero and citation.js read)."""
    items = list(papers)
    out = []
    for paper, key in zip(items, citation_keys(items), strict=True):
        item: dict[str, Any] = {
            "id": key,
            "citation-key": key,
            "type": _BIB_TO_CSL.get(paper.entry_type or "", "article"),
            "title": paper.title,
            "abstract": paper.abstract,
        }
        if paper.authors:
            item["author"] = [_csl_name(a) for a in paper.authors]
        if paper.year:
            item["issued"] = {"date-parts": [[paper.year]]}
        if paper.venue:
            item["container-title"] = paper.venue
        if paper.doi:
            item["DOI"] = paper.doi
        if paper.url or paper.arxiv_id:
            item["URL"] = paper.url or arxiv_url(paper.arxiv_id or "")
        if paper.arxiv_id:
            item["number"] = f"arXiv:{paper.arxiv_id}"
        out.append(item)
    return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


def _csl_name(author: str) -> dict[str, str]:
    if author.startswith("{") and author.endswith("}"):
        return {"literal": author[1:-1]}
    parts = [p.strip() for p in author.split(",")]
    if len(parts) == 2:
        return {"family": parts[0], "given": parts[1]}
    if len(parts) == 3:
        return {"family": parts[0], "suffix": parts[1], "given": parts[2]}
    family = family_name(author)
    given = author[: len(author) - len(family)].strip() if author.endswith(family) else ""
    return {"family": family, "given": given} if given else {"literal": author}


def export_references(papers: Iterable[Paper], fmt: str) -> str:
    """The papers in one of ``EXPORT_FORMATS``: "bib", "ris" or "csl-json" ("csl" too)."""
    fmt = _FORMAT_ALIASES.get(fmt, fmt)
    if fmt == "bib":
        return to_bibtex(papers)
    if fmt == "ris":
        return to_ris(papers)
    if fmt == "csl-json":
        return to_csl_json(papers)
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")

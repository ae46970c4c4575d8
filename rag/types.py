"""Frozen records that flow through the pipeline: Paper -> Chunk -> ScoredChunk.

Ids are derived from content so that the same paper always gets the same id, whichever file
or order it was read from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where an entry was read from: a corpus file name and the 1-based line of its title."""

    file: str
    line: int

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceRef:
        return cls(file=str(data["file"]), line=int(data["line"]))


@dataclass(frozen=True, slots=True)
class Paper:
    """One distinct paper of the collection (duplicates merged by normalised title).

    Attributes:
        paper_id: stable id derived from the normalised title (slug + hash suffix).
        title: the title as written in the first file that had it.
        abstract: the abstract text, whitespace-normalised.
        sources: every place the paper was read from, in reading order.
        url, authors, year: optional fields from JSONL / CSV corpora.
    """

    paper_id: str
    title: str
    abstract: str
    sources: tuple[SourceRef, ...] = ()
    url: str | None = None
    authors: tuple[str, ...] = ()
    year: int | None = None

    @property
    def source_files(self) -> tuple[str, ...]:
        """Distinct corpus file names this paper came from, in reading order."""
        return tuple(dict.fromkeys(s.file for s in self.sources))

    def to_dict(self) -> dict[str, Any]:
        return {
            "paper_id": self.paper_id,
            "title": self.title,
            "abstract": self.abstract,
            "sources": [s.to_dict() for s in self.sources],
            "url": self.url,
            "authors": list(self.authors),
            "year": self.year,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Paper:
        return cls(
            paper_id=str(data["paper_id"]),
            title=str(data["title"]),
            abstract=str(data["abstract"]),
            sources=tuple(SourceRef.from_dict(s) for s in data.get("sources", ())),
            url=data.get("url"),
            authors=tuple(data.get("authors") or ()),
            year=data.get("year"),
        )


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of one abstract that fits the embedder's window.

    Offsets are character offsets into ``Paper.abstract``: ``abstract[start:end] == text``.
    ``sentences`` holds (start, end) offsets, also into the abstract, of the sentences (or
    sentence pieces, for a sentence longer than a chunk) the chunk is made of; later stages
    cite these individual sentences.
    """

    chunk_id: str
    paper_id: str
    title: str
    text: str
    start: int
    end: int
    sentences: tuple[tuple[int, int], ...]
    position: int = 0

    @property
    def embed_text(self) -> str:
        """The text that is embedded: the title first, so every chunk knows its paper."""
        return f"{self.title}\n{self.text}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sentences"] = [list(s) for s in self.sentences]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Chunk:
        return cls(
            chunk_id=str(data["chunk_id"]),
            paper_id=str(data["paper_id"]),
            title=str(data["title"]),
            text=str(data["text"]),
            start=int(data["start"]),
            end=int(data["end"]),
            sentences=tuple((int(a), int(b)) for a, b in data["sentences"]),
            position=int(data.get("position", 0)),
        )


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A retrieved chunk with its score and the retriever(s) that found it."""

    chunk: Chunk
    score: float
    ranks: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"chunk": self.chunk.to_dict(), "score": self.score, "ranks": dict(self.ranks)}

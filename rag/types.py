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
    """One distinct paper of the collection (duplicates merged by DOI, arXiv id or normalised title).

    Attributes:
        paper_id: stable id derived from the normalised title (slug + hash suffix), or the
            record's own id in JSONL / CSV.
        title: the title as written in the first file that had it, as plain Unicode text (LaTeX
            markup of BibTeX and arXiv records decoded); this is what is embedded and shown.
        abstract: the abstract text, plain, whitespace-normalised.
        sources: every place the paper was read from, in reading order.
        url, authors, year: optional; ``authors`` are names as the source gives them, "Family,
            Given" when the source separates the parts (BibTeX, RIS, CSL-JSON, arXiv).
        venue: journal, proceedings or conference name.
        doi: the DOI, lower-cased, without a resolver prefix.
        arxiv_id: the arXiv id without version ("1901.11399", "hep-th/9901001").
        citation_key: the BibTeX key (or CSL-JSON id, RIS ID) of the record.
        entry_type: the BibTeX entry type ("article", "inproceedings", "misc", ...).
        title_latex, abstract_latex: the original LaTeX source, only when it differs from the
            plain text.
    """

    paper_id: str
    title: str
    abstract: str
    sources: tuple[SourceRef, ...] = ()
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

    @property
    def source_files(self) -> tuple[str, ...]:
        """Distinct corpus file names this paper came from, in reading order."""
        return tuple(dict.fromkeys(s.file for s in self.sources))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "paper_id": self.paper_id,
            "title": self.title,
            "abstract": self.abstract,
            "sources": [s.to_dict() for s in self.sources],
            "url": self.url,
            "authors": list(self.authors),
            "year": self.year,
        }
        # Written only when known, so that papers.jsonl files and corpus hashes of corpora
        # without this metadata stay exactly as they were (no rebuild after an upgrade).
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Paper:
        year = data.get("year")
        return cls(
            paper_id=str(data["paper_id"]),
            title=str(data["title"]),
            abstract=str(data["abstract"]),
            sources=tuple(SourceRef.from_dict(s) for s in data.get("sources", ())),
            url=data.get("url"),
            authors=tuple(str(a) for a in data.get("authors") or ()),
            year=int(year) if year is not None else None,
            **{name: _optional_str(data.get(name)) for name in _OPTIONAL_FIELDS},
        )


_OPTIONAL_FIELDS = ("venue", "doi", "arxiv_id", "citation_key", "entry_type", "title_latex", "abstract_latex")


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


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
    """A retrieved chunk with its score; ``rank`` is 1-based within the retriever that found it."""

    chunk: Chunk
    score: float
    rank: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"chunk": self.chunk.to_dict(), "score": self.score, "rank": self.rank}


@dataclass(frozen=True, slots=True)
class RetrievedPaper:
    """A paper found for a question (a paper appears once), with how each retriever ranked it.

    ``dense_score`` is the best cosine similarity between the question and any of the paper's
    chunks; it is what the refusal threshold is calibrated on.
    """

    paper_id: str
    title: str
    score: float
    dense_score: float
    bm25_score: float = 0.0
    dense_rank: int | None = None
    bm25_rank: int | None = None
    # The corpus files the paper was read from.
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "paper_id": self.paper_id,
            "title": self.title,
            "score": round(self.score, 6),
            "dense_score": round(self.dense_score, 6),
            "bm25_score": round(self.bm25_score, 6),
            "dense_rank": self.dense_rank,
            "bm25_rank": self.bm25_rank,
            "files": list(self.files),
        }


@dataclass(frozen=True, slots=True)
class EvidenceSentence:
    """One sentence of an abstract shown to the model; offsets are into ``Paper.abstract``."""

    start: int
    end: int
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "text": self.text, "score": round(self.score, 6)}


@dataclass(frozen=True, slots=True)
class Source:
    """A numbered source of the prompt: a paper and the sentences of it that the model saw."""

    n: int
    paper_id: str
    title: str
    sentences: tuple[EvidenceSentence, ...]
    retrieval_score: float
    files: tuple[str, ...] = ()
    # Sentences of the abstract that give instructions to an AI model, kept out of the prompt.
    withheld: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "paper_id": self.paper_id,
            "title": self.title,
            "sentences": [s.to_dict() for s in self.sentences],
            "retrieval_score": round(self.retrieval_score, 6),
            "files": list(self.files),
            "withheld": list(self.withheld),
        }


@dataclass(frozen=True, slots=True)
class Citation:
    """A paper cited in the final answer, numbered 1..n in order of first use.

    ``evidence`` holds the source sentences that support the claims citing it; ``prompt_n`` is
    the number the paper had in the prompt, before renumbering.
    """

    n: int
    paper_id: str
    title: str
    files: tuple[str, ...]
    evidence: tuple[str, ...]
    score: float
    prompt_n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "paper_id": self.paper_id,
            "title": self.title,
            "files": list(self.files),
            "evidence": list(self.evidence),
            "score": round(self.score, 6),
            "prompt_n": self.prompt_n,
        }


@dataclass(frozen=True, slots=True)
class AnswerSentence:
    """One sentence of the answer, its final citation numbers, and whether evidence backs it.

    ``repaired`` is true when the verifier changed the model's citations for this sentence;
    ``issues`` says why a citation was dropped or the sentence is unsupported.
    """

    text: str
    citations: tuple[int, ...]
    supported: bool
    repaired: bool = False
    issues: tuple[str, ...] = ()
    # The sentence as the reader sees it: final markers (or the unsupported mark) in place.
    shown: str = ""
    # "supported", "unsupported", "no-answer" (restates the question) or "system" (written by the
    # system from a verified citation, such as the paper's name for a "which paper" question).
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "shown": self.shown,
            "verdict": self.verdict,
            "citations": list(self.citations),
            "supported": self.supported,
            "repaired": self.repaired,
            "issues": list(self.issues),
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """The result of one question: verified text with [n] markers, and everything behind it.

    ``text`` is what to show; ``raw_text`` is what the model wrote. ``sources`` are the numbered
    papers of the prompt; ``citations`` the papers the final text cites, renumbered 1..n.
    """

    question: str
    text: str
    raw_text: str
    citations: tuple[Citation, ...]
    sentences: tuple[AnswerSentence, ...]
    refused: bool
    retrieved: tuple[RetrievedPaper, ...]
    sources: tuple[Source, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    model: str = ""
    refusal_reason: str | None = None
    standalone_question: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    invalid_citations: int = 0
    warnings: tuple[str, ...] = ()
    # The answer's form ("fact", "which-paper", "list", "compare") and, when refused, the
    # refusal policy's reason code (rag.refusal).
    form: str = "fact"
    refusal_code: str | None = None
    # The model's reply was cut off (an LLM server's stream dropped mid-answer): the text is what
    # it wrote until then, verified as usual; ``warnings`` says why. Never show it as complete.
    incomplete: bool = False

    # The records of the cited papers (authors, year, venue, DOI, ...), for references and
    # export; filled in by the pipeline, empty when the answer cites nothing.
    papers: tuple[Paper, ...] = ()

    def references(self, fmt: str = "bib") -> str:
        """The cited papers, in citation order, as "bib" (BibTeX), "ris" or "csl-json" text."""
        from rag.references import export_references  # rag.references imports this module

        by_id = {p.paper_id: p for p in self.papers}
        cited = [by_id[c.paper_id] for c in self.citations if c.paper_id in by_id]
        return export_references(list(dict.fromkeys(cited)), fmt)

    def to_dict(self) -> dict[str, Any]:
        """The answer as JSON; each citation carries its ``reference`` (text, link, authors,
        year, venue, DOI, arXiv id, key) when the cited paper's record is known."""
        from rag.references import reference_dict

        by_id = {p.paper_id: p for p in self.papers}
        citations = []
        for c in self.citations:
            item = c.to_dict()
            if c.paper_id in by_id:
                item["reference"] = reference_dict(by_id[c.paper_id])
            citations.append(item)
        return {
            "question": self.question,
            "text": self.text,
            "raw_text": self.raw_text,
            "citations": citations,
            "sentences": [s.to_dict() for s in self.sentences],
            "refused": self.refused,
            "refusal_reason": self.refusal_reason,
            "retrieved": [r.to_dict() for r in self.retrieved],
            "sources": [s.to_dict() for s in self.sources],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "model": self.model,
            "standalone_question": self.standalone_question,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "invalid_citations": self.invalid_citations,
            "warnings": list(self.warnings),
            "form": self.form,
            "refusal_code": self.refusal_code,
            "incomplete": self.incomplete,
        }

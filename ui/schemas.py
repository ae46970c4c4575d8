"""Request and response models of the HTTP API (what ``/docs`` shows).

Requests forbid unknown fields, so a client cannot slip in a setting the API does not offer (a
model file, an index path): such a request is a 422 that names the field. Responses mirror the
``to_dict()`` of the records in ``rag.types`` field for field; ``tests/test_api.py`` checks that
they stay in step, and unknown fields pass through rather than being dropped.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Limits on what a client may send. The chat box takes 5,000 characters; longer questions are
# a mistake or an attack, and the pipeline reads only the first 1,000 anyway (with a warning).
MAX_QUESTION_CHARS = 5000
MAX_ANSWER_CHARS = 20_000
MAX_HISTORY_TURNS = 20
MAX_FILTER_IDS = 100
MAX_FILTER_VALUES = 20
MAX_ID_CHARS = 300
TOP_K_MAX = 8
SEARCH_K_MAX = 50
Mode = Literal["hybrid", "dense", "bm25"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Record(BaseModel):
    # A field the core adds to a record reaches clients before this schema documents it.
    model_config = ConfigDict(extra="allow")


# -- requests -------------------------------------------------------------------------------------
class Turn(_Request):
    """One earlier exchange of the conversation, for follow-up questions ("what about its cost?")."""

    question: str = Field(max_length=MAX_QUESTION_CHARS, description="an earlier question")
    answer: str = Field(max_length=MAX_ANSWER_CHARS, description="the answer's `text` to it")


class Filters(_Request):
    """Restrict the papers an answer may use. The metadata filters (years, author, venue, source
    file) are applied before retrieval ranks anything, so the top k is filled from matching
    papers; a filter no paper matches gives a refused answer with `refusal_code`
    "no-paper-matches-filters". `paper_ids` is applied to the best candidates of each retriever
    (40 chunks each by default): a listed paper that neither ranks that high is not found."""

    paper_ids: list[str] | None = Field(
        default=None,
        max_length=MAX_FILTER_IDS,
        description="only these papers (ids as in `/api/search` results); unknown ids are a 422",
    )
    year_min: int | None = Field(default=None, ge=0, le=9999, description="only papers from this year on")
    year_max: int | None = Field(default=None, ge=0, le=9999, description="only papers up to this year")
    author: list[str] | None = Field(
        default=None,
        max_length=MAX_FILTER_VALUES,
        description='only papers by one of these authors ("Hinton", "G. Hinton"; every word must be a word of '
        "one author's name, case and accents ignored)",
    )
    venue: list[str] | None = Field(
        default=None, max_length=MAX_FILTER_VALUES, description="only papers whose venue contains one of these"
    )
    source: list[str] | None = Field(
        default=None,
        max_length=MAX_FILTER_VALUES,
        description='only papers read from one of these corpus files (a name or a glob: "*.bib")',
    )

    @model_validator(mode="after")
    def _check(self) -> Filters:
        if self.year_min is not None and self.year_max is not None and self.year_min > self.year_max:
            raise ValueError(f"year_min ({self.year_min}) is after year_max ({self.year_max})")
        for pid in self.paper_ids or ():
            if not pid or len(pid) > MAX_ID_CHARS:
                raise ValueError(f"a paper id must be 1 to {MAX_ID_CHARS} characters")
        for values in (self.author, self.venue, self.source):
            for value in values or ():
                if not value.strip() or len(value) > MAX_ID_CHARS:
                    raise ValueError(f"an author, venue or source must be 1 to {MAX_ID_CHARS} characters")
        return self

    @property
    def empty(self) -> bool:
        return all(
            v is None for v in (self.paper_ids, self.year_min, self.year_max, self.author, self.venue, self.source)
        )

    def metadata(self) -> dict[str, object]:
        """The metadata filters in ``rag.filters`` form (empty when none is given)."""
        out: dict[str, object] = {}
        if self.year_min is not None or self.year_max is not None:
            out["year"] = (self.year_min, self.year_max)
        for key in ("author", "venue", "source"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        return out


class AskRequest(_Request):
    """A question, and optionally the conversation so far and per-question settings."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"question": "What is Matryoshka Representation Learning?"},
                {
                    "question": "How much does it save?",
                    "history": [
                        {"question": "What is Matryoshka Representation Learning?", "answer": "It learns ... [1]."}
                    ],
                    "top_k": 4,
                    "strict": True,
                },
            ]
        },
    )

    question: str = Field(
        max_length=MAX_QUESTION_CHARS,
        description="the question in plain words; one with no words is a 400 (the pipeline reads the "
        "first 1,000 characters and says so in `warnings`)",
    )
    history: list[Turn] = Field(
        default_factory=list,
        max_length=MAX_HISTORY_TURNS,
        description="earlier turns, oldest first; a follow-up is rewritten into a standalone question",
    )
    top_k: int | None = Field(default=None, ge=1, le=TOP_K_MAX, description="papers given to the model (default 4)")
    mode: Mode | None = Field(default=None, description="retrieval mode (default hybrid: dense + BM25)")
    strict: bool | None = Field(default=None, description="drop answer sentences that no source supports")
    filters: Filters | None = None


# -- records (responses) --------------------------------------------------------------------------
class RetrievedPaperOut(_Record):
    """A paper found for a question, with how each retriever ranked it."""

    paper_id: str
    title: str
    score: float = Field(description="fused score (reciprocal-rank fusion; higher is better)")
    dense_score: float = Field(description="best cosine similarity of the question to the paper's chunks")
    bm25_score: float
    dense_rank: int | None
    bm25_rank: int | None
    files: list[str] = Field(description="corpus files the paper was read from")


class EvidenceSentenceOut(_Record):
    start: int = Field(description="character offset into the abstract")
    end: int
    text: str
    score: float


class SourceOut(_Record):
    """A numbered source of the prompt: a paper and the sentences of it the model read."""

    n: int
    paper_id: str
    title: str
    sentences: list[EvidenceSentenceOut]
    retrieval_score: float
    files: list[str]
    withheld: list[str] = Field(description="sentences kept out of the prompt (instructions to an AI model)")


class ReferenceOut(_Record):
    """How to cite a paper: one line of text, a link, and the metadata behind them."""

    text: str = Field(
        description='"Author et al. (year). Title. Venue." (title and corpus file when nothing better is known)'
    )
    link: str | None = Field(description="the DOI link, else the arXiv page, else the paper's URL")
    authors: list[str]
    year: int | None
    venue: str | None
    doi: str | None
    arxiv_id: str | None
    citation_key: str | None


class CitationOut(_Record):
    """A paper the answer cites, numbered 1..n in order of first use."""

    n: int
    paper_id: str
    title: str
    files: list[str] = Field(description="corpus files the paper was read from")
    evidence: list[str] = Field(description="the abstract sentences that back the claims citing it")
    score: float
    prompt_n: int = Field(description="the number the paper had in the prompt")
    reference: ReferenceOut | None = Field(default=None, description="the paper's reference (known for cited papers)")


class SentenceOut(_Record):
    """One sentence of the answer and its verdict."""

    text: str
    shown: str = Field(description="the sentence as shown, with its final markers")
    citations: list[int]
    supported: bool = Field(description="whether the cited evidence backs it")
    repaired: bool = Field(description="whether the verifier changed the model's citations")
    issues: list[str]
    verdict: str = Field(
        description='"supported", "unsupported", "no-answer" (restates the question), "quote" (an abstract '
        'sentence quoted) or "system" (written by the system from a verified citation)'
    )


class AnswerOut(_Record):
    """``Answer.to_dict()``: the verified answer and everything behind it."""

    question: str
    text: str = Field(description="the answer with verified [n] markers (or the refusal)")
    raw_text: str = Field(description="what the model wrote")
    citations: list[CitationOut]
    sentences: list[SentenceOut]
    refused: bool
    refusal_reason: str | None
    retrieved: list[RetrievedPaperOut]
    sources: list[SourceOut]
    timings: dict[str, float] = Field(description="seconds per stage (retrieve, first_token, total, ...)")
    model: str
    standalone_question: str | None = Field(description="the follow-up rewritten, when it was")
    prompt_tokens: int
    completion_tokens: int
    invalid_citations: int
    warnings: list[str]
    form: str = Field(description='the answer form: "fact", "which-paper", "list" or "compare"')
    refusal_code: str | None = Field(description="the refusal policy's reason code when refused")
    incomplete: bool = Field(
        False,
        description="the model's reply was cut off (the LLM server's stream dropped): the text is verified "
        "as far as it got, and is not a complete answer; `warnings` says why",
    )


class SourceRefOut(_Record):
    file: str = Field(description="corpus file name")
    line: int = Field(description="1-based line of the title")


class PaperOut(_Record):
    """A paper of the collection with its metadata and abstract."""

    paper_id: str
    title: str
    abstract: str
    sources: list[SourceRefOut]
    url: str | None
    authors: list[str]
    year: int | None


class SearchOut(BaseModel):
    query: str
    mode: Mode
    k: int
    results: list[RetrievedPaperOut]
    seconds: float


# -- streaming events -------------------------------------------------------------------------------
class QueuedEvent(BaseModel):
    """``event: queued``: the request waits for the model; sent when its place changes."""

    ahead: int = Field(description="requests before this one, the one running included")
    wait_s: float | None = Field(
        default=None, description="estimated wait in seconds, from recent answer times (none before one finished)"
    )


class EvidenceEventOut(BaseModel):
    """``event: evidence``: retrieval and evidence are ready; the model has not started."""

    question: str = Field(description="the standalone question that was searched")
    retrieved: list[RetrievedPaperOut]
    sources: list[SourceOut] = Field(description="empty when no paper is close enough (a refusal follows)")
    timings: dict[str, float]
    warnings: list[str] = Field(default_factory=list, description="what happened to the question (a long one cut)")


class ProgressEventOut(BaseModel):
    """``event: progress``: the model is reading the prompt (most of the wait on a CPU)."""

    prompt_tokens: int = Field(description="tokens of the prompt (instructions, evidence, question)")
    estimate_s: float | None = Field(
        description="seconds to read them at the prefill speed measured on this server (none before measured)"
    )
    prefill_tokens_per_s: float | None
    text: str = Field(description='the same in words: "reading 450 tokens of evidence, about 4 s"')


class SentenceEventOut(BaseModel):
    """``event: sentence``: a sentence of the answer, verified as soon as the model finished it,
    in its final form. Sent before the token that started the next sentence."""

    index: int = Field(description="0, 1, ... in the order of the answer")
    text: str = Field(description="the sentence as shown: final [n] markers, or [?] when unsupported")
    body: str = Field(description="the sentence without markers")
    citations: list[int] = Field(description="its final citation numbers (numbered 1..n in order of first use)")
    cited: list[CitationOut] = Field(description="the papers those numbers stand for, with the backing sentences")
    verdict: str = Field(description='"supported", "unsupported" or "no-answer" (restates the question)')
    supported: bool
    reason: str | None = Field(description="why no source backs it, in plain words; null when supported")
    raw_end: int = Field(
        description="characters of the raw text (token pieces joined) verified so far; the rest is being written"
    )


class TokenEventOut(BaseModel):
    """``event: token``: a piece of the model's raw, unverified text (show it as unverified until a
    ``sentence`` event covers it)."""

    text: str


class ErrorEventOut(BaseModel):
    """``event: error``: the request failed after the stream started; nothing follows."""

    status: int = Field(description="the HTTP status it would have had")
    detail: str


# -- errors and health --------------------------------------------------------------------------------
class ErrorOut(BaseModel):
    detail: str


class QueueFullOut(BaseModel):
    detail: str
    retry_after_s: int = Field(description="seconds to wait before retrying (also in the Retry-After header)")


class IndexHealth(BaseModel):
    ok: bool
    detail: str | None = Field(default=None, description="why it cannot be used, and what to run")
    papers: int | None = None
    chunks: int | None = None
    embedding_model: str | None = None
    embedding_dimension: int | None = None
    index_type: str | None = None
    corpus_hash: str | None = None
    built_at: str | None = None
    format_version: int | None = None


class ModelHealth(BaseModel):
    ok: bool
    name: str
    status: str = Field(description="not loaded yet | loading | ready | unavailable: ...")


class QueueHealth(BaseModel):
    running: int
    waiting: int
    max_waiting: int
    served: int
    refused_full: int
    mean_turn_s: float


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    index: IndexHealth
    model: ModelHealth
    queue: QueueHealth

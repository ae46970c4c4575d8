"""The pipeline behind ``ask()``: retrieve -> select evidence -> generate (streaming) -> verify
-> decide -> compose, each stage a method of ``Answerer`` with typed input and output.

The system, not the model, decides what is trusted: ``rag.refusal.RefusalPolicy`` is the one
place that refuses (nothing relevant retrieved, the model says the sources do not answer, no
sentence survives verification, a name the question asks about is absent), and the answer's form
(which paper, list, compare, fact; ``rag.forms``) is rendered by the system, not left to the model.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rag.citations import find_citations, render_sentence, renumber, split_answer
from rag.config import RagConfig, get_config
from rag.errors import ConfigError, ContextOverflowError, RagError
from rag.evidence import CachedEmbedder, content_words, select_evidence
from rag.forms import name_noun_citations, question_form, short_title
from rag.llm import Generator, load_generator
from rag.models import Embedder, load_embedder
from rag.prompts import CANNOT_ANSWER, REWRITE_SYSTEM, REWRITE_TEMPLATE, answer_messages
from rag.refusal import NOTHING_VERIFIED, Decision, RefusalPolicy
from rag.retrieve import Retriever
from rag.store import RagIndex, open_index
from rag.types import Answer, AnswerSentence, Citation, RetrievedPaper, Source
from rag.verify import Verified, Verifier, is_refusal, numbers_in

logger = logging.getLogger(__name__)

History = Sequence[tuple[str, str] | Answer]
# Settings of the index itself: an Answerer answers from one index, so a question cannot change
# them (make another Answerer, or rebuild the index).
INDEX_FIELDS = ("index_dir", "corpus", "embed_model", "embed_batch_size", "chunk_overlap", "index_type")
# Retrievers kept for per-question `candidates` / `rrf_k` beside the configured one.
_MAX_RETRIEVERS = 8
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_FOLLOW_UP = re.compile(
    r"\b(it|its|it's|they|them|their|this|that|these|those|he|she|his|her|the paper|the method|the model|the same|what about|how about)\b",
    re.IGNORECASE,
)
# The model echoing prompt structure means it has stopped answering.
_ECHO = re.compile(r"(<\s*/?\s*sources\s*>|\nQuestion:|<\|im_start\|>|<\|im_end\|>)")


@dataclass(frozen=True, slots=True)
class Retrieval:
    """What the retrieve stage hands on: the question, its embedding, the papers found."""

    question: str
    vector: np.ndarray
    retrieved: tuple[RetrievedPaper, ...]


@dataclass(slots=True)
class Generation:
    """What the generate stage produced (filled in as the stream ends)."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)


# "How many ...", "what accuracy ...": a quote that answers it must hold a number.
_WANTS_NUMBER = re.compile(
    r"\b(how (many|much|large|long|big|fast|often)|what (percentage|share|fraction|number|accuracy|score|error|"
    r"speed-?up|f1|map|auc|bleu|rate)|by how much|to what extent)\b",
    re.IGNORECASE,
)


# Words of list questions that name the collection, not the topic.
_NOT_TOPIC = frozenset(content_words("collection corpus find findings papers works studies"))


_YES_NO = re.compile(r"^\s*(do|does|did|can|could|is|are|was|were|has|have|will|would|should)\b", re.IGNORECASE)


def renumbered(
    sentences: Sequence[AnswerSentence], citations: Sequence[Citation]
) -> tuple[list[AnswerSentence], list[Citation]]:
    """Citations renumbered 1..n in order of first use over ``sentences``, and the sentences shown
    again with their new numbers."""
    mapping = renumber(s.citations for s in sentences)
    by_n = {c.n: c for c in citations}
    new_sentences = [
        replace(
            s,
            citations=tuple(mapping[n] for n in s.citations),
            shown=render_sentence(s.text, [mapping[n] for n in s.citations], unsupported=not s.supported),
        )
        for s in sentences
    ]
    new_citations = sorted(
        (replace(by_n[old], n=new) for old, new in mapping.items() if old in by_n), key=lambda c: c.n
    )
    return new_sentences, new_citations


class QuestionError(RagError):
    """The question cannot be asked as given (empty, only whitespace or control characters)."""


@dataclass(frozen=True, slots=True)
class EvidenceEvent:
    """Retrieval and evidence are ready; the model has not started. Show these at once."""

    kind: ClassVar[str] = "evidence"
    question: str
    retrieved: tuple[RetrievedPaper, ...]
    sources: tuple[Source, ...]
    timings: dict[str, float]


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """A piece of the model's raw text as it is written (before verification)."""

    kind: ClassVar[str] = "token"
    text: str


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    """The final, verified answer."""

    kind: ClassVar[str] = "answer"
    answer: Answer


Event = EvidenceEvent | TokenEvent | AnswerEvent


def clean_question(question: str, max_chars: int) -> tuple[str, list[str]]:
    """Normalise a question; raise ``QuestionError`` if nothing is left. Returns warnings too."""
    if not isinstance(question, str):
        raise QuestionError(f"the question must be text, got {type(question).__name__}")
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", question))
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        raise QuestionError("the question is empty; ask something about the papers")
    if not any(ch.isalnum() for ch in text):
        raise QuestionError("the question has no words (only punctuation or symbols); ask something about the papers")
    warnings = []
    if len(text) > max_chars:
        warnings.append(f"the question was {len(text)} characters long; only the first {max_chars} were used")
        logger.warning(warnings[-1])
        text = text[:max_chars].rstrip()
    logger.debug("question: %s", text)  # questions are private: never logged at INFO
    return text, warnings


def repeats_itself(text: str) -> bool:
    """True when the model is looping: a sentence written twice, or a long run repeated."""
    sentences = [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20]
    if len(sentences) != len(set(sentences)):
        return True
    tail = text[-60:]
    return len(tail) == 60 and text.count(tail) >= 3


class Answerer:
    """Answers questions over one index; loads its models lazily, once, and shares them.

    Thread-safe: retrieval runs concurrently, generation is one at a time (callers queue on the
    generator's lock).
    """

    def __init__(
        self,
        config: RagConfig | dict[str, Any] | None = None,
        *,
        index: RagIndex | None = None,
        embedder: Embedder | None = None,
        generator: Generator | None = None,
    ) -> None:
        self.config = get_config(config)
        self._embedder = embedder or (index.embedder if index is not None else None)
        self._index = index
        self._generator = generator
        self._retriever: Retriever | None = None
        self._cached: CachedEmbedder | None = None
        self._df: dict[str, int] | None = None  # document frequency of content words (list questions)
        self._active = 0  # answers being made: the index is not swapped under them
        self._retrievers: dict[tuple[int, int], Retriever] = {}  # per-question candidates / rrf_k
        # Guards lazy loading only. Re-entrant: sentence_embedder may need the index first.
        self._lock = threading.RLock()

    # -- lazily loaded parts -------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.config.embed_model, batch_size=self.config.embed_batch_size)
        return self._embedder

    @property
    def index(self) -> RagIndex:
        with self._lock:
            if self._index is None:
                self._index = open_index(self.config.index_dir, self.embedder)
            return self._index

    @property
    def loaded_index(self) -> RagIndex | None:
        """The index in use, or None before the first question opened it."""
        return self._index

    def use_index(self, index: RagIndex) -> bool:
        """Answer from ``index`` from the next question on (a rebuilt index, opened by the caller).

        Never mid-answer: while a question is being answered nothing changes and this returns
        False, so the caller tries again before a later question.
        """
        with self._lock:
            if self._active:
                return False
            if index is not self._index:
                self._index, self._retriever, self._df = index, None, None
                self._retrievers.clear()
                self._embedder = self._embedder or index.embedder
            return True

    @property
    def retriever(self) -> Retriever:
        index = self.index
        with self._lock:
            if self._retriever is None:
                self._retriever = Retriever(index, candidates=self.config.candidates, rrf_k=self.config.rrf_k)
            return self._retriever

    def retriever_for(self, cfg: RagConfig) -> Retriever:
        """The retriever for a question's ``candidates`` and ``rrf_k`` (the configured one when they
        are the answerer's own; others are made once and kept)."""
        key = (cfg.candidates, cfg.rrf_k)
        if key == (self.config.candidates, self.config.rrf_k):
            return self.retriever
        index = self.index
        with self._lock:
            retriever = self._retrievers.get(key)
            if retriever is None:
                if len(self._retrievers) >= _MAX_RETRIEVERS:
                    self._retrievers.pop(next(iter(self._retrievers)))
                retriever = self._retrievers[key] = Retriever(index, candidates=cfg.candidates, rrf_k=cfg.rrf_k)
            return retriever

    def generator_for(self, cfg: RagConfig) -> Generator:
        """The generator for a question's ``model``, ``n_ctx`` and ``n_threads`` (the configured one
        when they are the answerer's own; others come from the per-process cache of loaded models)."""
        if (cfg.model, cfg.n_ctx, cfg.n_threads) == (self.config.model, self.config.n_ctx, self.config.n_threads):
            return self.generator
        return load_generator(cfg.model, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads)

    @property
    def generator(self) -> Generator:
        with self._lock:
            if self._generator is None:
                self._generator = load_generator(
                    self.config.model, n_ctx=self.config.n_ctx, n_threads=self.config.n_threads
                )
            return self._generator

    @property
    def sentence_embedder(self) -> CachedEmbedder:
        with self._lock:
            if self._cached is None:
                self._cached = CachedEmbedder(self._embedder or self.index.embedder)
            return self._cached

    def warm_up(self) -> None:
        """Load everything a first question needs, so that it is as fast as the next ones: the
        index, BM25, the embedder, the model, and llama.cpp's KV cache for the fixed system prompt
        (one generated token; later prompts that start the same way reuse it)."""
        self.retriever.search("warm-up", 1)
        self.sentence_embedder.embed(["warm-up"])
        messages = answer_messages("warm-up", ())
        with contextlib.closing(self.generator.stream(messages, max_tokens=1)) as stream:  # type: ignore[type-var]
            for _ in stream:
                pass

    # -- the pipeline -------------------------------------------------------------------------
    def ask(self, question: str, history: History | None = None, **overrides: Any) -> Answer:
        """Answer synchronously; always returns an ``Answer`` (raises only for a bad question)."""
        final: Answer | None = None
        for event in self.stream(question, history, **overrides):
            if isinstance(event, AnswerEvent):
                final = event.answer
        assert final is not None  # stream always ends with an AnswerEvent
        return final

    def stream(self, question: str, history: History | None = None, **overrides: Any) -> Iterator[Event]:
        """Yield an ``EvidenceEvent``, then ``TokenEvent``s as the model writes, then an ``AnswerEvent``.

        The stages, each a method with typed input and output: ``retrieve`` -> ``select`` ->
        ``generate`` -> ``verify`` -> ``decide`` (the ``RefusalPolicy``) -> ``compose``.
        Keyword overrides (``top_k``, ``strict``, ``retrieval_mode``, ...) change the config for
        this question only.
        """
        fixed = sorted(k for k, v in overrides.items() if k in INDEX_FIELDS and v is not None)
        if fixed:
            raise ConfigError(
                f"{', '.join(fixed)} cannot change for one question: they belong to the index this Answerer "
                f"opened ({self.config.index_dir}); make another Answerer with them"
            )
        with self._lock:
            self._active += 1
        try:
            yield from self._stream(question, history, **overrides)
        finally:
            with self._lock:
                self._active -= 1

    def _stream(self, question: str, history: History | None = None, **overrides: Any) -> Iterator[Event]:
        cfg = self.config.replace(**{k: v for k, v in overrides.items() if v is not None}) if overrides else self.config
        start = time.perf_counter()
        timings: dict[str, float] = {}
        text, warnings = clean_question(question, cfg.max_question_chars)

        standalone = self.rewrite(text, history) if history else text
        if standalone != text:
            timings["rewrite"] = time.perf_counter() - start
        form = question_form(standalone) if cfg.answer_forms else "fact"

        t = time.perf_counter()
        retrieval = self.retrieve(standalone, form, cfg)
        timings["retrieve"] = time.perf_counter() - t
        base = dict(
            question=text,
            retrieved=retrieval.retrieved,
            model=self._model_name(cfg),
            standalone_question=standalone if standalone != text else None,
            warnings=tuple(warnings),
            form=form,
        )
        policy = self.policy(cfg)
        decision = policy.before_generation(retrieval.retrieved)
        if decision.refused:
            timings["evidence"] = 0.0
            yield EvidenceEvent(standalone, retrieval.retrieved, (), dict(timings))
            timings["total"] = time.perf_counter() - start
            yield AnswerEvent(self._refusal(base, "", decision, timings, ()))
            return

        t = time.perf_counter()
        sources = self.select(retrieval, form, cfg)
        timings["evidence"] = time.perf_counter() - t
        timings["to_evidence"] = time.perf_counter() - start
        yield EvidenceEvent(standalone, retrieval.retrieved, sources, dict(timings))

        if form == "list":  # one quoted line per relevant paper: verified by construction, no model
            decision = policy.for_list(retrieval.retrieved, sorted(self.topic_words(standalone)))
            if decision.refused:
                timings["total"] = time.perf_counter() - start
                yield AnswerEvent(self._refusal(base, "", decision, timings, ()))
                return
            answer = self.compose_list(base, sources, timings, start)
            yield AnswerEvent(answer)
            return

        generation = Generation()
        for piece in self.generate(standalone, sources, form, cfg, generation, start):
            yield TokenEvent(piece)
        timings.update(generation.timings)
        raw = generation.text
        extra = dict(
            sources=sources, prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens
        )
        if not cfg.verify:
            yield AnswerEvent(self._unverified({**base, **extra}, raw, sources, timings, start))
            return

        t = time.perf_counter()
        verified = self.verify(standalone, raw, sources, form, cfg)
        timings["verify"] = time.perf_counter() - t
        # A comparison names both compared papers (compose adds the one the model left out).
        named = {c.paper_id for c in verified.citations} | (
            {s.paper_id for s in sources[:2]} if form == "compare" else set()
        )
        decision = policy.after_verification(
            standalone,
            verified.sentences,
            named,
            self.index.papers,
            said_cannot_answer=verified.said_cannot_answer,
            raw_text=raw,
        )
        timings["total"] = time.perf_counter() - start
        if decision.refused and decision.code == NOTHING_VERIFIED and cfg.extractive_fallback:
            quote = self.extractive_fallback(standalone, sources, cfg, raw)
            if quote is not None:  # one abstract sentence answers it: show that, quoted, if the policy agrees
                quoted = policy.after_verification(
                    standalone,
                    quote.sentences,
                    {c.paper_id for c in quote.citations},
                    self.index.papers,
                    said_cannot_answer=False,
                    raw_text=raw,
                )
                if not quoted.refused:
                    verified, decision = quote, quoted
        if decision.refused:
            yield AnswerEvent(
                self._refusal({**base, **extra}, raw, decision, timings, verified.sentences, verified.invalid_citations)
            )
            return
        sentences, citations = self.compose(form, verified, sources)
        answer = Answer(
            **base,
            **extra,
            text=" ".join(s.shown for s in sentences),
            raw_text=raw,
            citations=citations,
            sentences=sentences,
            refused=False,
            timings=timings,
            invalid_citations=verified.invalid_citations,
        )
        yield AnswerEvent(answer)

    # -- the stages -----------------------------------------------------------------------------
    def retrieve(self, question: str, form: str, cfg: RagConfig) -> Retrieval:
        """Papers for the question (more of them for a list question), and its embedding."""
        vector = self.index.query_vector(question)  # embedded once, for retrieval and evidence
        k = max(cfg.top_k, cfg.list_max_papers) if form == "list" else cfg.top_k
        retrieved = tuple(self.retriever_for(cfg).search(question, k, cfg.retrieval_mode, vector=vector))
        if form == "list":
            retrieved = self.list_papers(question, retrieved, cfg)
        return Retrieval(question, vector, retrieved)

    def list_papers(
        self, question: str, retrieved: Sequence[RetrievedPaper], cfg: RagConfig
    ) -> tuple[RetrievedPaper, ...]:
        """The papers a list answer names: close to the question in absolute terms and relative to
        the best one (a list question's papers are about one topic), and, when the question has
        topic words that few papers use ("Siamese", "BERT"), mentioning one of them."""
        if not retrieved:
            return ()
        top = max(r.dense_score for r in retrieved)
        floor = max(cfg.list_min_relevance, top - cfg.list_margin)
        kept = [r for r in retrieved if r.dense_score >= floor]
        topic = self.topic_words(question)
        if topic:  # a listed paper must use at least half of the question's topic words (one, for one or two)
            papers = self.index.papers
            need = max(1, len(topic) // 2)
            kept = [
                r
                for r in kept
                if len(topic & content_words(f"{papers[r.paper_id].title} {papers[r.paper_id].abstract}")) >= need
            ]
        return tuple(kept)

    def topic_words(self, question: str) -> set[str]:
        """The question's content words that at most 10% of the papers use (none, for an absent topic)."""
        with self._lock:
            if self._df is None:
                df: dict[str, int] = {}
                for paper in self.index.papers.values():
                    for w in content_words(f"{paper.title} {paper.abstract}"):
                        df[w] = df.get(w, 0) + 1
                self._df = df
        limit = 0.1 * len(self.index.papers)
        return {w for w in content_words(question) - _NOT_TOPIC if self._df.get(w, 0) <= limit}

    def select(self, retrieval: Retrieval, form: str, cfg: RagConfig) -> tuple[Source, ...]:
        """The numbered sources and the sentences of each that the model reads."""
        whole_top = {"fact": cfg.evidence_whole_top, "which-paper": cfg.evidence_whole_top, "compare": 2}.get(form, 0)
        return tuple(
            select_evidence(
                retrieval.question,
                retrieval.vector,
                retrieval.retrieved,
                self.index.papers,
                self.sentence_embedder,
                budget=cfg.evidence_tokens if form != "list" else 40 * len(retrieval.retrieved) + 60 * 8,
                whole_abstracts=not cfg.select_evidence,
                whole_top=whole_top if cfg.select_evidence else 0,
                whole_cap=cfg.evidence_whole_cap,
            )
        )

    def generate(
        self, question: str, sources: Sequence[Source], form: str, cfg: RagConfig, out: Generation, start: float
    ) -> Iterator[str]:
        """Stream the model's answer; ``out`` receives the whole text, token counts and timings.
        Stops when the model repeats itself or echoes the prompt's structure."""
        messages = answer_messages(question, sources, form)
        generator = self.generator_for(cfg)
        prompt_tokens = generator.count_tokens(messages)
        n_ctx = int(getattr(generator, "n_ctx", cfg.n_ctx))
        if prompt_tokens + cfg.max_answer_tokens > n_ctx:  # llama.cpp would fail mid-request
            raise ContextOverflowError(
                f"the prompt is {prompt_tokens} tokens and the answer may take {cfg.max_answer_tokens}, more than "
                f"the model's context window of {n_ctx} tokens: lower evidence_tokens or top_k, or raise n_ctx"
            )
        t = time.perf_counter()
        pieces: list[str] = []
        first: float | None = None
        with contextlib.closing(generator.stream(messages, max_tokens=cfg.max_answer_tokens)) as stream:  # type: ignore[type-var]
            for piece in stream:
                if first is None:
                    first = time.perf_counter()
                    out.timings["first_token"] = first - start
                pieces.append(piece)
                so_far = "".join(pieces)
                echo = _ECHO.search(so_far)
                if echo:
                    pieces = [so_far[: echo.start()]]
                    break
                yield piece
                if repeats_itself(so_far):
                    logger.info("stopped a repeating answer")
                    break
        end = time.perf_counter()
        out.text = "".join(pieces).strip()
        out.timings["generate"] = end - t
        out.completion_tokens = len(pieces)
        if first is not None and end > first and len(pieces) > 1:
            out.timings["tokens_per_s"] = (len(pieces) - 1) / (end - first)
        out.prompt_tokens = prompt_tokens

    def verify(self, question: str, raw: str, sources: Sequence[Source], form: str, cfg: RagConfig) -> Verified:
        """Citations used as nouns get their paper's name, then every claim is checked against
        the paper it cites."""
        named = name_noun_citations(raw, {s.n: s.title for s in sources}) if cfg.answer_forms else raw
        return self.verifier(cfg).verify(named, sources, strict=cfg.strict, question=question, form=form)

    def policy(self, cfg: RagConfig) -> RefusalPolicy:
        return RefusalPolicy(min_relevance=cfg.min_relevance, require_question_names=cfg.require_question_names)

    def compose(
        self, form: str, verified: Verified, sources: Sequence[Source]
    ) -> tuple[tuple[AnswerSentence, ...], tuple[Citation, ...]]:
        """The final sentences in the answer's form. A "which paper" answer starts by naming the
        paper its first verified sentence cites (taken from the citation, not from the model);
        a comparison starts with one quoted line per compared paper."""
        sentences, citations = list(verified.sentences), list(verified.citations)
        # A sentence that only restates the question says nothing: it is not shown (its reason
        # stays in the refusal or the logs), unless nothing else is left.
        if any(s.supported for s in sentences):
            sentences = [s for s in sentences if s.verdict != "no-answer"]
        if form == "compare":  # one quoted line for each compared paper the answer does not cite
            cited = {c.paper_id for c in citations}
            lines = []
            for src in sources[:2]:
                best = max(src.sentences, key=lambda e: e.score, default=None)
                if src.paper_id in cited or best is None:
                    continue
                n = 100 + src.n  # renumbered below
                body = f"\u201c{src.title}\u201d: {best.text}"
                lines.append(AnswerSentence(body, (n,), True, verdict="quote"))
                citations.append(
                    Citation(n, src.paper_id, src.title, src.files, (best.text,), src.retrieval_score, src.n)
                )
            if lines:
                sentences = lines + sentences
                sentences, citations = renumbered(sentences, citations)
        if form == "which-paper":
            first = next((s for s in sentences if s.supported and s.citations), None)
            if first is not None:
                cited = next(c for c in citations if c.n == first.citations[0])
                if (
                    short_title(cited.title).strip("\u201c\u201d").lower()
                    not in " ".join(s.text for s in sentences).lower()
                ):
                    body = f"The paper is \u201c{cited.title}\u201d."
                    shown = render_sentence(body, (cited.n,))
                    sentences.insert(0, AnswerSentence(body, (cited.n,), True, shown=shown, verdict="system"))
        return tuple(sentences), tuple(citations)

    def extractive_fallback(
        self, question: str, sources: Sequence[Source], cfg: RagConfig, raw: str = ""
    ) -> Verified | None:
        """When nothing the model wrote holds up but one evidence sentence clearly answers the
        question (close to it, most of its content words there, a number where it asks for one),
        that sentence quoted with its citation. A yes/no question whose answer only restated it
        while pointing at a paper ("Yes, ... This is shown in [3].") gets that paper's sentence
        closest to the question (the model's pointer is the evidence of relevance; a question
        asking for a detail gets no such help). None otherwise (the question stays refused)."""
        q_words = content_words(question)
        wants_number = bool(_WANTS_NUMBER.search(question))
        pointed = set(find_citations(raw)) if _YES_NO.match(question) else set()
        best: tuple[float, Source, str] | None = None
        for src in sources:
            min_score, min_coverage = (
                (cfg.fallback_min_score - 0.2, cfg.fallback_min_coverage / 2)
                if src.n in pointed
                else (cfg.fallback_min_score, cfg.fallback_min_coverage)
            )
            for sent in src.sentences:
                coverage = len(q_words & content_words(sent.text + " " + src.title)) / len(q_words) if q_words else 0.0
                if sent.score < min_score or coverage < min_coverage:
                    continue
                if wants_number and not numbers_in(sent.text):
                    continue
                if best is None or sent.score > best[0]:
                    best = (sent.score, src, sent.text)
        if best is None:
            return None
        _, src, text = best
        body = f"\u201c{src.title}\u201d reports: \u201c{text}\u201d"
        sentence = AnswerSentence(body, (1,), True, shown=render_sentence(body, (1,)), verdict="quote")
        citation = Citation(1, src.paper_id, src.title, src.files, (text,), src.retrieval_score, src.n)
        return Verified(
            text=sentence.shown,
            sentences=(sentence,),
            citations=(citation,),
            invalid_citations=0,
            said_cannot_answer=False,
        )

    def compose_list(
        self, base: dict[str, Any], sources: Sequence[Source], timings: dict[str, float], start: float
    ) -> Answer:
        """A list answer: each relevant paper named, with the abstract sentence closest to the
        question quoted (numbered in retrieval order)."""
        sentences = []
        citations = []
        for src in sources:
            best = max(src.sentences, key=lambda e: e.score, default=None)
            if best is None:
                continue
            n = len(citations) + 1
            body = f"\u201c{src.title}\u201d: {best.text}"
            sentences.append(AnswerSentence(body, (n,), True, shown=render_sentence(body, (n,)), verdict="quote"))
            citations.append(
                Citation(
                    n=n,
                    paper_id=src.paper_id,
                    title=src.title,
                    files=src.files,
                    evidence=(best.text,),
                    score=src.retrieval_score,
                    prompt_n=src.n,
                )
            )
        timings["total"] = time.perf_counter() - start
        return Answer(
            **base,
            sources=tuple(sources),
            text="\n".join(f"- {s.shown}" for s in sentences),
            raw_text="",
            citations=tuple(citations),
            sentences=tuple(sentences),
            refused=not sentences,
            refusal_reason=None if sentences else "no paper has a sentence close to the question",
            timings=timings,
        )

    def rewrite(self, question: str, history: History) -> str:
        """Turn a follow-up into a standalone question, using the model only when needed."""
        turns = [(h.question, h.text) if isinstance(h, Answer) else (str(h[0]), str(h[1])) for h in history][-3:]
        if not turns or not (_FOLLOW_UP.search(question) or len(question.split()) <= 4):
            return question
        convo = "\n".join(f"Q: {q}\nA: {a[:300]}" for q, a in turns)
        messages = [
            {"role": "system", "content": REWRITE_SYSTEM},
            {"role": "user", "content": REWRITE_TEMPLATE.format(history=convo, question=question)},
        ]
        try:
            with contextlib.closing(self.generator.stream(messages, max_tokens=60)) as stream:  # type: ignore[type-var]
                out = "".join(stream).strip().splitlines()
        except RagError as exc:
            logger.warning("could not rewrite the follow-up (%s); using it with the previous question", exc)
            out = []
        candidate = (
            re.sub(r"^(standalone question|question)\s*:\s*", "", out[0], flags=re.IGNORECASE).strip() if out else ""
        )
        if not candidate or len(candidate) > 4 * len(question) + 200:
            candidate = f"{turns[-1][0]} {question}"
        return candidate

    # -- helpers --------------------------------------------------------------------------------
    def _model_name(self, cfg: RagConfig | None = None) -> str:
        if cfg is not None and (cfg.model, cfg.n_ctx, cfg.n_threads) != (
            self.config.model,
            self.config.n_ctx,
            self.config.n_threads,
        ):
            return cfg.model  # answered by generator_for(cfg), not by this answerer's own generator
        return self._generator.name if self._generator is not None else self.config.model

    def verifier(self, cfg: RagConfig | None = None) -> Verifier:
        """The verifier for ``cfg`` (default: this answerer's config), with the index's abstracts."""
        cfg = cfg or self.config
        return Verifier(
            self.sentence_embedder,
            min_similarity=cfg.support_min_similarity,
            min_overlap=cfg.support_min_overlap,
            abstracts={pid: p.abstract for pid, p in self.index.papers.items()},
        )

    @staticmethod
    def _refusal(
        base: dict[str, Any],
        raw: str,
        decision: Decision,
        timings: dict[str, float],
        sentences: Sequence[AnswerSentence],
        invalid: int = 0,
    ) -> Answer:
        closest = base["retrieved"][:3]
        text = CANNOT_ANSWER
        if closest:
            text += " The closest papers are: " + "; ".join(f"\u201c{r.title}\u201d" for r in closest) + "."
        return Answer(
            **base,
            text=text,
            raw_text=raw,
            citations=(),
            sentences=tuple(sentences),
            refused=True,
            refusal_reason=decision.reason,
            refusal_code=decision.code,
            timings=timings,
            invalid_citations=invalid,
        )

    def _unverified(
        self, base: dict[str, Any], raw: str, sources: Sequence[Source], timings: dict[str, float], start: float
    ) -> Answer:
        """The naive way, for comparison: trust the model's citations, only drop impossible ones."""
        by_n = {s.n: s for s in sources}
        cited = find_citations(raw)
        valid = [n for n in cited if n in by_n]
        sentences = tuple(
            AnswerSentence(text=b, citations=tuple(n for n in c if n in by_n), supported=True)
            for b, c in split_answer(raw)
        )
        refused = not raw or all(is_refusal(s.text) for s in sentences) if sentences else True
        citations = tuple(
            Citation(
                n=n,
                paper_id=by_n[n].paper_id,
                title=by_n[n].title,
                files=by_n[n].files,
                evidence=(),
                score=by_n[n].retrieval_score,
                prompt_n=n,
            )
            for n in valid
        )
        timings["total"] = time.perf_counter() - start
        return Answer(
            **base,
            text=raw,
            raw_text=raw,
            citations=citations,
            sentences=sentences,
            refused=refused,
            refusal_reason="the model said the sources do not answer" if refused else None,
            timings=timings,
            invalid_citations=len(cited) - len(valid),
        )


_ANSWERERS: dict[RagConfig, Answerer] = {}
_ANSWERERS_LOCK = threading.Lock()


def ask(
    question: str,
    *,
    top_k: int | None = None,
    index_dir: str | Path | None = None,
    config: RagConfig | dict[str, Any] | None = None,
) -> Answer:
    """Answer ``question`` from the index with verified citations.

    Models and the index load on the first call and are reused by later calls in this process.

    Raises:
        QuestionError: the question is empty.
        IndexNotFoundError / IndexMismatchError / IndexCorruptError: the index cannot be used.
        ModelError: the language model cannot be found or verified.
    """
    cfg = get_config(config)
    if index_dir is not None:
        cfg = cfg.replace(index_dir=index_dir)
    with _ANSWERERS_LOCK:
        answerer = _ANSWERERS.get(cfg)
        if answerer is None:
            answerer = _ANSWERERS[cfg] = Answerer(cfg)
    return answerer.ask(question, top_k=top_k)

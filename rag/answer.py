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
import math
import re
import threading
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rag.citations import find_citations, render_sentence, renumber, split_answer
from rag.config import RagConfig, get_config
from rag.errors import ConfigError, ContextOverflowError, LLMStreamError, RagError
from rag.evidence import CachedEmbedder, content_words, score_sentences, select_evidence
from rag.filters import PaperFilter
from rag.forms import (
    compare_aspect,
    list_topic,
    name_lost_subject,
    name_noun_citations,
    question_form,
    short_title,
)
from rag.llm import Generator, ReportsUsage, load_generator
from rag.models import Embedder, load_embedder
from rag.prompts import CANNOT_ANSWER, REWRITE_SYSTEM, REWRITE_TEMPLATE, answer_messages
from rag.refusal import NO_MATCHING_PAPER, NOTHING_VERIFIED, Decision, RefusalPolicy
from rag.retrieve import Retriever
from rag.store import RagIndex, open_index
from rag.streaming import Checked, SentenceStream
from rag.text import sentence_spans
from rag.types import Answer, AnswerSentence, Citation, EvidenceSentence, RetrievedPaper, Source
from rag.verify import (
    Verified,
    Verifier,
    evidence_tokens,
    is_refusal,
    name_found,
    names_in,
    numbers_in,
    respective_numbers,
)

logger = logging.getLogger(__name__)

History = Sequence[tuple[str, str] | Answer]


# Settings of the index itself: an Answerer answers from one index, so a question cannot change
# them (make another Answerer, or rebuild the index).
# A sentence that ends: its full stop (or ! ?), then closing quotes or brackets, then citation markers.
_SENTENCE_END = re.compile(r"([.!?][\"”’')\]]*(\s*\[[\d,;\s–-]+\])*|\[[\d,;\s–-]+\][.!?]?)\s*$")


def finished_text(text: str) -> str:
    """``text`` without a last sentence that was never finished (no full stop or citation at its
    end, as when the token limit stops the model mid-sentence); "" when no sentence is finished."""
    spans = sentence_spans(text)
    if not spans or _SENTENCE_END.search(text[spans[-1][0] : spans[-1][1]]):
        return text
    return text[: spans[-1][0]].rstrip()


def _generator_key(cfg: RagConfig) -> tuple[Any, ...]:
    """The settings that choose the language model: one loaded generator per distinct key."""
    return (cfg.model, cfg.n_ctx, cfg.n_threads, cfg.llm_url, cfg.llm_timeout)


INDEX_FIELDS = (
    "index_dir",
    "corpus",
    "embed_model",
    "embed_batch_size",
    "chunk_overlap",
    "index_type",
    "store",
    "milvus_uri",
)
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
    # Why the reply stopped before the model finished it (the server's stream was cut), if it did.
    cut_off: str | None = None
    model: str = ""  # the name of the generator that wrote it (a server's names its URL)


# "How many ...", "what accuracy ...": a quote that answers it must hold a number.
_WANTS_NUMBER = re.compile(
    r"\b(how (many|much|large|long|big|fast|often)|what (percentage|share|fraction|number|accuracy|score|error|"
    r"speed-?up|f1|map|auc|bleu|rate)|by how much|to what extent)\b",
    re.IGNORECASE,
)


# Words of list questions that name the collection, not the topic.
_NOT_TOPIC = frozenset(content_words("collection corpus find findings papers works studies"))


# A sentence in which the authors say what they do.
# "this article" and its kin are how surveys and reports say it ("This article establishes ...").
# "Our" of people at large is not the authors' ("... a paradigm shift in our ability to comprehend
# raw data": the field's background).
_CONTRIBUTION = re.compile(
    r"\b(we|our(?!\s+(?:ability|abilities|understanding|lives|life|daily|society|world|knowledge|everyday)\b)"
    r"|this (paper|work|study|article|report|survey|review|thesis|chapter|manuscript))\b",
    re.IGNORECASE,
)
_CONTRIBUTION_BONUS = 0.1


# A sentence that only says where the code is ("Our code and models are available at
# https://github.com/..."): it tells nothing of the paper, so it is never quoted.
_URL = re.compile(r"\S*(?:https?://|www\.|github\.com)\S*", re.IGNORECASE)
_CODE_WORDS = re.compile(r"\b(code|codes|implementation|github|repository|open-sourced)\b", re.IGNORECASE)
_WHERE = re.compile(r"\b(available|released?|open-sourced?|found|shared|download)\b", re.IGNORECASE)
_AVAILABILITY = frozenset(
    content_words(
        "code codes data dataset datasets model models pretrained pre-trained trained weights checkpoints "
        "implementation implementations source available publicly public release released open-source "
        "open-sourced project page website github repository link found make made online upon request all"
    )
)


def only_availability(text: str) -> bool:
    """Whether ``text`` only says where the code, data or models are (two content words or fewer
    besides that): "The code is available at https://...", "MRL code and pretrained models are
    open-sourced at ..."."""
    if not (_URL.search(text) or (_CODE_WORDS.search(text) and _WHERE.search(text))):
        return False
    return len(content_words(_URL.sub(" ", text)) - _AVAILABILITY) < 3


def contribution_bonus(text: str) -> float:
    """What a sentence in which the authors say what they do counts above the field's background."""
    return _CONTRIBUTION_BONUS * bool(_CONTRIBUTION.search(text))


def with_subjects(verified: Verified) -> Verified:
    """A supported sentence that lost its subject (a bullet under a title the model wrote as a
    heading: "Trains classifiers ... [1]") gets the one paper it cites as its subject; the reader
    would otherwise see a fragment. The claim is unchanged, so is its verdict."""
    titles = {c.n: c.title for c in verified.citations}
    sentences: list[AnswerSentence] = []
    for s in verified.sentences:
        if s.supported and len(s.citations) == 1 and s.citations[0] in titles:
            # Always the name, never "It": a later stage may drop the sentence before it.
            body = name_lost_subject(s.text, titles[s.citations[0]])
            if body != s.text:
                s = replace(s, text=body, shown=render_sentence(body, s.citations))
        sentences.append(s)
    if all(a is b for a, b in zip(sentences, verified.sentences)):
        return verified
    return replace(verified, sentences=tuple(sentences), text=" ".join(s.shown or s.text for s in sentences))


def first_own_sentence(texts: Sequence[str]) -> int:
    """The index of the first sentence in which the authors say what they do ("We propose ...",
    "This paper ..."): the sentences before it are the field's background, which a quote would
    present as the paper's claim ("Deep networks have achieved remarkable performance ...").
    0 when no sentence says it."""
    return next((i for i, text in enumerate(texts) if _CONTRIBUTION.search(text)), 0)


def own_work_start(abstract: str) -> int:
    """The offset in ``abstract`` of its first own sentence (``first_own_sentence``)."""
    spans = sentence_spans(abstract)
    return spans[first_own_sentence([abstract[a:b] for a, b in spans])][0] if spans else 0


# Sentences a comparison quotes of each compared paper. Three, not two: on the read splits' 53
# compare questions the answer then holds a key term of each paper 42 times, not 36 (test10: 4 of 6,
# not 3), for about 50 more words (181 -> 232 words p50).
_COMPARE_QUOTED = 3


def compare_quotes(texts: Sequence[str], scores: np.ndarray, k: int = 2, *, own_from: int = 0) -> list[str]:
    """The ``k`` sentences of an abstract to quote in a comparison, in abstract order: the closest to
    what is compared among the authors' own (from sentence ``own_from`` on; the background before
    it only when fewer than ``k`` remain), where a sentence in which the authors say what they do
    counts a little more ("Few-shot classification aims to ..." compares nothing)."""
    bonus = np.array([contribution_bonus(t) for t in texts])
    ranked = [int(i) for i in np.argsort(-(np.asarray(scores) + bonus), kind="stable")]
    ranked = [i for i in ranked if not only_availability(texts[i])] or ranked
    own = [i for i in ranked if i >= own_from]
    chosen = (own + [i for i in ranked if i < own_from])[:k]
    return [texts[i] for i in sorted(chosen)]


def list_quote(sentences: Sequence[EvidenceSentence], own_from: int = 0) -> EvidenceSentence | None:
    """The sentence a list answer quotes for a paper: the closest to the topic among the authors' own
    (starting at offset ``own_from`` of the abstract; the background before it only when no other
    sentence was selected), where a sentence in which they say what they do counts a little more."""
    said = [e for e in sentences if not only_availability(e.text)]
    own = [e for e in said if e.start >= own_from] or said
    return max(own, key=lambda e: e.score + contribution_bonus(e.text), default=None)


# A yes/no question whose answer only restated it while pointing at a paper: that paper's sentence
# closest to the question may answer it though it shares few of its words (a paraphrased
# question shares few by design: "lower-order input statistics" for "simple summary properties").
_POINTED_SCORE_SLACK = 0.25
_POINTED_COVERAGE_SHARE = 0.125
_YES_NO = re.compile(r"^\s*(do|does|did|can|could|is|are|was|were|has|have|will|would|should)\b", re.IGNORECASE)


# Content words a quoted "we ..." sentence must hold to tell what the paper is ("In this paper, we
# address both issues." holds 2; on the read splits 3 of 74 first own sentences held fewer than 6).
_QUOTE_MIN_WORDS = 6
# Words of a sentence that only points at a paper ("This is described in “X”", "X does this").
_POINTING = content_words(
    "this paper work study method approach does described shown presented proposed introduced discussed "
    "explained reported studied addressed answers question survey article"
)


def quoted(src: Source, text: str) -> Verified:
    """An answer that is one sentence of ``src``'s abstract, quoted with its citation."""
    body = f"\u201c{src.title}\u201d reports: \u201c{text}\u201d"
    sentence = AnswerSentence(body, (1,), True, shown=render_sentence(body, (1,)), verdict="quote")
    return Verified(
        text=sentence.shown,
        sentences=(sentence,),
        citations=(Citation(1, src.paper_id, src.title, src.files, (text,), src.retrieval_score, src.n),),
        invalid_citations=0,
        said_cannot_answer=False,
    )


def which_paper_lead(citation: Citation, quote: str) -> AnswerSentence:
    """The system's sentence that opens a "which paper" answer: the cited paper's title, from the
    citation, and its own words (``Answerer.paper_quote``)."""
    body = f"The paper is \u201c{citation.title}\u201d" + (f": \u201c{quote}\u201d" if quote else ".")
    return AnswerSentence(body, (citation.n,), True, shown=render_sentence(body, (citation.n,)), verdict="system")


def first_cited(sentences: Sequence[AnswerSentence], citations: Sequence[Citation]) -> Citation | None:
    """The citation of the first supported sentence: the paper a "which paper" answer names."""
    by_n = {c.n: c for c in citations}
    return next((by_n[s.citations[0]] for s in sentences if s.supported and s.citations and s.citations[0] in by_n), None)


def norm_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` with punctuation removed ("SN-Net" -> {"snnet"})."""
    return {re.sub(r"[^0-9a-z]", "", w.lower()) for w in text.split()} - {""}


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
    # What happened to the question: "only the first 1000 characters were used", ...
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """The model is reading the prompt (most of the wait on a CPU): its size and, once a prefill
    speed has been measured on this machine (warm-up or an earlier answer), how long it takes."""

    kind: ClassVar[str] = "progress"
    prompt_tokens: int
    estimate_s: float | None = None
    prefill_tokens_per_s: float | None = None

    @property
    def text(self) -> str:
        """In words: reading 450 tokens of evidence, about 4 s (no estimate before one was measured)."""
        about = f", about {self.estimate_s:.0f} s" if self.estimate_s is not None else ""
        return f"reading {self.prompt_tokens} tokens of evidence{about}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "estimate_s": None if self.estimate_s is None else round(self.estimate_s, 2),
            "prefill_tokens_per_s": None if self.prefill_tokens_per_s is None else round(self.prefill_tokens_per_s, 1),
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """A piece of the model's raw text as it is written (before verification)."""

    kind: ClassVar[str] = "token"
    text: str


@dataclass(frozen=True, slots=True)
class SentenceEvent:
    """A sentence of the model's text, verified as soon as it was complete, in its final form.

    ``text`` is the sentence as shown (final citation numbers, or the unsupported mark);
    ``citations`` its final numbers, ``cited`` their records (title, evidence); ``verdict`` as on
    ``AnswerSentence``; ``reason`` says in plain words why it is not supported (None when it is);
    ``raw_end`` is how many characters of the raw text (the ``TokenEvent`` pieces joined) are
    verified: the rest is the sentence still being written.
    """

    kind: ClassVar[str] = "sentence"
    index: int
    text: str
    body: str
    citations: tuple[int, ...]
    cited: tuple[Citation, ...]
    verdict: str
    supported: bool
    reason: str | None
    raw_end: int

    @classmethod
    def of(cls, checked: Checked) -> SentenceEvent:
        s = checked.sentence
        return cls(
            checked.index,
            s.shown or s.text,
            s.text,
            s.citations,
            checked.cited,
            s.verdict,
            s.supported,
            checked.reason,
            checked.raw_end,
        )

    @property
    def sentence(self) -> AnswerSentence:
        """The sentence as the verifier's record (what ``answer.sentences`` holds)."""
        return AnswerSentence(self.body, self.citations, self.supported, shown=self.text, verdict=self.verdict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": self.text,
            "body": self.body,
            "citations": list(self.citations),
            "cited": [c.to_dict() for c in self.cited],
            "verdict": self.verdict,
            "supported": self.supported,
            "reason": self.reason,
            "raw_end": self.raw_end,
        }


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    """The final, verified answer."""

    kind: ClassVar[str] = "answer"
    answer: Answer


Event = EvidenceEvent | ProgressEvent | TokenEvent | SentenceEvent | AnswerEvent


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
        # Prompt tokens read per second by this answerer's model on this machine, last measured
        # (warm-up or the previous answer; with llama.cpp's cached system prompt): the estimate
        # behind "reading 450 tokens of evidence, about 4 s". None until measured.
        self.prefill_tokens_per_s: float | None = None
        self._active = 0  # answers being made: the index is not swapped under them
        self._retrievers: dict[tuple[int, int], Retriever] = {}  # per-question candidates / rrf_k
        # Guards lazy loading only. Re-entrant: sentence_embedder may need the index first.
        self._lock = threading.RLock()

    def with_index(self, index: RagIndex) -> Answerer:
        """A new answerer over ``index`` (a rebuilt one, with added papers) that shares this one's
        config, embedder and language model, whichever of them are loaded. This one keeps its own
        index, so an answer it is writing finishes over the papers it started with."""
        return Answerer(self.config, index=index, embedder=self._embedder or index.embedder, generator=self._generator)

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
        if _generator_key(cfg) == _generator_key(self.config):
            return self.generator
        return load_generator(
            cfg.model, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, llm_url=cfg.llm_url, timeout=cfg.llm_timeout
        )

    @property
    def generator(self) -> Generator:
        with self._lock:
            if self._generator is None:
                self._generator = load_generator(
                    self.config.model,
                    n_ctx=self.config.n_ctx,
                    n_threads=self.config.n_threads,
                    llm_url=self.config.llm_url,
                    timeout=self.config.llm_timeout,
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
        index, BM25, the embedder, the model, and the model's KV cache for the fixed system prompt
        (one generated token; later prompts that start the same way reuse it). With an LLM server
        the same one-token request checks that it answers and serves the model (a clear error
        now rather than at the first question) and warms the server's prompt cache (llama.cpp's
        servers keep the last prompt of a slot; vLLM caches prefixes)."""
        self.retriever.search("warm-up", 1)
        self.sentence_embedder.embed(["warm-up"])
        messages = answer_messages("warm-up", ())
        t = time.perf_counter()
        with contextlib.closing(self.generator.stream(messages, max_tokens=1)) as stream:  # type: ignore[type-var]
            for _ in stream:
                pass
        self._note_prefill(self.generator.count_tokens(messages), time.perf_counter() - t)

    def _note_prefill(self, prompt_tokens: int, seconds: float) -> None:
        if prompt_tokens > 0 and seconds > 0:
            self.prefill_tokens_per_s = prompt_tokens / seconds

    def progress(self, question: str, sources: Sequence[Source], form: str, out: Generation) -> ProgressEvent:
        """What the model is about to read (``out.prompt_tokens`` is set) and how long that takes
        at the prefill speed last measured here."""
        out.prompt_tokens = self.generator.count_tokens(answer_messages(question, sources, form))
        speed = self.prefill_tokens_per_s
        return ProgressEvent(out.prompt_tokens, out.prompt_tokens / speed if speed else None, speed)

    # -- the pipeline -------------------------------------------------------------------------
    def ask(
        self,
        question: str,
        history: History | None = None,
        *,
        filters: Mapping[str, Any] | PaperFilter | None = None,
        **overrides: Any,
    ) -> Answer:
        """Answer synchronously; always returns an ``Answer`` (raises only for a bad question or
        a malformed filter). ``filters`` as in ``stream``."""
        final: Answer | None = None
        for event in self.stream(question, history, filters=filters, **overrides):
            if isinstance(event, AnswerEvent):
                final = event.answer
        assert final is not None  # stream always ends with an AnswerEvent
        return final

    def stream(
        self,
        question: str,
        history: History | None = None,
        *,
        filters: Mapping[str, Any] | PaperFilter | None = None,
        **overrides: Any,
    ) -> Iterator[Event]:
        """Yield an ``EvidenceEvent``, then ``TokenEvent``s as the model writes, then an ``AnswerEvent``.

        The stages, each a method with typed input and output: ``retrieve`` -> ``select`` ->
        ``generate`` -> ``verify`` -> ``decide`` (the ``RefusalPolicy``) -> ``compose``.
        Keyword overrides (``top_k``, ``strict``, ``retrieval_mode``, ...) change the config for
        this question only. ``filters`` (``rag.filters``: ``{"year": (2019, 2023), "author":
        "Hinton", "venue": ..., "source": "my.bib"}``) restrict every retrieval of the question
        to the matching papers; when none matches, the answer is refused with the code
        ``no-paper-matches-filters`` and says which filter and why.

        Raises:
            QuestionError: the question is empty.
            FilterError: a filter is malformed (an unknown key, a bad year range).
        """
        fixed = sorted(k for k, v in overrides.items() if k in INDEX_FIELDS and v is not None)
        if fixed:
            raise ConfigError(
                f"{', '.join(fixed)} cannot change for one question: they belong to the index this Answerer "
                f"opened ({self.config.index_dir}); make another Answerer with them"
            )
        spec = filters if isinstance(filters, PaperFilter) else PaperFilter.from_dict(filters)
        with self._lock:
            self._active += 1
        try:
            for event in self._stream(question, history, spec, overrides):
                if isinstance(event, AnswerEvent):
                    event = AnswerEvent(self._with_papers(event.answer))
                yield event
        finally:
            with self._lock:
                self._active -= 1

    def _with_papers(self, answer: Answer) -> Answer:
        """The answer with the records of the papers it cites (for references and export)."""
        if not answer.citations:
            return answer
        papers = self.index.papers
        cited = dict.fromkeys(c.paper_id for c in answer.citations if c.paper_id in papers)
        return replace(answer, papers=tuple(papers[pid] for pid in cited))

    def _stream(
        self, question: str, history: History | None, spec: PaperFilter, overrides: dict[str, Any]
    ) -> Iterator[Event]:
        cfg = self.config.replace(**{k: v for k, v in overrides.items() if v is not None}) if overrides else self.config
        start = time.perf_counter()
        timings: dict[str, float] = {}
        text, warnings = clean_question(question, cfg.max_question_chars)

        standalone = self.rewrite(text, history) if history else text
        if standalone != text:
            timings["rewrite"] = time.perf_counter() - start
        form = question_form(standalone) if cfg.answer_forms else "fact"
        policy = self.policy(cfg)

        t = time.perf_counter()
        decision = policy.for_filters(spec, self.index.papers.values())
        retrieval = (
            Retrieval(standalone, np.zeros(0, np.float32), ())
            if decision.refused
            else self.retrieve(standalone, form, cfg, spec)
        )
        timings["retrieve"] = time.perf_counter() - t
        base = dict(
            question=text,
            retrieved=retrieval.retrieved,
            model=self._model_name(cfg),
            standalone_question=standalone if standalone != text else None,
            warnings=tuple(warnings),
            form=form,
        )
        if not decision.refused:
            decision = policy.before_generation(retrieval.retrieved)
        if decision.refused:
            timings["evidence"] = 0.0
            yield EvidenceEvent(standalone, retrieval.retrieved, (), dict(timings), tuple(warnings))
            timings["total"] = time.perf_counter() - start
            yield AnswerEvent(self._refusal(base, "", decision, timings, ()))
            return

        t = time.perf_counter()
        sources = self.select(retrieval, form, cfg)
        timings["evidence"] = time.perf_counter() - t
        timings["to_evidence"] = time.perf_counter() - start
        yield EvidenceEvent(standalone, retrieval.retrieved, sources, dict(timings), tuple(warnings))

        if form == "list":  # one quoted line per relevant paper: verified by construction, no model
            decision = policy.for_list(retrieval.retrieved, sorted(self.topic_words(list_topic(standalone))))
            if decision.refused:
                timings["total"] = time.perf_counter() - start
                yield AnswerEvent(self._refusal(base, "", decision, timings, ()))
                return
            answer = self.compose_list(base, sources, timings, start)
            yield AnswerEvent(answer)
            return

        generation = Generation()
        yield self.progress(standalone, sources, form, generation)
        # Each sentence is verified once the next one starts; it goes out before the token that
        # completed it, so a reader never sees a finished sentence without its verdict.
        checker = (
            SentenceStream(
                lambda done: self.verify(standalone, done, sources, form, cfg),
                sources,
                name_paper=(lambda c: which_paper_lead(c, self.paper_quote(standalone, c.paper_id)))
                if form == "which-paper" and cfg.answer_forms
                else None,
                repeats=lambda sentence, lead: self.adds_nothing(sentence, lead, standalone),
            )
            if cfg.verify
            else None
        )
        for piece in self.generate(standalone, sources, form, cfg, generation, start):
            for checked in checker.feed(piece) if checker is not None else ():
                timings.setdefault("first_sentence", time.perf_counter() - start)
                yield SentenceEvent.of(checked)
            yield TokenEvent(piece)
        timings.update(generation.timings)
        raw = generation.text
        base["model"] = generation.model or self._model_name(cfg)
        for checked in checker.finish(raw) if checker is not None else ():
            timings.setdefault("first_sentence", time.perf_counter() - start)
            yield SentenceEvent.of(checked)
        extra: dict[str, Any] = dict(
            sources=sources, prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens
        )
        if generation.cut_off is not None:  # verified as far as it got, and never shown as complete
            extra["incomplete"] = True
            base["warnings"] = (
                *base["warnings"],
                f"the answer is incomplete: {generation.cut_off}; what the model wrote before that is "
                "verified as usual",
            )
        if not cfg.verify:
            yield AnswerEvent(self._unverified({**base, **extra}, raw, sources, timings, start))
            return

        t = time.perf_counter()
        verified = self.verify(standalone, raw, sources, form, cfg)
        fit = self.best_fit(standalone, form, sources, cfg)
        verified = self.with_fit(verified, sources, fit)
        timings["verify"] = time.perf_counter() - t
        # A comparison names both compared papers (compose adds the one the model left out).
        named = {c.paper_id for c in verified.citations} | (
            {s.paper_id for s in self.compared(standalone, sources)} if form == "compare" else set()
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
            quote = self.extractive_fallback(standalone, sources, cfg, raw, fit=fit)
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
        if form == "compare":
            decision = policy.for_comparison(decision, compared=len(sources[:2]))
        if decision.refused:
            yield AnswerEvent(
                self._refusal({**base, **extra}, raw, decision, timings, verified.sentences, verified.invalid_citations)
            )
            return
        sentences, citations = self.compose(form, verified, sources, standalone)
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
    def retrieve(self, question: str, form: str, cfg: RagConfig, filters: PaperFilter | None = None) -> Retrieval:
        """Papers for the question (more of them for a list question), and its embedding.
        ``filters`` restrict the search to the matching papers, before fusion."""
        vector = self.index.query_vector(question)  # embedded once, for retrieval and evidence
        k = max(cfg.top_k, cfg.list_candidates) if form == "list" else cfg.top_k
        if form == "compare":  # a compared paper the question names may rank below top_k
            k = max(cfg.top_k, cfg.compare_candidates)
        retrieved = tuple(
            self.retriever_for(cfg).search(question, k, cfg.retrieval_mode, vector=vector, filters=filters)
        )
        if form == "list":
            retrieved = self.list_papers(question, retrieved, cfg)
        if form == "compare":
            retrieved = self.named_first(question, retrieved)[: cfg.top_k]
        return Retrieval(question, vector, retrieved)

    def named_first(self, question: str, retrieved: Sequence[RetrievedPaper]) -> tuple[RetrievedPaper, ...]:
        """The retrieved papers the question names by their short name ("SMASH and BigNAS ...":
        "SMASH: One-Shot Model Architecture Search ...") first, in retrieval order, then the rest."""
        papers = self.index.papers
        asked = norm_words(question)

        def named(r: RetrievedPaper) -> bool:
            head = papers[r.paper_id].title.split(":", 1)
            return len(head) == 2 and 0 < len(head[0].split()) <= 3 and norm_words(head[0]) <= asked

        first = [r for r in retrieved if named(r)]
        return tuple(first + [r for r in retrieved if r not in first])

    def list_papers(
        self, question: str, retrieved: Sequence[RetrievedPaper], cfg: RagConfig
    ) -> tuple[RetrievedPaper, ...]:
        """The papers a list answer names, best first.

        A paper is about the question's topic when one of its sentences (or its title) is close to
        the topic, in absolute terms and relative to the best paper (a list's papers share one
        topic); and, unless it is nearly as close as the best, when it uses a fair share of the
        topic's rare words (idf-weighted: "lottery", "quantization"), which tells apart papers that
        merely share the field."""
        if not retrieved:
            return ()
        topic = list_topic(question)
        vector = self.index.query_vector(topic)
        papers = self.index.papers
        relevance = []
        for r in retrieved:
            paper = papers[r.paper_id]
            texts = [paper.title] + [paper.abstract[s:e] for s, e in sentence_spans(paper.abstract)]
            relevance.append(float(np.max(self.sentence_embedder.embed(texts) @ vector)))
        best = max(relevance)
        floor = max(cfg.list_min_relevance, best - cfg.list_margin)
        weights = self.topic_weights(topic)
        total = sum(weights.values())
        kept = []
        for r, rel in zip(retrieved, relevance, strict=True):
            if rel < floor:
                continue
            if total:  # the topic has rare words: the paper uses some, or a fair share unless nearly the best
                used = content_words(f"{papers[r.paper_id].title} {papers[r.paper_id].abstract}")
                covered = sum(w for word, w in weights.items() if word in used)
                if not covered or (
                    rel < best - cfg.list_strong_margin and covered < cfg.list_min_topic_coverage * total
                ):
                    continue
            kept.append((rel, r))
        kept.sort(key=lambda pair: -pair[0])
        return tuple(r for _, r in kept[: cfg.list_max_papers])

    def topic_weights(self, question: str) -> dict[str, float]:
        """The question's rare content words (used by at most 10% of the papers; none for an absent
        topic), each with its inverse document frequency."""
        with self._lock:
            if self._df is None:
                df: dict[str, int] = {}
                for paper in self.index.papers.values():
                    for w in content_words(f"{paper.title} {paper.abstract}"):
                        df[w] = df.get(w, 0) + 1
                self._df = df
        n = len(self.index.papers)
        return {
            w: math.log(n / (1 + self._df.get(w, 0)))
            for w in content_words(question) - _NOT_TOPIC
            if self._df.get(w, 0) <= 0.1 * n
        }

    def topic_words(self, question: str) -> set[str]:
        """The question's content words that at most 10% of the papers use (none, for an absent topic)."""
        return set(self.topic_weights(question))

    def select(self, retrieval: Retrieval, form: str, cfg: RagConfig) -> tuple[Source, ...]:
        """The numbered sources and the sentences of each that the model reads."""
        whole_top = {"fact": cfg.evidence_whole_top, "which-paper": cfg.evidence_whole_top, "compare": 2}.get(form, 0)
        question, vector = retrieval.question, retrieval.vector
        if form == "list":  # each listed paper is quoted where it is closest to the topic
            question = list_topic(question)
            vector = self.index.query_vector(question)
        return tuple(
            select_evidence(
                question,
                vector,
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
        out.model = generator.name
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
        try:
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
        except LLMStreamError as exc:
            if not pieces:
                raise
            logger.warning("the model's reply was cut off after %d pieces: %s", len(pieces), exc)
            out.cut_off = str(exc)
        end = time.perf_counter()
        out.text = "".join(pieces).strip()
        out.timings["generate"] = end - t
        out.completion_tokens = len(pieces)
        if first is not None and end > first and len(pieces) > 1:
            out.timings["tokens_per_s"] = (len(pieces) - 1) / (end - first)
        out.prompt_tokens = out.prompt_tokens or prompt_tokens
        reported = generator.usage(messages) if isinstance(generator, ReportsUsage) else None
        if reported is not None:  # the server's own counts (a piece of a stream may hold several tokens)
            out.prompt_tokens, out.completion_tokens = reported
        if first is not None:
            self._note_prefill(out.prompt_tokens, first - t)
        if out.cut_off is None and out.completion_tokens >= cfg.max_answer_tokens:
            # Stopped by the token limit mid-sentence ("... on CIFAR10, CIFAR100, and"): the
            # unfinished sentence is not a claim anyone wrote; the finished ones stand.
            finished = finished_text(out.text)
            if finished and finished != out.text:
                logger.info("dropped an answer's last sentence, cut by the token limit: %r", out.text[len(finished) :])
                out.text = finished

    def verify(self, question: str, raw: str, sources: Sequence[Source], form: str, cfg: RagConfig) -> Verified:
        """Citations used as nouns get their paper's name, then every claim is checked against
        the paper it cites."""
        titles = {s.n: s.title for s in sources}
        named = name_noun_citations(raw, titles, whole=form == "which-paper") if cfg.answer_forms else raw
        verified = self.verifier(cfg).verify(named, sources, strict=cfg.strict, question=question, form=form)
        return with_subjects(verified) if cfg.answer_forms else verified

    def policy(self, cfg: RagConfig) -> RefusalPolicy:
        return RefusalPolicy(min_relevance=cfg.min_relevance, require_question_names=cfg.require_question_names)

    def compose(
        self, form: str, verified: Verified, sources: Sequence[Source], question: str = ""
    ) -> tuple[tuple[AnswerSentence, ...], tuple[Citation, ...]]:
        """The final sentences in the answer's form. A "which paper" answer starts by naming the
        paper its first verified sentence cites (taken from the citation, not from the model);
        a comparison starts with one quoted line per compared paper."""
        sentences, citations = list(verified.sentences), list(verified.citations)
        # A sentence that only restates the question says nothing: it is not shown (its reason
        # stays in the refusal or the logs), unless nothing else is left.
        if any(s.supported for s in sentences):
            sentences = [s for s in sentences if s.verdict != "no-answer"]
        # A small model repeats itself ("The authors propose ... 7,314 face sequences ..." twice):
        # a sentence whose words an earlier one already holds (all but a fifth) is said once.
        kept: list[AnswerSentence] = []
        for s in sentences:
            said = content_words(s.text)
            if said and any(len(said - content_words(k.text)) <= 0.2 * len(said) for k in kept):
                continue
            kept.append(s)
        if len(kept) < len(sentences):
            sentences, citations = renumbered(kept, citations)
        if form == "compare":
            sentences, citations = self.compose_compare(question, sentences, citations, sources)
        if form == "which-paper":
            sentences, citations = self.compose_which_paper(question, sentences, citations)
        return tuple(sentences), tuple(citations)

    def best_fit(self, question: str, form: str, sources: Sequence[Source], cfg: RagConfig) -> int | None:
        """The source a "which paper" question describes, when both fit measures agree on one
        (``Verifier.best_fit``); None for other forms, or when they do not agree."""
        if form != "which-paper" or not cfg.answer_forms:
            return None
        return self.verifier(cfg).best_fit(question, sources)

    def paper_quote(self, question: str, paper_id: str) -> str:
        """The sentence of a paper's abstract that tells what the paper is: the first in which the
        authors say what they do ("In this paper, we propose X ..."), which names the method more
        often than the sentence closest to the question does (read splits, the asked-for paper of
        74 "which paper" questions: the expected term in 70 vs 68, the title alone 62). One that
        says too little to tell ("In this paper, we address both issues.") is passed over for the
        next; the closest to ``question`` when none says it."""
        abstract = self.index.papers[paper_id].abstract
        texts = [abstract[a:b] for a, b in sentence_spans(abstract)]
        if not texts:
            return ""
        own = first_own_sentence(texts)
        for text in texts[own:]:
            says_what = _CONTRIBUTION.search(text) and len(content_words(text)) >= _QUOTE_MIN_WORDS
            if says_what and not only_availability(text):
                return text
        scores = score_sentences(question, self.index.query_vector(question), texts, self.sentence_embedder)
        return compare_quotes(texts, scores, k=1, own_from=own)[0]

    def with_fit(self, verified: Verified, sources: Sequence[Source], fit: int | None) -> Verified:
        """A "which paper" answer whose first verified sentence cites another paper than the one
        both fit measures pick (``fit``) keeps only its sentences about that paper: the others
        answer another question, however true they are of the paper they cite. With none left,
        nothing is verified, and the fallback names the paper that fits."""
        src = next((x for x in sources if x.n == fit), None)
        named = first_cited(verified.sentences, verified.citations)
        if src is None or named is None or named.paper_id == src.paper_id:
            return verified
        own = {c.n for c in verified.citations if c.paper_id == src.paper_id}
        kept = [s for s in verified.sentences if s.supported and own & set(s.citations)]
        sentences, citations = renumbered(kept, verified.citations)
        return replace(
            verified,
            sentences=tuple(sentences),
            citations=tuple(citations),
            text=" ".join(s.shown or s.text for s in sentences),
        )

    def compose_which_paper(
        self, question: str, sentences: list[AnswerSentence], citations: list[Citation]
    ) -> tuple[list[AnswerSentence], list[Citation]]:
        """A "which paper" answer starts with the paper its first verified sentence cites, named by
        the system and quoted in its own words ("The paper is “X”: “In this paper, we propose
        ...”"); the model's sentences that add nothing to that are said once."""
        named = first_cited(sentences, citations)
        if named is None:
            return sentences, citations
        quote = self.paper_quote(question, named.paper_id)
        lead = which_paper_lead(named, quote)
        rest = [s for s in sentences if not self.adds_nothing(s, lead, question)]
        citations = [
            replace(c, evidence=tuple(dict.fromkeys((*c.evidence, quote)))) if c.n == named.n and quote else c
            for c in citations
        ]
        return renumbered([lead, *rest], citations)

    @staticmethod
    def adds_nothing(sentence: AnswerSentence, lead: AnswerSentence, question: str) -> bool:
        """A supported sentence that says nothing the lead and the question do not ("The paper
        “X” does this [1].", "This is described in “X” [1]."): said once, in the lead."""
        said = content_words(f"{lead.text} {question}") | _POINTING
        return sentence.supported and sentence is not lead and not content_words(sentence.text) - said

    def compose_compare(
        self, question: str, sentences: list[AnswerSentence], citations: list[Citation], sources: Sequence[Source]
    ) -> tuple[list[AnswerSentence], list[Citation]]:
        """A comparison: one line per compared paper, naming it and quoting the three sentences of its
        abstract closest to what the question compares (``_COMPARE_QUOTED``), then the model's supported sentences about
        the compared papers. A sentence that cites one paper but names the other is dropped: in a
        comparison the model too often gives one paper's detail to the other."""
        compared = self.compared(question, sources)
        ids = {src.paper_id for src in compared}
        by_n = {c.n: c.paper_id for c in citations}
        number = {src.paper_id: 100 + src.n for src in compared}  # renumbered below
        names = {src.paper_id: norm_words(short_title(src.title)) for src in compared}

        def kept(s: AnswerSentence) -> bool:
            cited = {by_n.get(n) for n in s.citations}
            if not s.supported or not cited or not cited <= ids:
                return False
            if cited == ids:
                return True  # the contrast
            (pid,) = cited  # about one paper: kept unless it names the other one
            said = norm_words(s.text)
            return not any(name and name <= said for other, name in names.items() if other != pid)

        contrast = [replace(s, citations=tuple(number[by_n[n]] for n in s.citations)) for s in sentences if kept(s)]
        aspect = compare_aspect(question)
        vector = self.index.query_vector(aspect)
        lines: list[AnswerSentence] = []
        quoted: list[Citation] = []
        for src in compared:
            abstract = self.index.papers[src.paper_id].abstract
            texts = [abstract[a:b] for a, b in sentence_spans(abstract)]
            if not texts:
                continue
            scores = score_sentences(aspect, vector, texts, self.sentence_embedder)
            best = compare_quotes(texts, scores, k=_COMPARE_QUOTED, own_from=first_own_sentence(texts))
            body = f"\u201c{src.title}\u201d: " + " ".join(best)
            lines.append(AnswerSentence(body, (number[src.paper_id],), True, verdict="quote"))
            quoted.append(
                Citation(
                    number[src.paper_id], src.paper_id, src.title, src.files, tuple(best), src.retrieval_score, src.n
                )
            )
        return renumbered(lines + contrast, quoted)

    def compared(self, question: str, sources: Sequence[Source]) -> list[Source]:
        """The two papers a comparison is about: those whose title or short name the question writes,
        then those whose abstract alone of the retrieved ones mentions a name the question uses,
        then those with most of their title's words in the question, then the best retrieved."""
        asked = content_words(question)
        # A method the question names that only one retrieved abstract mentions names that paper
        # ("ASTxplainer" for "Evaluating and Explaining Large Language Models for Code ...").
        names = names_in(question)
        mentions = {
            src.paper_id: {
                n
                for n in names
                if name_found(n, evidence_tokens(f"{src.title} {self.index.papers[src.paper_id].abstract}"))
            }
            for src in sources
        }

        def full_titled(src: Source) -> bool:  # its whole title, as written
            return src.title.strip().lower() in question.lower()

        def titled(src: Source) -> bool:  # its title or short name, as written
            # After whole titles: a short name can be part of another paper's title ("Label Noise:
            # Ignorance Is Bliss" in "... Robust to Massive Label Noise").
            short = short_title(src.title).strip("\u201c\u201d").lower()
            return len(short) > 2 and short in question.lower()

        def method_named(src: Source) -> bool:
            others = {n for pid, found in mentions.items() if pid != src.paper_id for n in found}
            return bool(mentions[src.paper_id] - others)

        def title_words(src: Source) -> bool:  # most of its title's words, loosely
            title = content_words(src.title)
            return bool(title) and len(title & asked) >= 0.6 * len(title)

        ordered: list[Source] = []
        for test in (full_titled, titled, method_named, title_words, lambda _src: True):
            ordered += [src for src in sources if src not in ordered and test(src)]
        return ordered[:2]

    def extractive_fallback(
        self, question: str, sources: Sequence[Source], cfg: RagConfig, raw: str = "", *, fit: int | None = None
    ) -> Verified | None:
        """When nothing the model wrote holds up but one evidence sentence clearly answers the
        question (close to it, most of its content words there, a number where it asks for one),
        that sentence quoted with its citation. A yes/no question whose answer only restated it
        while pointing at a paper ("Yes, ... This is shown in [3].") gets that paper's sentence
        closest to the question (the model's pointer is the evidence of relevance; a question
        asking for a detail gets no such help). A "which paper" question with a paper that both
        fit measures pick (``fit``) is answered with that paper, quoted (``compose_which_paper``
        names it). None otherwise (the question stays refused)."""
        src = next((x for x in sources if x.n == fit), None)
        if src is not None:
            return quoted(src, self.paper_quote(question, src.paper_id))
        q_words = content_words(question)
        wants_number = bool(_WANTS_NUMBER.search(question))
        pointed = set(find_citations(raw)) if _YES_NO.match(question) else set()
        asked_names = names_in(question) if wants_number else set()
        best: tuple[float, Source, str] | None = None
        for src in sources:
            for sent in src.sentences:
                if only_availability(sent.text):
                    continue
                # A "respectively" sentence that gives a number to the very item the question names
                # ("... on NORB, CIFAR10 and MNIST ... 2.53%, 19.51%, 0.35%, respectively" for "... on
                # CIFAR10?") answers it, though it shares few of its words; as does a pointed paper's.
                paired = bool(asked_names) and any(
                    r.names & asked_names for r in respective_numbers(sent.text).values()
                )
                min_score, min_coverage = (
                    (cfg.fallback_min_score - _POINTED_SCORE_SLACK, cfg.fallback_min_coverage * _POINTED_COVERAGE_SHARE)
                    if src.n in pointed or paired
                    else (cfg.fallback_min_score, cfg.fallback_min_coverage)
                )
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
        return quoted(src, text)

    def compose_list(
        self, base: dict[str, Any], sources: Sequence[Source], timings: dict[str, float], start: float
    ) -> Answer:
        """A list answer: each relevant paper named, with the abstract sentence closest to the
        question quoted, a sentence in which the authors say what they do counting a little more
        (numbered in retrieval order)."""
        sentences = []
        citations = []
        for src in sources:
            best = list_quote(src.sentences, own_work_start(self.index.papers[src.paper_id].abstract))
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
        if cfg is not None and _generator_key(cfg) != _generator_key(self.config):
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
        if decision.code == NO_MATCHING_PAPER and decision.reason:  # about the filters, not the question
            text = f"No paper matches the filters: {decision.reason}. Widen or remove a filter and ask again."
        elif closest:
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
    filters: Mapping[str, Any] | None = None,
) -> Answer:
    """Answer ``question`` from the index with verified citations.

    ``filters`` restrict the papers it may use: ``{"year": (2019, 2023), "author": "Hinton",
    "venue": "NeurIPS", "source": "my.bib"}`` (any subset; see ``rag.filters``).
    Models and the index load on the first call and are reused by later calls in this process.

    Raises:
        QuestionError: the question is empty.
        FilterError: a filter is malformed (a filter that no paper matches gives a refused
            ``Answer`` saying so, with ``refusal_code`` "no-paper-matches-filters").
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
    return answerer.ask(question, top_k=top_k, filters=filters)

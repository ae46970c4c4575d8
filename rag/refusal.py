"""The one place that decides whether the collection answers a question.

Every reason to refuse is named here, with the evidence it rests on; the pipeline asks this
policy whether the question's metadata filters leave any paper to answer from, then twice more: before generation (is any paper close enough to be worth the model's time?) and
after verification (did anything the model wrote hold up, and does it speak of what was asked?).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rag.evidence import content_words, stem
from rag.filters import PaperFilter
from rag.types import AnswerSentence, Paper, RetrievedPaper
from rag.verify import (
    COUNT_ISSUES,
    DESCRIPTORS,
    HYPHEN,
    NAME_PUNCT,
    compound_found,
    evidence_tokens,
    name_found,
    names_in,
    norm_name,
    undescribed,
)

# Reason codes, stable for programs (the UI, the API, the eval).
NO_RELEVANT_PAPER = "no-relevant-paper"
MODEL_SAYS_NOT_ANSWERED = "model-says-not-answered"
NOTHING_VERIFIED = "nothing-verified"
QUESTION_NAME_ABSENT = "question-name-absent"
NO_MATCHING_PAPER = "no-paper-matches-filters"


@dataclass(frozen=True, slots=True)
class Decision:
    """Answer, or refuse for a named reason (``code``) explained in words (``reason``)."""

    refused: bool
    code: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"refused": self.refused, "code": self.code, "reason": self.reason}


ANSWER = Decision(False)


@dataclass(frozen=True, slots=True)
class RefusalPolicy:
    """Thresholds and rules of refusal (from the config)."""

    min_relevance: float = 0.3
    require_question_names: bool = True

    def for_filters(self, spec: PaperFilter, papers: Collection[Paper]) -> Decision:
        """Refuse, before retrieval, a question whose filters no paper of the collection passes
        (an empty answer is about the filters, not about the question)."""
        if spec.active and not any(spec.matches(p) for p in papers):
            return Decision(True, NO_MATCHING_PAPER, spec.no_match(papers))
        return ANSWER

    def before_generation(self, retrieved: Sequence[RetrievedPaper]) -> Decision:
        """Refuse without asking the model when no retrieved paper is close to the question."""
        relevance = max((r.dense_score for r in retrieved), default=0.0)
        if not retrieved or relevance < self.min_relevance:
            return Decision(
                True,
                NO_RELEVANT_PAPER,
                f"no paper is close to the question (best similarity {relevance:.2f} < {self.min_relevance:.2f})",
            )
        return ANSWER

    def for_list(self, listed: Sequence[RetrievedPaper], topic_words: Sequence[str]) -> Decision:
        """A list question is refused when no paper of the collection is on its topic (close to
        the question and using its rare topic words)."""
        if listed:
            return ANSWER
        about = f" about {', '.join(topic_words)}" if topic_words else ""
        return Decision(True, NO_RELEVANT_PAPER, f"no paper in the collection is close to the question{about}")

    def for_comparison(self, decision: Decision, compared: int) -> Decision:
        """A comparison is answered by one quoted line per compared paper (checked by
        construction), so the model's text not surviving the check does not refuse it when both
        papers are there; any other reason stands."""
        if decision.refused and decision.code == NOTHING_VERIFIED and compared >= 2:
            return ANSWER
        return decision

    def after_verification(
        self,
        question: str,
        sentences: Sequence[AnswerSentence],
        cited: Collection[str],
        papers: Mapping[str, Paper],
        *,
        said_cannot_answer: bool,
        raw_text: str,
    ) -> Decision:
        """Refuse when nothing the model wrote is supported, or when the answer speaks of papers
        that never mention a name the question asks about."""
        if not any(s.supported for s in sentences):
            if said_cannot_answer or not raw_text.strip():
                return Decision(True, MODEL_SAYS_NOT_ANSWERED, "the sources were judged not to answer it")
            if any(s.verdict == "no-answer" for s in sentences):
                return Decision(
                    True, NOTHING_VERIFIED, "the answer only restated the question; no sentence of it is supported"
                )
            count = next((i for s in sentences for i in s.issues if i.startswith(COUNT_ISSUES)), None)
            if count is not None:  # true sentences, but none gives the count asked for: say so
                return Decision(
                    True, NOTHING_VERIFIED, f"the answer does not give the count the question asks for: {count}"
                )
            return Decision(True, NOTHING_VERIFIED, "no sentence of the answer is supported by the sources")
        if self.require_question_names:
            absent = absent_question_names(question, cited, papers)
            if absent:
                return Decision(
                    True,
                    QUESTION_NAME_ABSENT,
                    f"the cited papers do not mention {', '.join(absent)}, which the question asks about",
                )
        return ANSWER


# Suffixes that make a name a likeness ("BERT-style pretraining", "ResNet-like"): the question asks
# about something like a name the collection knows, which a paper may describe in its own words
# ("masked language modeling"). A likeness of a name no paper mentions ("GraphGPT-style") still
# asks about that name.
_LIKENESS = re.compile(r"-(?:style|like|inspired|type)$", re.IGNORECASE)


@lru_cache(maxsize=8192)
def paper_tokens(title: str, abstract: str) -> frozenset[str]:
    """``evidence_tokens`` of one paper, read once: a likeness is looked up in the whole collection
    (about 3 s for 591 abstracts the first time, on the answer's path)."""
    return frozenset(evidence_tokens(f"{title} {abstract}"))


def known_likeness(word: str, papers: Mapping[str, Paper]) -> bool:
    """Whether ``word`` is a likeness ("BERT-style") of a name some paper of the collection mentions."""
    if not _LIKENESS.search(word):
        return False
    name = norm_name(undescribed(word))
    return any(name_found(name, paper_tokens(p.title, p.abstract)) for p in papers.values())


def absent_question_names(question: str, cited: Collection[str], papers: Mapping[str, Paper]) -> list[str]:
    """Names in the question (acronyms, CamelCase, capitalised or letter-digit words) that no cited
    paper (``cited``: paper ids) mentions in its title or abstract, as the question writes them. An
    acronym is found when its expansion is written ("ML": "machine learning"); a hyphenated name
    when its parts are; a likeness of a name the collection knows ("BERT-style") is not asked for."""
    if not cited:
        return []
    text = " ".join(f"{papers[pid].title} {papers[pid].abstract}" for pid in cited)
    tokens = evidence_tokens(text)
    absent: set[str] = set()
    for name in names_in(question):
        if name_found(name, tokens):
            continue
        absent.add(name)
    if not absent:
        return []
    out = []
    used: set[str] | None = None  # the cited text's stemmed words, read once if needed
    for word in dict.fromkeys(t.strip("\"'()[]{}.,;:!?") for t in question.split()):
        if norm_name(undescribed(word)) not in absent:
            continue
        parts = [norm_name(p) for p in HYPHEN.split(word) if norm_name(p)]
        named = [p for p in parts if p not in DESCRIPTORS]  # "ResNet-style": the style is the asker's
        if len(parts) > 1 and named and all(name_found(p, tokens) for p in named):
            continue  # "long-tailed": "long" and "tailed" are both there
        if compound_found(word.strip(NAME_PUNCT), tokens):
            continue  # "ImageNet-pretrained": "pre-training on ImageNet"
        if known_likeness(word, papers):
            continue  # "BERT-style pretraining": masked language modeling, in the paper's words
        if re.fullmatch(r"[A-Z][a-z]+", word):
            used = content_words(text) if used is None else used
            if stem(word) in used:
                continue  # a capitalised plain word is a name only loosely: "Text Supervised" / "text supervision"
        out.append(word)
    return out

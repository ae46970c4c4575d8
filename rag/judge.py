"""The model as a yes/no judge of each claim the rules accepted.

The rules of ``rag.verify`` check names, numbers and word overlap; a sentence can pass them and
still say what its paper does not ("the three models were CNN, MLP and a combination" when the
abstract names others; the wrong paper named for a "which paper" question). So each claim the
rules accept is put to the answering model as one question, with its own short system prompt and
only the cited papers' abstracts: does the abstract state it?

Measured here (qwen2.5-coder-1.5b) on 120 sentences of the judgment pool: it said "no" to 17 of
the 60 a reader found unsupported or no answer, and to none of the 60 a reader found supported.
Asked instead inside the answer's prompt (its system prompt and all its sources, which llama.cpp
holds cached after the answer), it said "yes" to all 163 replayed sentences, 19 of them
unsupported. So the judge pays for reading the abstract (~3 s for the first claim on a paper;
later claims on the same paper reuse llama.cpp's cache of it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from rag.citations import MARKER
from rag.llm import Generator
from rag.prompts import judge_messages
from rag.types import Source

logger = logging.getLogger(__name__)

# The end of a sentence's issue when the judge rejected it ("[1] does not state it (...)").
REJECTED = "does not state it (the model's check)"


class ClaimJudge(Protocol):
    """Decides whether the cited sources state a claim."""

    def holds(self, claim: str, cited: Sequence[int], sources: Sequence[Source]) -> bool:
        """True when sources ``cited`` (numbers of ``sources``) state ``claim``."""
        ...


def bare_claim(sentence: str) -> str:
    """The claim without its citation markers (the judge is shown the cited abstracts)."""
    return re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s+", " ", MARKER.sub("", sentence))).strip()


class ModelJudge:
    """Asks the answering model, with the cited papers' whole abstracts (``abstracts``: paper id
    -> abstract; a paper without one is judged on what the answer's prompt showed of it).
    Anything but a reply starting with "no" keeps the claim, so a judge that says nothing useful
    never hides an answer the rules accepted."""

    def __init__(self, generator: Generator, abstracts: Mapping[str, str] | None = None) -> None:
        self.generator = generator
        self.abstracts = abstracts or {}

    def holds(self, claim: str, cited: Sequence[int], sources: Sequence[Source]) -> bool:
        by_n = {s.n: s for s in sources}
        shown = [(by_n[n].title, self.abstracts.get(by_n[n].paper_id) or by_n[n].text) for n in cited if n in by_n]
        if not shown:
            return True
        reply = "".join(self.generator.stream(judge_messages(bare_claim(claim), shown), max_tokens=2))
        logger.debug("judge: %r %s -> %r", claim[:80], list(cited), reply)
        return not reply.strip().lower().startswith("no")


class FakeJudge:
    """A deterministic judge for tests: ``rejects(claim)`` true means "not stated"."""

    def __init__(self, rejects: Callable[[str], bool] = lambda claim: False) -> None:
        self.rejects = rejects
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def holds(self, claim: str, cited: Sequence[int], sources: Sequence[Source]) -> bool:
        self.calls.append((claim, tuple(cited)))
        return not self.rejects(claim)

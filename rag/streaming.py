"""Verify an answer sentence by sentence while the model writes it.

A sentence is complete when the sentence splitter (``rag.citations.answer_spans``: punkt trained
on English, never inside a quotation) sees the next sentence start after it, or when the text
ends. Each time more sentences are complete, the complete part of the text is verified as a
whole (the same call the final answer uses, with the same citation renumbering), so a sentence is
shown in the form it will keep: its final numbers, its verdict, and, when no source backs it, the
reason in plain words.

Answer forms that are decided only on the whole text (a refusal, the extractive fallback, the
paper named for "which paper", the quoted lines of a comparison) may still change what was
shown; ``final_note`` says how, so the change is never silent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from rag.citations import MARKER, answer_spans, render_sentence, strip_citations
from rag.forms import short_title
from rag.types import Answer, AnswerSentence, Citation, Source
from rag.verify import COUNT_ISSUES

_LEADING_MARKERS = re.compile(r"^(?:\s*" + MARKER.pattern + r")+", re.IGNORECASE)
_LIST_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


def completed_prefix(raw: str) -> int:
    """How many characters at the start of ``raw`` hold only complete sentences.

    A sentence is complete once the next one has started: the text after it holds a letter (a
    citation marker alone, "[1", or a number, "12.", does not start a sentence; the marker
    belongs to the sentence before it). The cut is at the first letter-bearing piece of the
    sentence still being written, so the markers that close the last complete sentence stay
    with it. Returns 0 while the first sentence is being written.
    """
    last_start = 0
    offset = 0
    for line in raw.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        bullet = _LIST_BULLET.match(body)
        skip = bullet.end() if bullet else 0
        for a, b in answer_spans(body[skip:]):
            piece = body[skip + a : skip + b]
            lead = _LEADING_MARKERS.match(piece)
            start = lead.end() if lead else 0
            rest = piece[start:]
            if any(c.isalpha() for c in strip_citations(rest)):
                last_start = offset + skip + a + start + (len(rest) - len(rest.lstrip()))
        offset += len(line)
    return last_start


@dataclass(frozen=True, slots=True)
class Checked:
    """One sentence verified while streaming: the verifier's sentence, its citations' records,
    the reason in plain words (None when supported), and where the verified text ends in the raw
    text (everything after it is the unverified tail)."""

    index: int
    sentence: AnswerSentence
    cited: tuple[Citation, ...]
    reason: str | None
    raw_end: int


class VerifiedLike(Protocol):
    """What the verifier returns (``rag.verify.Verified``), as far as streaming needs it."""

    @property
    def sentences(self) -> tuple[AnswerSentence, ...]: ...

    @property
    def citations(self) -> tuple[Citation, ...]: ...


VerifyFn = Callable[[str], VerifiedLike]


class SentenceStream:
    """Feed the model's pieces; get back each sentence once it is complete and verified.

    ``verify`` verifies a text (complete sentences only) and returns the verifier's result;
    ``sources`` are the prompt's numbered sources (for the reasons' paper names). ``name_paper``
    (a "which paper" question) makes the sentence that names the paper the first supported
    sentence cites, shown before it, as the final answer does ("The paper is “...”: “...”");
    ``repeats`` tells a later sentence that adds nothing to that one, which is not shown.
    """

    def __init__(
        self,
        verify: VerifyFn,
        sources: Sequence[Source],
        *,
        name_paper: Callable[[Citation], AnswerSentence] | None = None,
        repeats: Callable[[AnswerSentence, AnswerSentence], bool] | None = None,
    ) -> None:
        self._verify = verify
        self._sources = {s.n: s for s in sources}
        self._name_paper = name_paper
        self._repeats = repeats
        self._lead: AnswerSentence | None = None
        self.raw = ""
        self._done_at = 0  # characters of raw already verified
        self._taken = 0  # the verifier's sentences already shown
        self.shown: list[Checked] = []

    def feed(self, piece: str) -> list[Checked]:
        """Add a piece of the model's text; the sentences it completed, verified."""
        self.raw += piece
        cut = completed_prefix(self.raw)
        if cut <= self._done_at:
            return []
        return self._check(self.raw[:cut], cut)

    def finish(self, raw: str | None = None) -> list[Checked]:
        """The text has ended: verify the last sentence. ``raw`` is the final text when it differs
        from what was fed (cut where the model echoed the prompt); all that was fed counts as
        verified (``raw_end``), so no tail is left."""
        fed = len(self.raw)
        text = self.raw if raw is None else raw
        if not text.strip():
            return []
        return self._check(text, fed)

    def _check(self, text: str, cut: int) -> list[Checked]:
        self._done_at = max(self._done_at, cut)
        verified = self._verify(text)
        by_n = {c.n: c for c in verified.citations}
        out = []
        for sentence in verified.sentences[self._taken :]:
            self._taken += 1
            cited = tuple(by_n[n] for n in sentence.citations if n in by_n)
            if self._name_paper is not None and self._lead is None and sentence.supported and cited:
                self._lead = self._name_paper(cited[0])
                named = Checked(len(self.shown), self._lead, (cited[0],), None, cut)
                self.shown.append(named)
                out.append(named)
            if self._lead is not None and self._repeats is not None and self._repeats(sentence, self._lead):
                continue
            checked = Checked(len(self.shown), sentence, cited, reason_words(sentence, self._sources), cut)
            self.shown.append(checked)
            out.append(checked)
        return out

    def __iter__(self) -> Iterator[Checked]:
        return iter(self.shown)


# -- reasons in plain words -----------------------------------------------------------------------
_MISSING_NUMBERS = re.compile(r"^\[(\d+)\] does not contain (.+)$")
_MISSING_NAMES = re.compile(r"^\[(\d+)\] does not mention (.+)$")
_NOT_BACKED = re.compile(r"^\[(\d+)\] does not back it")
_MISATTACHED = re.compile(r"^\[(\d+)\] gives (.+), not to what the sentence says$")
_NOT_A_SOURCE = re.compile(r"^\[(\d+)\] is not a source$")
_MISNAMED = re.compile(r"^\[(\d+)\] is named, but another source fits the question better$")


def _paper(n: str, sources: Mapping[int, Source]) -> str:
    src = sources.get(int(n))
    if src is None:
        return "the cited paper"
    name = short_title(src.title)
    return name if name.startswith("\u201c") else f"\u201c{name}\u201d"


def reason_words(sentence: AnswerSentence, sources: Mapping[int, Source]) -> str | None:
    """Why a sentence is not supported, in the reader's words; None when it is supported.

    Maps the verifier's verdict and issues (numbers missing, names missing, restating the
    question, a cited paper that does not back it, a citation that is not a source); it adds no
    check of its own. ``sources`` are the prompt's sources by number (the issues use those).
    """
    if sentence.supported:
        return None
    if sentence.verdict == "no-answer":
        return "restates the question: it adds nothing the question did not say"
    reasons: list[str] = []
    for issue in sentence.issues:
        if m := _MISSING_NUMBERS.match(issue):
            values = m.group(2)
            word = "numbers" if "," in values else "number"
            reasons.append(
                f"the {word} {values} {'are' if word == 'numbers' else 'is'} not in {_paper(m.group(1), sources)}"
            )
        elif m := _MISSING_NAMES.match(issue):
            names = ", ".join(f"\u201c{n}\u201d" for n in m.group(2).split(", "))
            verb = "are" if "," in m.group(2) else "is"
            reasons.append(f"{names} {verb} not named in {_paper(m.group(1), sources)}")
        elif m := _NOT_BACKED.match(issue):
            reasons.append(f"{_paper(m.group(1), sources)} does not back it")
        elif m := _MISATTACHED.match(issue):  # "2.53 to NORB"
            reasons.append(f"{_paper(m.group(1), sources)} gives {m.group(2)}, not to what it says")
        elif m := _MISNAMED.match(issue):
            reasons.append(f"it names {_paper(m.group(1), sources)}, but another source fits the question better")
        elif m := _NOT_A_SOURCE.match(issue):
            reasons.append(f"it cites [{m.group(1)}], which is not one of the sources")
        elif issue.startswith(COUNT_ISSUES):  # true of its paper, but not the count asked for
            reasons.append(issue)
        elif issue.startswith("restates the question"):
            reasons.append("restates the question")
    if not reasons:
        return "no source backs it"
    return "; ".join(dict.fromkeys(reasons))


# -- what the final answer changed ----------------------------------------------------------------
def final_note(shown: Sequence[AnswerSentence], answer: Answer) -> str | None:
    """A note for the reader when the final answer differs from the sentences already shown
    while streaming; None when it only confirms them (or nothing was shown).

    "refused after checking: <reason>", or "changed after checking: ..." naming what the answer
    form added or took away.
    """
    if not shown:
        return None
    if answer.refused:
        return f"refused after checking: {answer.refusal_reason or 'no sentence holds up'}"
    before = [s.shown or s.text for s in shown]
    after = [s.shown or s.text for s in answer.sentences]
    if before == after:
        return None
    added = [s for s in answer.sentences if (s.shown or s.text) not in before]
    removed = [s for s in shown if (s.shown or s.text) not in after]
    parts = []
    if any(s.verdict == "quote" for s in added) and not any(s.verdict != "quote" for s in answer.sentences):
        return "changed after checking: no sentence of the model's answer holds up, so the abstract sentence that answers it is quoted instead"
    if any(s.verdict == "system" for s in added):
        parts.append("the paper it answers with is named first")
    if any(s.verdict == "quote" for s in added):
        parts.append("a quoted line is added for each compared paper the answer did not cite")
    dropped = [s for s in removed if s.verdict == "no-answer"]
    if dropped:
        parts.append(f"{len(dropped)} sentence(s) that only restated the question were removed")
    if not parts:
        parts.append("the final check changed the answer's sentences or their citation numbers")
    return "changed after checking: " + "; ".join(parts)

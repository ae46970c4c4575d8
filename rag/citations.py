"""Citation markers: parse ``[1]``, ``[1, 3]``, ``[1-3]``, ``[Source 2]``; split an answer into
sentences with their markers; renumber 1..n in order of first use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from rag.text import sentence_spans

MARKER = re.compile(
    r"\[\s*(?:sources?\s*)?(\d{1,4}(?:\s*(?:[-–,;]|and)\s*(?:sources?\s*)?\d{1,4})*)\s*\]", re.IGNORECASE
)
UNSUPPORTED_MARK = "[?]"
MAX_RANGE = 50  # a marker like [1-9999] is garbage, not 9999 citations
_LEADING_MARKERS = re.compile(r"^(?:\s*" + MARKER.pattern + r")+", re.IGNORECASE)
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")


def parse_marker(inner: str) -> list[int]:
    """Numbers inside one marker, ranges expanded, in order, without repeats."""
    numbers: list[int] = []
    for part in re.split(r"\s*(?:[,;]|and)\s*", inner):
        part = re.sub(r"(?i)sources?\s*", "", part).strip()
        if not part:
            continue
        bounds = re.split(r"\s*[-–]\s*", part)
        if len(bounds) == 2 and bounds[0].isdigit() and bounds[1].isdigit():
            lo, hi = int(bounds[0]), int(bounds[1])
            if lo <= hi and hi - lo < MAX_RANGE:
                numbers.extend(range(lo, hi + 1))
            else:
                numbers.extend([lo, hi])
        elif part.isdigit():
            numbers.append(int(part))
    return list(dict.fromkeys(numbers))


def find_citations(text: str) -> list[int]:
    """All cited numbers in ``text``, in order of first appearance."""
    out: list[int] = []
    for match in MARKER.finditer(text):
        out.extend(parse_marker(match.group(1)))
    return list(dict.fromkeys(out))


def strip_citations(text: str) -> str:
    """``text`` without markers (and without the ``[?]`` unsupported mark)."""
    while True:  # removing "[0]" from "[[0]0]" leaves a marker: strip until none is left
        stripped = MARKER.sub("", text).replace(UNSUPPORTED_MARK, "")
        if stripped == text:
            break
        text = stripped
    return _SPACE_BEFORE_PUNCT.sub(r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()


def answer_spans(line: str) -> list[tuple[int, int]]:
    """Sentence spans of one line of an answer, none ending inside a quotation: a title quoted
    whole ("The paper is “Words are all you need? Language as ...” [1].") is one sentence, not
    two pieces; nor before a lower-case word: a title's "?" or "!" ("When to Pre-Train Graph
    Neural Networks? From Data Generation Perspective! studies ...") ends no sentence, and the
    verb after it is no sentence of its own."""
    out: list[tuple[int, int]] = []
    for a, b in sentence_spans(line):
        if out:
            piece = line[out[-1][0] : out[-1][1]]
            opens_lower = bool(re.match(r"[a-z]", strip_citations(line[a:b])))
            if piece.count("\u201c") > piece.count("\u201d") or piece.count('"') % 2 or opens_lower:
                out[-1] = (out[-1][0], b)
                continue
        out.append((a, b))
    return out


def split_answer(text: str, *, keep_markers: bool = False) -> list[tuple[str, list[int]]]:
    """Sentences of an answer as (text without markers, cited numbers).

    Markers that the sentence splitter put at the start of a sentence ("... end. [2] Next")
    belong to the sentence before them. ``keep_markers``: the text keeps its markers where the
    model wrote them (what a reader of the raw text sees).
    """
    sentences: list[list] = []
    for line in text.splitlines():  # list items and titles on their own lines are sentences too
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s+", "", line)
        line = re.sub(r"\s+", " ", line).strip()
        for i, (a, b) in enumerate(answer_spans(line)):
            piece = line[a:b]
            lead = _LEADING_MARKERS.match(piece)
            if lead and sentences and (i > 0 or not strip_citations(piece)):
                sentences[-1][1].extend(find_citations(lead.group(0)))
                if keep_markers:
                    sentences[-1][0] += " " + lead.group(0).strip()
                piece = piece[lead.end() :]
            body = strip_citations(piece)
            nums = find_citations(piece)
            if body:
                sentences.append([piece.strip() if keep_markers else body, nums])
            elif sentences:
                sentences[-1][1].extend(nums)
                if keep_markers and piece.strip():
                    sentences[-1][0] += " " + piece.strip()
    return [(body, list(dict.fromkeys(nums))) for body, nums in sentences]


def renumber(citation_lists: Iterable[Sequence[int]]) -> dict[int, int]:
    """Map old numbers to 1..n in order of first use (a bijection onto 1..n)."""
    mapping: dict[int, int] = {}
    for nums in citation_lists:
        for n in nums:
            if n not in mapping:
                mapping[n] = len(mapping) + 1
    return mapping


def render_sentence(body: str, citations: Sequence[int], *, unsupported: bool = False) -> str:
    """A sentence with its markers placed before its final punctuation: ``Claim [1][3].``"""
    marks = UNSUPPORTED_MARK if unsupported else "".join(f"[{n}]" for n in citations)
    if not marks:
        return body
    match = re.search(r"[.!?]+[\"')\]]*$", body)
    if match:
        return f"{body[: match.start()].rstrip()} {marks}{body[match.start() :]}"
    return f"{body} {marks}"

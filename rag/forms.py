"""Answer forms the system controls: what kind of answer a question asks for, and the names of
papers where the model used a citation as a noun.

A 1.5B model writes "[1] proposes ..." or "as described in [1]"; once markers are moved to the end
of the sentence the reader sees "proposes ..." or "as described in." A marker used as a noun is
therefore given its paper's short title ("Hypencoder [1] proposes ..."). A "which paper"
question is answered with the paper's name, which the system takes from the citation, never
from the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from rag.citations import MARKER

FORMS = ("which-paper", "list", "compare", "fact")

_LIST = re.compile(
    r"^\s*(which|what)\s+(other\s+)?(papers|works|studies|articles|publications|methods|approaches)\b"
    r"|\b(papers|works|studies)\s+in\s+the\s+collection\b|\blist\s+(the\s+)?(papers|works)\b",
    re.IGNORECASE,
)
_WHICH_PAPER = re.compile(
    r"^\s*(which|what)\s+(paper|work|study|article|publication)\b|^\s*(is|are)\s+there\s+(a|an|any)\s+\w+"
    r"|^\s*(name|find)\s+(a|the)\s+(paper|work|study)\b",
    re.IGNORECASE,
)
# "compared" and "comparison" are left out: "Among the five classifiers compared for ..., which
# one ...?" asks for a fact, not for a comparison of two papers.
_COMPARE = re.compile(r"\b(differ|differs|difference|differences|compare|contrast|versus|vs\.?)\b", re.IGNORECASE)


def question_form(question: str) -> str:
    """The answer form a question asks for: "list" ("Which papers in the collection ...?"),
    "which-paper" ("Which paper ...?", "Is there a paper / a way / a benchmark ...?": the answer
    names the paper), "compare" ("How do A and B
    differ ...?"), else "fact" (facts, numbers, yes/no: answered in sentences)."""
    if _LIST.search(question):
        return "list"
    if _WHICH_PAPER.search(question):
        return "which-paper"
    if _COMPARE.search(question) and re.search(r"\b(and|or|between|both|with|from|to)\b", question, re.IGNORECASE):
        return "compare"
    return "fact"


_LIST_LEAD = re.compile(
    r"^\s*(which|what)\s+(other\s+)?(papers|works|studies|articles|publications)\s+(in\s+the\s+collection\s+)?"
    r"|^\s*list\s+(the\s+|all\s+)?(papers|works)\s+(in\s+the\s+collection\s+)?",
    re.IGNORECASE,
)


def list_topic(question: str) -> str:
    """The topic of a list question: "Which papers in the collection study X?" -> "study X?"
    (the lead says nothing about which papers are relevant; left in, it pulls in any paper)."""
    topic = _LIST_LEAD.sub("", question, count=1).strip()
    return topic or question


_ASPECT = re.compile(
    r"\b(?:differ|differs|difference|differences|compare|contrast)\s+(?:in|on|with respect to|in terms of|regarding)\s+(.+)",
    re.IGNORECASE,
)


def compare_aspect(question: str) -> str:
    """What a comparison asks about: "How do A and B differ in how they pick X?" -> "how they
    pick X?" (the names of A and B would make every sentence that names them look relevant).
    The whole question when it names no aspect."""
    match = _ASPECT.search(question)
    return match.group(1).strip() if match and len(match.group(1).split()) >= 2 else question


def short_title(title: str) -> str:
    """A name for a paper in running text: the part before a colon when it is short (a method's
    name: "Hypencoder"), else the whole title in quotes."""
    head = title.split(":", 1)[0].strip()
    if ":" in title and 0 < len(head.split()) <= 5:
        return head
    return f"\u201c{title.strip()}\u201d"


# Nouns after which a marker that ends the sentence is the claim's source ("... 8x faster than
# the WeakNAS approach [1]."), not a name; before more words it names the paper ("the approach
# [1] uses ...").
_CLAIM_NOUNS = frozenset("method methods approach approaches model models".split())
# Words after which a marker stands for a paper (a noun), not for the source of a claim.
_NOUN_BEFORE = frozenset(
    "in by of from paper papers work works study studies source sources article articles method methods "
    "approach approaches model models and both see to with on at for than like as between are is was were "
    "include includes including".split()
)
_WORD_BEFORE = re.compile(r"([A-Za-z]+)\W*$")
# Verbs a sentence opening with a citation often starts with, lower-cased once a name precedes them.
_LOWER_AFTER_NAME = frozenset(
    "uses use proposes propose introduces introduce presents present shows show finds find reports report "
    "describes describe studies study develops develop achieves achieve is are was were has have also "
    "demonstrates demonstrate provides provide trains train applies apply explores explore evaluates evaluate "
    "addresses address focuses focus discusses discuss suggests suggest argues argue releases release".split()
)


# A sentence that opens with one of these (or an adverb and one of these) has lost its subject:
# the model wrote a paper's title as a heading and bullets under it ("- Trains classifiers to
# ...", "- Critically reviews ..."). Words that also open a sentence as a plural noun ("Studies
# show ...", "Models trained on ...") are left out.
_SUBJECTLESS_VERBS = frozenset(
    "proposes introduces presents shows finds describes develops achieves has demonstrates provides trains "
    "applies explores evaluates addresses focuses discusses suggests argues releases performs enables reviews "
    "examines investigates compares combines learns improves reduces outperforms offers makes analyzes analyses "
    "surveys builds employs relies leverages generates predicts considers treats extends adapts removes "
    "replaces requires yields obtains reaches attains aims seeks uses designs formulates establishes highlights "
    "identifies outlines emphasizes emphasises explains constructs creates defines derives".split()
)
_OPENING = re.compile(r"^(\s*)((?:[A-Z][a-z]+ly\s+)?)([A-Za-z][a-z]+)\b")


def name_lost_subject(body: str, title: str) -> str:
    """A sentence whose subject is lost ("Trains classifiers to predict ... [1]": the model wrote
    the paper's title as a heading and its claims as bullets under it) gets the paper it cites as
    its subject ("Probing Classifiers trains classifiers ..."); any other sentence is returned as
    it is."""
    match = _OPENING.match(body)
    if not match or match.group(3).lower() not in _SUBJECTLESS_VERBS:
        return body
    lead, adverb, verb = match.groups()
    return f"{lead}{short_title(title)} {adverb.lower()}{verb.lower()}{body[match.end():]}"


def name_noun_citations(text: str, titles: Mapping[int, str], *, whole: bool = False) -> str:
    """Give each marker that stands as a noun its paper's short title: at the start of a sentence
    ("[1] proposes"), or after a preposition, "and" or "paper" ("described in [1]", "the papers
    [1] and [2]"). Markers that end a claim are left alone. ``whole``: the whole title in quotes
    (a "which paper" answer: "This paper is [2]" answers with the paper, so with its title, not
    with the "Less is More" before its colon)."""
    out: list[str] = []
    last = 0
    for match in MARKER.finditer(text):
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
        before = text[last : match.start()]
        out.append(before)
        last = match.end()
        known = [n for n in numbers if n in titles]
        if len(known) != 1 or len(numbers) != 1:
            out.append(match.group(0))
            continue
        prefix = "".join(out).rstrip()
        rest = text[match.end() :].lstrip()
        # A marker opens a sentence only when words follow it; after "... end." it closes one.
        at_start = (not prefix or prefix.endswith((".", "!", "?", ":", "\n")) or prefix[-1] in "\"'(“") and bool(
            re.match(r"[A-Za-z]", rest)
        )
        word = _WORD_BEFORE.search(prefix)
        # After "... the models." a marker closes that sentence; it is not a noun of the next.
        ends_claim = not rest or rest[0] in ".!?"
        after_noun_word = (
            bool(word)
            and word.group(1).lower() in _NOUN_BEFORE
            and not prefix.endswith((",", ".", "!", "?"))
            and not (ends_claim and word.group(1).lower() in _CLAIM_NOUNS)
        )
        title = titles[known[0]]
        name = f"\u201c{title.strip()}\u201d" if whole else short_title(title)
        named_already = name.strip("\u201c\u201d").lower() in prefix.lower()[-len(name) - 20 :]
        title_follows = rest.lower().startswith(" ".join(title.lower().split()[:3]))
        if after_noun_word and named_already and word is not None and word.group(1).lower() == "by":
            # 'The paper "X" by [1] shows ...': the marker stands where the authors would; once
            # the marker moves to the claim's end, "by" would be left with nothing after it.
            out[-1] = re.sub(r"\s*\bby\s*$", " ", before, flags=re.IGNORECASE)
            out.append(match.group(0))
            continue
        if (at_start or after_noun_word) and not named_already and not title_follows:
            out.append(f"{name} {match.group(0)}")
            if at_start:  # "[1] Uses ..." -> "Name [1] uses ...": the verb is no longer capitalised
                following = re.match(r"(\s*)([A-Z][a-z]+)\b", text[match.end() :])
                if following and following.group(2).lower() in _LOWER_AFTER_NAME:
                    out.append(following.group(1) + following.group(2).lower())
                    last = match.end() + following.end()
            continue
        out.append(match.group(0))
    out.append(text[last:])
    return "".join(out)

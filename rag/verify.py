"""Check every answer sentence against the evidence of the sources it cites.

A small model cites the wrong paper, forgets citations, and invents numbers and names. So a
sentence is supported by a source only if every number and every name (acronym, CamelCase
or capitalised word, letter-digit token) in it occurs in that source's evidence (title +
sentences shown to the model), and the sentence is close to the evidence: by embedding
similarity to its best sentence or by the share of its content words found there.
Citations that are not supported are dropped; a supported source the model did not cite is
attached; a sentence no source supports is marked unsupported.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace

import numpy as np

from rag.citations import render_sentence, renumber, split_answer
from rag.evidence import STOPWORDS, CachedEmbedder, addresses_the_model, content_words, stem, words
from rag.text import sentence_spans
from rag.types import AnswerSentence, Citation, EvidenceSentence, Source

# A number: "1,000", "0.5", and one written with its unit or scale ("15%", "3x", "14M", "1.4B", "100k";
# the value is the written digits: "1.4B" and "1.4 billion" are both 1.4).
_NUMBER = re.compile(
    r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\w]|\.\d)|(?<![\w.])(\d+)(?:\.(\d+))?(?=[%xX×]|[kKMBT](?![\w]))"
)
# A token that is a number with its unit or scale, not a name ("3x", "14M", "1.4B").
_NUMBER_TOKEN = re.compile(r"^\d+(?:\.\d+)?(?:[%xX×]|[kKMBT])$")
_TOKEN = re.compile(r"[^\s]+")
# What surrounds a name in running text (quotes, brackets, punctuation), stripped before it is read.
NAME_PUNCT = "\"'()[]{}.,;:!?“”‘’"
# Where a hyphenated (or slashed) name splits into its parts.
HYPHEN = re.compile(r"[-/]")
_REFUSAL = re.compile(
    r"(\b(sources?|context|documents?|papers?|abstracts?|information|collection)\b[^.]*\b(do(es)?\s+not|don't|doesn't|"
    r"cannot|can't|no|not)\b[^.]*\b(answer|contain|mention|provide|include|information|say|specify|cover|discuss|address)"
    r"|\bnot\s+(mentioned|specified|provided|stated|covered|available)\b|\bI\s+(cannot|can't|don't know|do not know)\b"
    r"|\bno (information|mention)\b)",
    re.IGNORECASE,
)
# Capitalised words that are not names when they open a clause or are common in answers.
_COMMON_CAPS = frozenset(
    "i a an the this these that those it its they their we our in on of for to and or but by with as".split()
)


_CLAUSE = re.compile(r"\s*(?:;|,?\s+(?:while|whereas|but|and)\s+)\s*")
# Words that say where an answer is, not what it is: "Yes, ... is described in [1]".
_META_WORDS = frozenset(
    stem(w)
    for w in "yes no described describes discussed discusses presented presents introduced introduces addressed "
    "addresses mentioned mentions explored explores covered covers provided provides shown collection source "
    "sources article articles research researchers authors demonstrated demonstrates demonstrate achieved "
    "achieves achieve accomplished explained explains studied investigated examined reported reports "
    # ... or what it is called: "This method is referred to as G-SimCLR [1]" names, it does not answer
    "referred refers called named termed dubbed known "
    # ... or point at it: "this method", "the paper"
    "method methods approach approaches technique techniques strategy strategies idea framework dataset paper "
    "papers work study".split()
)
# Verbs that point at where something is said ("is described in", "SeiT++ presents").
_POINTER = re.compile(
    r"\b(?:(?:described|discussed|presented|introduced|addressed|mentioned|explored|covered|detailed|outlined|"
    r"proposed|explained|shown|reported|studied|investigated|examined|demonstrated|found|stated|highlighted)\s+(?:in|by)\b|(?:describes|discusses|presents|introduces|addresses|mentions|explores|covers|"
    r"proposes)\s+(?:the|this|that|such|an?)\s+(?:approach|method|technique|strategy|idea|framework|solution)\b)",
    re.IGNORECASE,
)
# A claim close to an evidence sentence must still have this share of its new words there.
MIN_COVERAGE = 0.34
# "How many crystal structures ...": what the question counts (up to its verb).
_HOW_MANY = re.compile(
    r"\bhow\s+many\s+((?:(?!(?:are|is|was|were|do|does|did|has|have|had|can|could|will|would)\b)[\w'-]+\s*){1,6})",
    re.IGNORECASE,
)
_ASKS = re.compile(r"\b(what|which|how|who|where|when|why)\b", re.IGNORECASE)
# A claim's number counts something else when the noun after it shares no word with what the
# question counts and is not even close in meaning ("16 Nobel Laureates" for "how many crystal
# structures": 0.11); synonyms score higher ("frames" / "images" 0.54, "tokens" / "words" 0.29).
MIN_COUNTED_SIMILARITY = 0.2
# A count written in words ("three datasets", "a single layer", "hundreds of images").
_COUNT_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred hundreds "
    "thousand thousands million millions billion billions dozen dozens single none zero".split()
)


# How a sentence's issue begins when it does not answer "how many X" (its reason goes on to
# name X, or what the sentence counts instead).
NO_COUNT = "it does not say how many"
COUNTS_ELSE = "it counts"
COUNT_ISSUES = (NO_COUNT, COUNTS_ELSE)  # for str.startswith


def is_refusal(sentence: str) -> bool:
    """True for a sentence saying the sources do not answer (in any of the usual wordings)."""
    return bool(_REFUSAL.search(sentence))


_LATEX_TIMES = re.compile(r"(\d)\s*(?:\\times|times|×)\s*(\d)")
# "3times training schedule" (a LaTeX "3$\\times$" whose markup was stripped), "3 \\times", "3×" -> "3x"
_TIMES_FACTOR = re.compile(r"(\d)(?:\s*\\times|times|\s*×)(?![\w])")


def plain(text: str) -> str:
    """LaTeX leftovers of abstracts written as the claims write them: "75\\%" -> "75%",
    "300\\times 300" / "300times 300" / "300×300" -> "300x300", "3times" / "3×" -> "3x"."""
    return _TIMES_FACTOR.sub(r"\1x", _LATEX_TIMES.sub(r"\1x\2", text.replace("\\%", "%")))


_GLUED_NUMBER = re.compile(r"(?<=[a-z]{2})(?=\d)")


def evidence_numbers(text: str) -> set[float]:
    """The numbers an abstract states, also where a typo glued one to the word before it
    ("models (22M to1.5B)" states 1.5B). One pass: the space goes only where no number starts
    (a letter before a digit), so every number ``numbers_in(text)`` finds is still found. A number
    with a scale also states its value: "114k volumes" states 114,000."""
    text = _GLUED_NUMBER.sub(" ", text)
    return numbers_in(text) | set(scaled_values(text).values())


# A number with a scale letter or word: "114k", "22M", "1.5B", "2 million".
_SCALED = re.compile(r"(?<![\w.,])(\d+(?:\.\d+)?)\s?(k|K|M|B|T|thousand|million|billion|trillion)(?![\w])")
_MULTIPLIER = {"k": 1e3, "K": 1e3, "thousand": 1e3, "M": 1e6, "million": 1e6, "B": 1e9, "billion": 1e9}
_MULTIPLIER |= {"T": 1e12, "trillion": 1e12}


def scaled_values(text: str) -> dict[float, float]:
    """The numbers of ``text`` written with a scale, as written -> their value ("114k" ->
    {114.0: 114000.0}, "1.5 billion" -> {1.5: 1500000000.0}), so that "114,000" and "114k" are
    one number (``numbers_in`` keeps the number as written: "114k" is 114.0)."""
    out: dict[float, float] = {}
    for m in _SCALED.finditer(plain(text)):
        value = float(m.group(1))
        out[value] = round(value * _MULTIPLIER[m.group(2)], 6)
    return out


def stated(value: float, scaled: Mapping[float, float], evidence: set[float]) -> bool:
    """``value`` of a claim (``scaled``: the claim's ``scaled_values``) is one of the ``evidence``
    numbers, as written or as its value ("114k" is stated by "114,000")."""
    return value in evidence or scaled.get(value) in evidence


def numbers_in(text: str) -> set[float]:
    """Numbers written in ``text`` as values (1,000 -> 1000.0; 15% -> 15.0)."""
    out: set[float] = set()
    text = plain(text)
    for m in _NUMBER.finditer(text):
        whole = m.group(1) or m.group(3)
        frac = m.group(2) or m.group(4)
        if whole is None:
            continue
        try:
            out.add(float(whole.replace(",", "") + ("." + frac if frac else "")))
        except ValueError:
            continue
    return out


_SCALE = frozenset(
    "billion billions million millions thousand thousands hundred hundreds trillion percent percentage points point times fold x % k m b".split()
)


# Units written short in abstracts and long in answers ("20 mins" / "20 minutes").
_UNITS = {
    "min": stem("minutes"),
    "mins": stem("minutes"),
    "sec": stem("seconds"),
    "secs": stem("seconds"),
    "hr": stem("hours"),
    "hrs": stem("hours"),
    "ms": stem("milliseconds"),
}


def number_contexts(text: str) -> dict[float, set[str]]:
    """For each number, the (stemmed) content words right after it: "2 billion parameters" ->
    {2.0: {"parameter"}}. Scale words (billion, %, times) are skipped over."""
    out: dict[float, set[str]] = {}
    text = plain(text)
    for m in _NUMBER.finditer(text):
        values = numbers_in(m.group(0))
        if not values:
            continue
        context: list[str] = []
        for w in words(text[m.end() : m.end() + 60]):
            if w.lower() in _SCALE or w[0].isdigit():
                continue
            if w.lower() in STOPWORDS or len(w) < 3:
                if context:
                    break
                continue
            context.append(_UNITS.get(w.lower(), stem(w)))
            if len(context) == 2:
                break
        for v in values:
            out.setdefault(v, set()).update(context)
    return out


_LATEX_ACCENT = re.compile(r"\\['`^\"~=.]\{?([A-Za-z])\}?")


def counted(question: str) -> str:
    """What a "how many ..." question counts ("how many crystal structures with critical
    temperatures does ..." -> "crystal structures with critical temperatures"), else ""."""
    m = _HOW_MANY.search(question)
    if not m or len(_ASKS.findall(question)) > 1:
        return ""  # a question of several parts: the other parts' numbers count other things
    phrase = m.group(1).strip()
    return "" if phrase.split()[0].lower() in ("times", "more", "fewer", "of", "other") else phrase


def gives_count(claim: str, question: str) -> bool:
    """True when ``claim`` states a number the question does not, in digits or in words."""
    if numbers_in(claim) - numbers_in(question):
        return True
    asked = {w.lower() for w in words(question)}
    return any(w.lower() in _COUNT_WORDS and w.lower() not in asked for w in words(claim))


def _number_nouns(claim: str) -> list[str]:
    """The words right after each number of ``claim``, as written ("16 Nobel Laureates'" ->
    "Nobel Laureates")."""
    out = []
    text = plain(claim)
    for m in _NUMBER.finditer(text):
        phrase: list[str] = []
        for w in words(text[m.end() : m.end() + 60]):
            if w.lower() in _SCALE or w[0].isdigit():
                continue
            if w.lower() in STOPWORDS or len(w) < 3:
                if phrase:
                    break
                continue
            phrase.append(w)
            if len(phrase) == 2:
                break
        if phrase:
            out.append(" ".join(phrase))
    return out


# British spellings written the American way, so that a name is one name in either spelling
# ("Bayesian-optimisation" in a question, "Bayesian optimization" in the abstract).
_BRITISH = re.compile(r"(?<=[a-z]{3})(is|ys)(?=(?:ation|ations|e|es|ed|ing|er|ers)(?![a-z]))")


def norm_name(token: str) -> str:
    """A name as compared: lower case, letters and digits, accents dropped ("Poincaré",
    "Poincar\\'e" and "Poincare" are one name), British spelling folded ("optimisation" is
    "optimization")."""
    token = re.sub(r"['’]s$", "", token)
    token = unicodedata.normalize("NFKD", _LATEX_ACCENT.sub(r"\1", token))
    token = _BRITISH.sub(lambda m: m.group(1)[0] + "z", token.lower())
    return re.sub(r"[^0-9a-z]", "", token)


# Second parts of a hyphenated word that describe the name before them rather than name anything.
DESCRIPTORS = frozenset(
    "style like based level free specific aware wise driven scale type sized related oriented centric inspired "
    "guided dependent only".split()
)
_DESCRIBED = re.compile(r"^(.+?)(?:-(?:" + "|".join(sorted(DESCRIPTORS)) + r"))+$", re.IGNORECASE)


def undescribed(token: str) -> str:
    """``token`` without a describing suffix: "SimCLRv2-based" -> "SimCLRv2"."""
    described = _DESCRIBED.match(token)
    return described.group(1) if described else token


def names_in(sentence: str) -> set[str]:
    """Names a claim depends on: acronyms, CamelCase, letter-digit tokens, capitalised words
    not at the start of the sentence. Returned normalised (lower case, letters and digits); a
    name with a describing suffix is the name ("SimCLRv2-based", "SegNet-like": "simclrv2",
    "segnet"), since the suffix is the writer's word, not the paper's."""
    out: set[str] = set()
    starts = True  # at the start of a sentence, where any word is capitalised
    for raw in _TOKEN.findall(sentence):
        token = undescribed(raw.strip(NAME_PUNCT))
        at_start = starts
        if any(c.isalpha() for c in raw):  # emoji and numbers do not start the sentence
            starts = False
        if raw.rstrip("\"')]}”’").endswith((".", "!", "?")):
            starts = True
        if len(token) < 2 or _NUMBER_TOKEN.match(token):
            continue  # a number with its unit is checked as a number
        letters = re.sub(r"[^A-Za-z]", "", token)
        has_digit = any(c.isdigit() for c in token)
        inner_upper = any(c.isupper() for c in token[1:])
        capitalised = token[0].isupper() and not at_start and token.lower() not in _COMMON_CAPS
        if (letters and has_digit) or inner_upper or capitalised:
            norm = norm_name(token)
            if norm and not norm.isdigit():
                out.add(norm)
    return out


_RESPECTIVELY = re.compile(r"\brespectively\b", re.IGNORECASE)
_VALUE_TOKEN = re.compile(r"^[+~≈]?\d[\d,]*(?:\.\d+)?(?:%|x|×|[kKMBT])?$")
_PUNCT = "\"'()[]{}.,;:!?“”‘’"


@dataclass(frozen=True, slots=True)
class Respective:
    """A number of a "respectively" sentence, with the item it belongs to and the other items."""

    item: str  # as written: "CIFAR10"
    names: frozenset[str]  # its names, normalised
    others: tuple[tuple[str, frozenset[str]], ...]


def _chunk_names(chunk: str) -> set[str]:
    return names_in("so " + chunk)  # a chunk does not start a sentence


def _named_span(chunk: Sequence[str]) -> str:
    """The words of ``chunk`` from its first name to its last ("ResNet-50 image classifiers" -> "ResNet-50")."""
    named = [i for i, t in enumerate(chunk) if _chunk_names(t)]
    return " ".join(chunk[named[0] : named[-1] + 1]) if named else " ".join(chunk)


def _coordinated_values(tokens: Sequence[str]) -> list[float]:
    """The numbers of ``tokens`` when they form one plain list ("2.53%, 19.51%, 0.35%", "51.1 AP and
    52.2 AP"): between two numbers only "and", "or", commas, or the same unit word. Else []."""
    at = [i for i, t in enumerate(tokens) if _VALUE_TOKEN.match(t)]
    if len(at) < 2:
        return []
    after = tokens[at[0] + 1] if at[0] + 1 < len(tokens) else ""
    unit = after if after.isalpha() and after.lower() not in STOPWORDS else ""
    for a, b in zip(at, at[1:], strict=False):
        between = [t for t in tokens[a + 1 : b] if t and t.lower() not in ("and", "or")]
        if between and between != [unit]:
            return []
    values = [v for i in at for v in sorted(numbers_in(tokens[i]))]
    return values if len(set(values)) == len(values) else []


def _coordinated_items(raw: Sequence[str], tokens: Sequence[str], k: int) -> list[tuple[str, frozenset[str]]]:
    """The one list of ``k`` named items ("AlexNet and ResNet-50", "UCI HAR and Motion-Sense") of
    the tokens, each item holding a name of its own; [] when there is none or more than one."""
    fits = []
    for p, t in enumerate(tokens):
        if t.lower() not in ("and", "or"):
            continue
        right: list[str] = []
        for q in range(p + 1, min(p + 4, len(tokens))):
            if tokens[q].lower() in STOPWORDS:
                break
            right.append(tokens[q])
            if raw[q][-1:] in ",;)":
                break
        chunks = [right]
        q = p - 1
        while q >= 0:  # comma-separated chunks of at most three words before "and"
            chunk: list[str] = []
            while q >= 0 and len(chunk) < 3 and tokens[q].lower() not in STOPWORDS:
                chunk.insert(0, tokens[q])
                q -= 1
                if q >= 0 and raw[q][-1:] in ",(":
                    break
            if not chunk:
                break
            chunks.insert(0, chunk)
            if not (q >= 0 and raw[q].endswith(",")):
                break
        if len(chunks) != k or not all(chunks):
            continue
        items = [(_named_span(c), frozenset(_chunk_names(" ".join(c)))) for c in chunks]
        if any(not names or any(_VALUE_TOKEN.match(w) for w in text.split()) for text, names in items):
            continue
        if any(a[1] & b[1] for i, a in enumerate(items) for b in items[i + 1 :]):
            continue
        fits.append(items)
    return fits[0] if len(fits) == 1 else []


def respective_numbers(sentence: str) -> dict[float, Respective]:
    """What a "respectively" sentence pairs: "error rates of 2.53%, 19.51%, 0.35% on NORB, CIFAR10 and
    MNIST, respectively" gives 19.51 to CIFAR10. Only plain cases: one list of k numbers and either
    exactly k names in the sentence or one list of k named items; {} otherwise."""
    m = _RESPECTIVELY.search(sentence)
    if not m:
        return {}
    raw = plain(sentence[: m.start()]).split()
    tokens = [t.strip(_PUNCT) for t in raw]
    values = _coordinated_values(tokens)
    if not values:
        return {}
    named: list[tuple[str, frozenset[str]]] = []
    for t in tokens:
        for name in sorted(_chunk_names(t)) if t else ():
            if all(name not in n for _, n in named):
                named.append((t, frozenset([name])))
    items = named if len(named) == len(values) else _coordinated_items(raw, tokens, len(values))
    if len(items) != len(values):
        return {}
    return {
        v: Respective(text, names, tuple(o for o in items if o[1] != names))
        for v, (text, names) in zip(values, items, strict=True)
    }


def misattached(claim: str, value: float, holders: Sequence[str]) -> str | None:
    """The item the evidence gives ``value`` to, when every sentence stating it is a "respectively"
    list that gives it to an item other than the one the claim names ("2.53% on CIFAR10" where the
    abstract gives 2.53% to NORB); None when some sentence backs it as the claim says."""
    said = names_in(claim)
    owners = []
    for holder in holders:
        pair = respective_numbers(holder).get(value)
        if pair is None or pair.names & said or not any(names & said for _, names in pair.others):
            return None
        owners.append(pair.item)
    return owners[0] if owners else None


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|[-/]")


def evidence_tokens(text: str) -> set[str]:
    """Normalised tokens of the evidence, their hyphen parts, and adjacent pairs joined
    (so 'ResNet-50', 'ResNet 50' and 'ResNet50' all match); "@" separates tokens."""
    # "IITR-CIOL@NLU" (a team at a workshop) is two names
    raw = [t.strip(NAME_PUNCT) for t in _TOKEN.findall(plain(text).replace("@", " "))]
    tokens: set[str] = set()
    norms = [norm_name(t) for t in raw]
    for t, n in zip(raw, norms, strict=True):
        tokens.add(n)
        hyphen_parts = [norm_name(p) for p in HYPHEN.split(t)]
        tokens.update(hyphen_parts)
        # and every run of them: "LG-ANNA-Embedding" backs "LG-ANNA"
        runs = range(len(hyphen_parts) + 1)
        tokens.update("".join(hyphen_parts[i:j]) for i in runs for j in runs if j >= i + 2)
        tokens.update(norm_name(p) for p in _CAMEL.split(t))  # "MaskR-CNN" also backs "Mask"
    tokens.update(a + b for a, b in zip(norms, norms[1:], strict=False))
    # Acronyms of the phrases written out: "machine learning" backs "ML", "large language
    # models" backs "LLMs" (initials of 2-5 consecutive words, hyphen parts counted as words).
    parts = [p for t in raw for p in HYPHEN.split(t) if p and p[0].isalpha()]
    for size in range(2, 6):
        for i in range(len(parts) - size + 1):
            tokens.add("".join(p[0].lower() for p in parts[i : i + size]))
    tokens.discard("")
    return tokens


def name_found(name: str, tokens: AbstractSet[str]) -> bool:
    return (
        name in tokens
        or name.rstrip("s") in tokens
        or name + "s" in tokens
        or (name.endswith("s") and name[:-1] + "es" in tokens)
        or (name.endswith("y") and name[:-1] + "ies" in tokens)  # "library" / "libraries"
    )


def compound_found(word: str, tokens: set[str]) -> bool:
    """A hyphenated name made of a name and plain words, each written in the text, the plain words
    perhaps in another form: "ImageNet-pretrained" in "pre-training on ImageNet", "CT-only" in
    "Task 1 (CT)". A part with a digit is a version or a size ("ResNet-101"), never loose.
    ``word`` is as written, the punctuation around it stripped (``NAME_PUNCT``)."""
    parts = [p for p in HYPHEN.split(undescribed(word)) if norm_name(p)]
    named = [p for p in parts if norm_name(p) not in DESCRIPTORS]
    if len(parts) < 2 or not named or any(c.isdigit() for p in parts for c in p):
        return False
    stems: set[str] | None = None
    for part in named:
        if name_found(norm_name(part), tokens):
            continue
        if not (part.isalpha() and part.islower()):
            return False
        stems = {stem(t) for t in tokens if t.isalpha()} if stems is None else stems
        if stem(part) not in stems:
            return False
    return True


def missing_names_of(sentence: str, tokens: set[str]) -> list[str]:
    """The names of ``sentence`` (``names_in``) that ``tokens`` (``evidence_tokens``) do not hold,
    as the sentence writes them; a hyphenated name is found when its parts are (``compound_found``)."""
    absent = {n for n in names_in(sentence) if not name_found(n, tokens)}
    if not absent:
        return []
    out = []
    for word in dict.fromkeys(t.strip(NAME_PUNCT) for t in sentence.split()):
        name = norm_name(undescribed(word))
        if name in absent:
            absent.discard(name)
            if not compound_found(word, tokens):
                out.append(word)
    return out + sorted(absent)  # a name split across spaces stays normalised


def novel_words(claim: str, question_words: set[str], title: str = "", *, keep_title: bool = False) -> set[str]:
    """The content words of ``claim`` that the question did not already say (nor the cited paper's
    title, unless ``keep_title``: for "which paper ..." the title is the answer). Numbers count."""
    novel = content_words(claim) - question_words - _META_WORDS
    if not keep_title:
        # The title's generic words say nothing new, but a name from it ("LAuReL", "SeiT++",
        # "DFN-2B", "Hypencoder: ...") answers "is there a way to ..." -- unless the claim only
        # says where the answer is ("This strategy is described in SeiT++ [1]").
        novel -= content_words(title) - (set() if _POINTER.search(claim) else title_names(title))
    return novel


def names_only(claim: str, source: Source, question_words: set[str], keep_title: bool) -> bool:
    """``claim`` says nothing but the question's words and the cited paper's title (a "which
    paper" answer, ``keep_title``: "The paper that <the question's words> is “X”")."""
    return keep_title and not numbers_in(claim) and not novel_words(claim, question_words, source.title)


def title_names(title: str) -> set[str]:
    """The (stemmed) names a title gives its method: tokens with inner capitals, digits or all
    capitals, and a one- or two-word head before a colon ("Hypencoder: Hypernetworks for ...")."""
    names = set()
    head, colon, _ = title.partition(":")
    if colon and 1 <= len(words(head)) <= 2:
        names |= content_words(head)
    for token in words(title):
        if any(c.isdigit() for c in token) or any(c.isupper() for c in token[1:]):
            names.add(stem(token))
    return names


@dataclass(frozen=True, slots=True)
class SupportCheck:
    """How well one source backs one sentence."""

    n: int
    similarity: float
    overlap: float
    missing_numbers: tuple[str, ...]
    missing_names: tuple[str, ...]
    supported: bool
    best_sentence: str
    restates: bool = False
    misattached: tuple[str, ...] = ()  # "2.53 to NORB": numbers the evidence gives to another item

    @property
    def strength(self) -> float:
        return self.similarity + self.overlap

    def reason(self) -> str:
        if self.restates:
            return "restates the question: it adds nothing the question did not say"
        if self.missing_numbers:
            return f"[{self.n}] does not contain {', '.join(self.missing_numbers)}"
        if self.missing_names:
            return f"[{self.n}] does not mention {', '.join(self.missing_names)}"
        if self.misattached:
            return f"[{self.n}] gives {', '.join(self.misattached)}, not to what the sentence says"
        return (
            f"[{self.n}] does not back it (similarity {self.similarity:.2f}, "
            f"{self.overlap:.0%} of its new words found there)"
        )


@dataclass(frozen=True, slots=True)
class Verified:
    """The verifier's result: final sentences and citations, renumbered."""

    text: str
    sentences: tuple[AnswerSentence, ...]
    citations: tuple[Citation, ...]
    invalid_citations: int
    said_cannot_answer: bool
    claims: int = 0
    supported_claims: int = 0
    dropped: tuple[str, ...] = field(default_factory=tuple)


def _shown_support(claim_numbers: set[float], claim_words: set[str], texts: Sequence[str], sims: np.ndarray) -> int:
    """The evidence sentence a reader is shown as a claim's support: the one holding most of the
    claim's numbers, then most of its words, then the closest by embedding. Similarity alone picks "The
    link to the dataset is ..." for "The dataset contains 67,760 frames" (it only decides which
    sentence is quoted, never whether the claim is supported)."""

    def score(i: int) -> tuple[int, float]:
        holds = len(claim_numbers & numbers_in(texts[i]))
        shared = len(claim_words & content_words(texts[i])) / len(claim_words) if claim_words else 0.0
        return holds, shared + float(sims[i])

    return max(range(len(texts)), key=score)


class Verifier:
    """Checks sentences against sources; thresholds come from the config."""

    def __init__(
        self,
        embedder: CachedEmbedder,
        *,
        min_similarity: float = 0.6,
        min_overlap: float = 0.6,
        abstracts: Mapping[str, str] | None = None,
    ) -> None:
        """``abstracts`` (paper id -> abstract): when a sentence is not backed by the evidence the
        model saw, its cited paper's whole abstract is tried before the citation is given up, so a
        right citation of a fact outside the selected sentences is kept (with that sentence)."""
        self.embedder = embedder
        self.min_similarity = min_similarity
        self.min_overlap = min_overlap
        self.abstracts = abstracts

    def whole(self, source: Source) -> Source | None:
        """``source`` with every sentence of its abstract, or None if the abstract is unknown."""
        abstract = self.abstracts.get(source.paper_id) if self.abstracts is not None else None
        if not abstract:
            return None
        spans = sentence_spans(abstract) or [(0, len(abstract))]
        sentences = tuple(
            EvidenceSentence(start=a, end=b, text=abstract[a:b], score=0.0)
            for a, b in spans
            if not addresses_the_model(abstract[a:b])  # withheld from the model, and no evidence
        )
        return replace(source, sentences=sentences)

    def _fit_scores(
        self, question: str, question_words: set[str], sources: Sequence[Source]
    ) -> tuple[list[int], np.ndarray]:
        """How well each source fits ``question``: how many of its words the title and abstract
        hold, and how close they are to it in meaning."""
        texts = []
        for src in sources:
            abstract = self.abstracts.get(src.paper_id) if self.abstracts is not None else None
            texts.append(f"{src.title}. {abstract or src.text}")
        coverage = [len(question_words & content_words(t)) for t in texts]
        sims = self.embedder.embed(texts) @ self.embedder.embed([question])[0]
        return coverage, sims

    def _fits(self, question: str, question_words: set[str], sources: Sequence[Source]) -> dict[int, bool]:
        """Which sources fit ``question`` best: the one whose title and abstract hold most of the
        question's words, and the one closest to it in meaning (ties count for each)."""
        coverage, sims = self._fit_scores(question, question_words, sources)
        return {
            src.n: coverage[i] >= max(coverage) or float(sims[i]) >= float(np.max(sims)) - 1e-6
            for i, src in enumerate(sources)
        }

    def best_fit(self, question: str, sources: Sequence[Source]) -> int | None:
        """The number of the one source that fits a "which paper" question best by both measures
        (it alone holds most of the question's words, and it is the closest in meaning), else None.

        Where the two agree, that paper was the one asked for on every such question of the read
        splits (33 of 33), the model's pick only 28 times, and no question about an absent topic
        had such a paper; where they disagree, neither is a safe pick."""
        if len(sources) < 2:
            return None
        coverage, sims = self._fit_scores(question, content_words(question), sources)
        top = max(coverage)
        best = int(np.argmax(sims))
        if coverage.count(top) > 1 or coverage[best] != top:
            return None
        return sources[best].n

    def check(
        self,
        claim: str,
        claim_vector: np.ndarray,
        sources: Sequence[Source],
        *,
        question_words: set[str] | frozenset[str] = frozenset(),
        keep_title: bool = False,
    ) -> SupportCheck:
        """Support of ``claim`` by ``sources`` (one paper, or several only when the claim names each).

        Every number (in the same context) and every name must occur in the evidence, the claim
        must say something beyond the question and the paper's title, and those new words must be
        found in the evidence (``min_overlap`` of them), or the claim must be close to an evidence
        sentence (``min_similarity``) with at least a third of them found.
        """
        texts = [s.title for s in sources] + [sent.text for s in sources for sent in s.sentences]
        evidence = " ".join(texts)
        claim_numbers = numbers_in(claim)
        scaled = scaled_values(claim)
        claim_words = {w for w in content_words(claim) if not w[0].isdigit() and w not in _SCALE}
        stated_in = evidence_numbers(evidence)
        missing = {v for v in claim_numbers if not stated(v, scaled, stated_in)}
        # A number must also stand in the same context: "2 billion parameters" is not backed by
        # "a 2 billion example dataset". The context is the sentence holding the number plus its
        # paper's title, which names the topic a sentence leaves implicit ("ResNet achieves
        # 99.70% specificity" in a paper titled "... real-bogus classification ...").
        holders_of = [(s.title, s.title) for s in sources] + [
            (sent.text, s.title) for s in sources for sent in s.sentences
        ]
        for value, context in number_contexts(claim).items():
            if value in missing or not context:
                continue
            holders = [
                (content_words(t), content_words(title))
                for t, title in holders_of
                if stated(value, scaled, evidence_numbers(t))
            ]
            # ... or the sentence holding it (without its title) says most of what the claim says,
            # leaving the noun implicit ("train a ResNet-50 to 75% in 20 mins" backs "75%
            # accuracy ... 20 minutes").
            if not any(
                context & (own | title) or len(claim_words & own) >= 0.5 * len(claim_words) for own, title in holders
            ):
                missing.add(value)
        missing_numbers = tuple(sorted(_fmt(x) for x in missing))
        # ... and belong to what the claim says: not a number a "respectively" list gives to another item.
        wrong_items = tuple(
            f"{_fmt(value)} to {owner}"
            for value in sorted(claim_numbers - missing)
            if (
                owner := misattached(
                    claim, value, [t for t, _ in holders_of if stated(value, scaled, evidence_numbers(t))]
                )
            )
        )
        tokens = evidence_tokens(evidence)
        missing_names = tuple(sorted(norm_name(n) for n in missing_names_of(claim, tokens)))
        sims = self.embedder.embed(texts) @ claim_vector
        # Show a sentence as the support where there is one; titles only back names and topics.
        n_titles = len(sources)
        best = (
            n_titles
            + _shown_support(
                # a number of the title names the paper ("8-Calves"); it measures nothing
                claim_numbers - {x for s in sources for x in numbers_in(s.title)},
                claim_words,
                texts[n_titles:],
                sims[n_titles:],
            )
            if len(texts) > n_titles
            else int(np.argmax(sims))
        )
        novel = novel_words(claim, set(question_words), " ".join(s.title for s in sources), keep_title=keep_title)
        restates = not novel and not claim_numbers
        found = novel & content_words(evidence)
        overlap = len(found) / len(novel) if novel else (1.0 if claim_numbers else 0.0)
        similarity = float(np.max(sims))
        supported = (
            not restates
            and not missing_numbers
            and not missing_names
            and not wrong_items
            and (overlap >= self.min_overlap or (similarity >= self.min_similarity and overlap >= MIN_COVERAGE))
        )
        return SupportCheck(
            sources[0].n if len(sources) == 1 else 0,
            similarity,
            overlap,
            missing_numbers,
            missing_names,
            supported,
            texts[best],
            restates,
            wrong_items,
        )

    def _clauses_backed(
        self, body: str, cited: Sequence[Source], question_words: set[str], keep_title: bool
    ) -> dict[int, str] | None:
        """For a claim citing several papers that none backs alone: its clauses ("A does X while B
        does Y") each backed by one cited paper, and each cited paper backing one clause. Returns
        the evidence per paper, or None."""
        clauses = [c for c in _CLAUSE.split(body) if content_words(c)]
        if len(clauses) < 2:
            return None
        vectors = self.embedder.embed(clauses)
        evidence: dict[int, str] = {}
        for clause, vector in zip(clauses, vectors, strict=True):
            backing = [
                (s.n, c)
                for s in cited
                if (
                    c := self.check(clause, vector, [s], question_words=question_words, keep_title=keep_title)
                ).supported
            ]
            if not backing:
                return None
            n, check = max(backing, key=lambda b: b[1].strength)
            evidence.setdefault(n, check.best_sentence)
        return evidence if set(evidence) == {s.n for s in cited} else None

    def _counts_something_else(
        self, claim: str, question: str, counting: str, counting_vector: np.ndarray | None
    ) -> str | None:
        """Why the claim's numbers count something other than what "how many ..." asks, or None.

        Only numbers the question does not itself state, each read with the noun after it in the
        claim; a number with no noun after it, or one noun near what is counted, passes."""
        if not counting or counting_vector is None:
            return None
        asked = {stem(w) for w in words(counting) if w.lower() not in STOPWORDS}
        contexts = {v: c for v, c in number_contexts(claim).items() if v not in numbers_in(question)}
        if not contexts or any(not c or c & asked for c in contexts.values()):
            return None
        nouns = _number_nouns(claim)
        if not nouns:
            return None
        sims = self.embedder.embed(nouns) @ counting_vector
        if float(np.max(sims)) >= MIN_COUNTED_SIMILARITY:
            return None
        return f"{COUNTS_ELSE} {nouns[0]}, not the {counting} the question asks about"

    def verify(
        self,
        raw_text: str,
        sources: Sequence[Source],
        *,
        strict: bool = False,
        question: str = "",
        form: str = "fact",
    ) -> Verified:
        """Verify, repair and renumber the citations of a model's answer.

        Each claim is checked against the one paper it cites (a claim citing two papers must hold
        for each); a supporting paper the model forgot to cite is attached; a claim that only
        restates ``question`` is "no answer", never supported. ``form`` "which-paper": the
        paper's title counts as an answer (it is what was asked).
        """
        by_n = {s.n: s for s in sources}
        question_words = content_words(question)
        keep_title = form == "which-paper"
        counting = counted(question)
        counting_vector = self.embedder.embed([counting])[0] if counting else None
        miscounts: dict[int, str] = {}  # row -> why its numbers count something else
        counted_answered = False
        parsed = split_answer(raw_text)
        invalid = 0
        said_cannot = False
        rows: list[tuple[str, list[int], bool, bool, list[str], dict[int, str], str]] = []
        claims = supported_claims = 0
        dropped: list[str] = []
        fits: dict[int, bool] = {}  # "which paper": the sources that fit the question best
        for body, cited in parsed:
            valid = [n for n in cited if n in by_n]
            invalid += len(cited) - len(valid)
            issues = [f"[{n}] is not a source" for n in cited if n not in by_n]
            if is_refusal(body):
                said_cannot = True
                dropped.append(body)
                continue
            if not content_words(body):
                continue  # "Sure." and the like carry no claim
            claims += 1
            vector = self.embedder.embed([body])[0]

            def check(source: Source, body: str = body, vector: np.ndarray = vector) -> SupportCheck:
                return self.check(body, vector, [source], question_words=question_words, keep_title=keep_title)

            checks = {s.n: check(s) for s in sources}
            if all(c.restates for c in checks.values()):
                issues.append(next(iter(checks.values())).reason())
                verdict = "no-answer"
                if strict:
                    dropped.append(body)
                    continue
                rows.append((body, [], False, False, issues, {}, verdict))
                continue
            kept = [n for n in valid if checks[n].supported]
            evidence_of = {n: checks[n].best_sentence for n in kept}
            repaired = False
            # The cited paper may still say it, in a sentence the model was not shown.
            for n in valid:
                if n in kept:
                    continue
                whole = self.whole(by_n[n])
                whole_check = check(whole) if whole is not None else None
                if whole_check is not None and whole_check.supported:
                    kept.append(n)
                    evidence_of[n] = whole_check.best_sentence
                else:
                    issues.append(checks[n].reason())
            kept = [n for n in valid if n in kept]
            # A claim that only names a paper ("The paper that <the question's words> is “X”")
            # is right only if X is the paper the question describes: nothing else in it is checked.
            misnamed = []
            for n in kept:
                if names_only(body, by_n[n], question_words, keep_title):
                    fits = fits or self._fits(question, question_words, sources)
                    if not fits[n]:
                        misnamed.append(n)
            if misnamed:
                kept = [n for n in kept if n not in misnamed]
                issues.extend(f"[{n}] is named, but another source fits the question better" for n in misnamed)
            if len(kept) < len(valid) and len(valid) > 1 and not misnamed:
                split = self._clauses_backed(body, [by_n[n] for n in valid], question_words, keep_title)
                if split is not None:  # each part holds for the paper it names
                    kept, evidence_of = list(valid), split
                    issues = [i for i in issues if not i.startswith(tuple(f"[{n}]" for n in valid))]
            if not kept and not misnamed:
                candidates = [c for c in checks.values() if c.supported]
                if candidates:
                    best = max(candidates, key=lambda c: c.strength)
                    kept, repaired = [best.n], True
                    evidence_of = {best.n: best.best_sentence}
                    issues.append(f"cited {valid or 'nothing'}; the evidence is in [{best.n}]")
            elif len(kept) < len(valid):
                repaired = True
            if not kept and not valid and sources:
                best = max(checks.values(), key=lambda c: c.strength)
                issues.append(best.reason())
            if kept and counting:
                miscounted = self._counts_something_else(body, question, counting, counting_vector)
                if miscounted:
                    miscounts[len(rows)] = miscounted
                elif gives_count(body, question):
                    counted_answered = True
            supported = bool(kept)
            supported_claims += supported
            if not supported and strict:
                dropped.append(body)
                continue
            rows.append(
                (body, kept, supported, repaired, issues, evidence_of, "supported" if supported else "unsupported")
            )

        if counting and not counted_answered:
            # Nothing says how many of what was asked: a true number of something else, or true
            # sentences with no number at all, are no answer ("The S2S dataset contains crystal
            # structures [1]" for "how many crystal structures"); more sentences with other facts
            # are fine once one sentence gives the count.
            for i, row in enumerate(rows):
                if row[2] and i not in miscounts:
                    miscounts[i] = f"{NO_COUNT} {counting}"
            for i, reason in miscounts.items():
                body, _, _, _, issues, _, _ = rows[i]
                rows[i] = (body, [], False, False, [*issues, reason], {}, "unsupported")
                supported_claims -= 1
            if strict:
                dropped.extend(rows[i][0] for i in miscounts)
                rows = [r for i, r in enumerate(rows) if i not in miscounts]
        mapping = renumber(r[1] for r in rows if r[2])
        sentences: list[AnswerSentence] = []
        rendered: list[str] = []
        evidence: dict[int, list[str]] = {}
        strength: dict[int, float] = {}
        for body, kept, supported, repaired, issues, evidence_of, verdict in rows:
            final = [mapping[n] for n in kept]
            for n in kept:
                evidence.setdefault(n, [])
                if evidence_of[n] not in evidence[n]:
                    evidence[n].append(evidence_of[n])
            rendered.append(render_sentence(body, final, unsupported=not supported))
            sentences.append(
                AnswerSentence(
                    text=body,
                    citations=tuple(final),
                    supported=supported,
                    repaired=repaired,
                    issues=tuple(issues),
                    shown=rendered[-1],
                    verdict=verdict,
                )
            )
        citations = []
        for old, new in sorted(mapping.items(), key=lambda kv: kv[1]):
            src = by_n[old]
            citations.append(
                Citation(
                    n=new,
                    paper_id=src.paper_id,
                    title=src.title,
                    files=src.files,
                    evidence=tuple(evidence.get(old, ())),
                    score=src.retrieval_score,
                    prompt_n=old,
                )
            )
            strength[new] = src.retrieval_score
        return Verified(
            text=" ".join(rendered),
            sentences=tuple(sentences),
            citations=tuple(citations),
            invalid_citations=invalid,
            said_cannot_answer=said_cannot,
            claims=claims,
            supported_claims=supported_claims,
            dropped=tuple(dropped),
        )


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)

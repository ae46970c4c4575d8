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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from rag.citations import render_sentence, renumber, split_answer
from rag.evidence import STOPWORDS, CachedEmbedder, addresses_the_model, content_words, stem, words
from rag.text import sentence_spans
from rag.types import AnswerSentence, Citation, EvidenceSentence, Source

_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\w])|(?<![\w.])(\d+)(?:\.(\d+))?(?=[%xX×])")
_TOKEN = re.compile(r"[^\s]+")
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


MIN_OVERLAP_WORDS = 2


def is_refusal(sentence: str) -> bool:
    """True for a sentence saying the sources do not answer (in any of the usual wordings)."""
    return bool(_REFUSAL.search(sentence))


def numbers_in(text: str) -> set[float]:
    """Numbers written in ``text`` as values (1,000 -> 1000.0; 15% -> 15.0)."""
    out: set[float] = set()
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


def number_contexts(text: str) -> dict[float, set[str]]:
    """For each number, the (stemmed) content words right after it: "2 billion parameters" ->
    {2.0: {"parameter"}}. Scale words (billion, %, times) are skipped over."""
    out: dict[float, set[str]] = {}
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
            context.append(stem(w))
            if len(context) == 2:
                break
        for v in values:
            out.setdefault(v, set()).update(context)
    return out


def norm_name(token: str) -> str:
    token = re.sub(r"['’]s$", "", token)
    return re.sub(r"[^0-9a-z]", "", token.lower())


def names_in(sentence: str) -> set[str]:
    """Names a claim depends on: acronyms, CamelCase, letter-digit tokens, capitalised words
    not at the start of the sentence. Returned normalised (lower case, letters and digits)."""
    out: set[str] = set()
    starts = True  # at the start of a sentence, where any word is capitalised
    for raw in _TOKEN.findall(sentence):
        token = raw.strip("\"'()[]{}.,;:!?“”‘’")
        at_start = starts
        if any(c.isalpha() for c in raw):  # emoji and numbers do not start the sentence
            starts = False
        if raw.rstrip("\"')]}”’").endswith((".", "!", "?")):
            starts = True
        if len(token) < 2:
            continue
        letters = re.sub(r"[^A-Za-z]", "", token)
        has_digit = any(c.isdigit() for c in token)
        inner_upper = any(c.isupper() for c in token[1:])
        capitalised = token[0].isupper() and not at_start and token.lower() not in _COMMON_CAPS
        if (letters and has_digit) or inner_upper or capitalised:
            norm = norm_name(token)
            if norm and not norm.isdigit():
                out.add(norm)
    return out


def evidence_tokens(text: str) -> set[str]:
    """Normalised tokens of the evidence, their hyphen parts, and adjacent pairs joined
    (so 'ResNet-50', 'ResNet 50' and 'ResNet50' all match)."""
    raw = [t.strip("\"'()[]{}.,;:!?“”‘’") for t in _TOKEN.findall(text)]
    tokens: set[str] = set()
    norms = [norm_name(t) for t in raw]
    for t, n in zip(raw, norms, strict=True):
        tokens.add(n)
        tokens.update(norm_name(p) for p in re.split(r"[-/]", t))
    tokens.update(a + b for a, b in zip(norms, norms[1:], strict=False))
    tokens.discard("")
    return tokens


def name_found(name: str, tokens: set[str]) -> bool:
    return (
        name in tokens
        or name.rstrip("s") in tokens
        or name + "s" in tokens
        or (name.endswith("s") and name[:-1] + "es" in tokens)
    )


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

    @property
    def strength(self) -> float:
        return self.similarity + self.overlap

    def reason(self) -> str:
        if self.missing_numbers:
            return f"[{self.n}] does not contain {', '.join(self.missing_numbers)}"
        if self.missing_names:
            return f"[{self.n}] does not mention {', '.join(self.missing_names)}"
        return f"[{self.n}] is too different (similarity {self.similarity:.2f}, word overlap {self.overlap:.2f})"


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

    def check(self, claim: str, claim_vector: np.ndarray, sources: Sequence[Source]) -> SupportCheck:
        """Support of ``claim`` by the union of ``sources`` (usually one)."""
        texts = [s.title for s in sources] + [sent.text for s in sources for sent in s.sentences]
        evidence = " ".join(texts)
        claim_numbers = numbers_in(claim)
        missing = claim_numbers - numbers_in(evidence)
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
            holders = [content_words(t) | content_words(title) for t, title in holders_of if value in numbers_in(t)]
            if not any(context & words for words in holders):
                missing.add(value)
        missing_numbers = tuple(sorted(_fmt(x) for x in missing))
        tokens = evidence_tokens(evidence)
        missing_names = tuple(sorted(n for n in names_in(claim) if not name_found(n, tokens)))
        sims = self.embedder.embed(texts) @ claim_vector
        # Show a sentence as the support where there is one; titles only back names and topics.
        n_titles = len(sources)
        best = n_titles + int(np.argmax(sims[n_titles:])) if len(texts) > n_titles else int(np.argmax(sims))
        words = content_words(claim)
        # Overlap needs a claim of some substance: "The answer is 42" shares its one content
        # word with almost anything.
        shared = words & content_words(evidence)
        overlap = len(shared) / len(words) if len(words) >= MIN_OVERLAP_WORDS else 0.0
        similarity = float(np.max(sims))
        supported = (
            not missing_numbers
            and not missing_names
            and (similarity >= self.min_similarity or overlap >= self.min_overlap)
        )
        return SupportCheck(
            sources[0].n if len(sources) == 1 else 0,
            similarity,
            overlap,
            missing_numbers,
            missing_names,
            supported,
            texts[best],
        )

    def verify(self, raw_text: str, sources: Sequence[Source], *, strict: bool = False) -> Verified:
        """Verify, repair and renumber the citations of a model's answer."""
        by_n = {s.n: s for s in sources}
        parsed = split_answer(raw_text)
        invalid = 0
        said_cannot = False
        rows: list[tuple[str, list[int], bool, bool, list[str], dict[int, str]]] = []
        claims = supported_claims = 0
        dropped: list[str] = []
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
            checks = {s.n: self.check(body, vector, [s]) for s in sources}
            kept = [n for n in valid if checks[n].supported]
            evidence_of = {n: checks[n].best_sentence for n in kept}
            repaired = kept != valid
            if not kept and len(valid) > 1:
                union = self.check(body, vector, [by_n[n] for n in valid])
                if union.supported:
                    kept, repaired = list(valid), False
                    evidence_of = {n: checks[n].best_sentence for n in valid}
            if not kept:  # the cited paper may still say it, in a sentence the model was not shown
                for n in valid:
                    whole = self.whole(by_n[n])
                    check = self.check(body, vector, [whole]) if whole is not None else None
                    if check is not None and check.supported:
                        kept.append(n)
                        evidence_of[n] = check.best_sentence
            if not kept:
                candidates = [c for c in checks.values() if c.supported]
                if candidates:
                    best = max(candidates, key=lambda c: c.strength)
                    kept, repaired = [best.n], True
                    evidence_of = {best.n: best.best_sentence}
                    issues.append(f"cited {valid or 'nothing'}; the evidence is in [{best.n}]")
            for n in valid:
                if n not in kept:
                    issues.append(checks[n].reason())
            if not kept and not valid and sources:
                best = max(checks.values(), key=lambda c: c.strength)
                issues.append(best.reason())
            supported = bool(kept)
            supported_claims += supported
            if not supported and strict:
                dropped.append(body)
                continue
            rows.append((body, kept, supported, repaired, issues, evidence_of))

        mapping = renumber(r[1] for r in rows if r[2])
        sentences: list[AnswerSentence] = []
        rendered: list[str] = []
        evidence: dict[int, list[str]] = {}
        strength: dict[int, float] = {}
        for body, kept, supported, repaired, issues, evidence_of in rows:
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
                    sources=src.files,
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

"""Small text helpers shared by the build and the answer pipeline.

Title normalisation and paper ids live here (not in ``index_build``) because the answer and
eval stages need the same ids for gold titles that the build gave the papers.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_SPACES = re.compile(r"\s+")


def clean_whitespace(text: str) -> str:
    """Collapse runs of whitespace (tabs, CR, non-breaking spaces) into single spaces."""
    return _SPACES.sub(" ", text.replace("\u00a0", " ")).strip()


def normalize_title(title: str) -> str:
    """Title key used for de-duplication: NFKC, case-folded, punctuation removed."""
    folded = unicodedata.normalize("NFKC", title).casefold()
    return _NON_WORD.sub(" ", folded).strip()


def paper_id_for(title: str) -> str:
    """A short, readable, stable id: a slug of the first title words plus a hash suffix.

    The hash covers the whole normalised title, so two titles sharing their first words
    still get different ids.
    """
    norm = normalize_title(title)
    if not norm:
        raise ValueError(f"cannot derive a paper id from an empty title: {title!r}")
    ascii_slug = unicodedata.normalize("NFKD", norm).encode("ascii", "ignore").decode()
    words = [w for w in ascii_slug.split() if w][:6]
    slug = "-".join(words)[:48].strip("-") or "paper"
    digest = hashlib.sha1(norm.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}"


def content_hash(*parts: str) -> str:
    """sha256 over the parts, separated unambiguously; used for caches and manifests."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


# Abbreviations of scientific prose that end in a period without ending the sentence, added to
# punkt's trained English list (which misses "et al.", "Fig.", "e.g.", "Sec.", "Tab."; "et" for the
# "et. al." that abstracts and models write).
_ABBREVIATIONS = frozenset(
    "et al fig figs e.g i.e sec secs eq eqs vs cf approx resp tab tabs ref refs no nos etc viz w.r.t c.f ca pp ch app dist".split()
)


def _nltk_data() -> None:
    # llama-index ships nltk's punkt data; pointing nltk at that bundled copy means no download.
    from llama_index.core.utils import globals_helper

    globals_helper.wait_for_nltk_check()


@lru_cache(maxsize=1)
def _splitter_punkt():  # type: ignore[no-untyped-def]
    """The untrained punkt that llama-index's ``SentenceSplitter`` uses (chunk boundaries)."""
    from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer

    split_by_sentence_tokenizer()
    import nltk

    return nltk.tokenize.PunktSentenceTokenizer()


@lru_cache(maxsize=1)
def _trained_punkt():  # type: ignore[no-untyped-def]
    """nltk's punkt trained on English, plus the abbreviations of papers."""
    _nltk_data()
    import nltk

    tokenizer = nltk.tokenize.PunktTokenizer("english")
    tokenizer._params.abbrev_types.update(_ABBREVIATIONS)
    return tokenizer


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the sentences of ``text``, in order.

    Uses punkt trained on English with the abbreviations of scientific prose, so "et al.",
    "e.g." and "Fig. 3" do not end a sentence (the evidence the model reads and the sentences of
    its answers are real sentences).
    """
    if not text.strip():
        return []
    return [(int(a), int(b)) for a, b in _trained_punkt().span_tokenize(text)]


def splitter_sentence_spans(text: str) -> list[tuple[int, int]]:
    """Sentence offsets as llama-index's ``SentenceSplitter`` sees them (untrained punkt), so that
    the sentences recorded with a chunk agree with the chunk's boundaries."""
    if not text.strip():
        return []
    return [(int(a), int(b)) for a, b in _splitter_punkt().span_tokenize(text)]

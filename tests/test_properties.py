"""Property-based tests: the corpus parser, the citation parser and the sentence splitter
never raise on arbitrary text, never lose an entry silently, and keep their offsets true."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from index_build.chunking import Chunker
from index_build.corpus import Problem, read_corpus
from rag.citations import find_citations, render_sentence, renumber, split_answer, strip_citations
from rag.errors import CorpusError
from rag.models import HashEmbedder
from rag.text import clean_whitespace, sentence_spans
from rag.types import Paper

# Each example writes a file; keep the runs short and free of the function-scoped-fixture check.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_WORD = st.builds(
    lambda head, tail: head + tail,
    st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=6),
    st.text(alphabet=string.ascii_letters + string.digits + "-", max_size=5),
)


def _sentence(min_words: int, max_words: int) -> st.SearchStrategy[str]:
    return st.lists(_WORD, min_size=min_words, max_size=max_words).map(lambda w: " ".join(w).capitalize() + ".")


TITLE = st.lists(_WORD, min_size=2, max_size=12).map(lambda w: " ".join(w).title())
# Listing abstracts are recognised as prose: at least 25 words (corpus.ABSTRACT_MIN_WORDS).
ABSTRACT = st.lists(_sentence(9, 14), min_size=3, max_size=6).map(" ".join)
FURNITURE = st.sampled_from(["", "   ", "Subscribe", "new", "Daily Papers", "Jun 6", "Mar 12, 2024"])


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    for old in corpus.iterdir():
        old.unlink()
    path = corpus / name
    path.write_bytes(data)
    return path


def _read_or_error(path: Path) -> tuple[list[Paper], tuple[Problem, ...]]:
    try:
        papers, report = read_corpus([path])
    except CorpusError as exc:  # the one error the parser may raise: "nothing usable", named
        assert str(path.parent) in str(exc) or path.name in str(exc) or "corpus is empty" in str(exc)
        return [], ()
    return papers, report.problems


# -- corpus parser ------------------------------------------------------------------------------
@FAST
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".txt", ".jsonl", ".csv", ".json", ".bib", ".ris"]))
def test_parser_survives_arbitrary_bytes(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = _write(tmp_path, "x" + suffix, data)
    papers, problems = _read_or_error(path)
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    for problem in problems:
        assert problem.file == path.name and 1 <= problem.line <= max(len(lines), 1)
    for paper in papers:
        assert paper.title and paper.abstract
        assert paper.sources[0].file == path.name


@FAST
@given(text=st.text(max_size=1500), suffix=st.sampled_from([".txt", ".jsonl", ".csv", ".json", ".bib", ".ris"]))
def test_parser_survives_arbitrary_text(tmp_path: Path, text: str, suffix: str) -> None:
    path = _write(tmp_path, "x" + suffix, text.encode("utf-8", "surrogatepass"))
    papers, problems = _read_or_error(path)
    for paper in papers:
        assert paper.title == clean_whitespace(paper.title) and paper.abstract


@st.composite
def listings(draw: st.DrawFn) -> tuple[str, list[tuple[str, str | None]]]:
    """A listing page: entries (title, abstract or None for a lost abstract) among page furniture."""
    titles = draw(st.lists(TITLE, min_size=1, max_size=8, unique_by=lambda t: t.casefold()))
    entries = [(t, draw(st.one_of(ABSTRACT, st.none()) if i % 3 == 2 else ABSTRACT)) for i, t in enumerate(titles)]
    lines: list[str] = []
    for title, abstract in entries:
        lines += draw(st.lists(FURNITURE, max_size=2))
        lines.append(title)
        lines += draw(st.lists(FURNITURE, max_size=2))
        if abstract is not None:
            lines.append(abstract)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + draw(st.sampled_from(["", newline])), entries


@FAST
@given(listing=listings())
def test_listing_parser_recovers_every_entry_and_reports_every_loss(
    tmp_path: Path, listing: tuple[str, list[tuple[str, str | None]]]
) -> None:
    text, entries = listing
    assume(any(abstract for _, abstract in entries))
    path = _write(tmp_path, "page.txt", text.encode())
    papers, report = read_corpus([path])
    assert [(p.title, p.abstract) for p in papers] == [(t, a) for t, a in entries if a is not None]
    lost = [t for t, a in entries if a is None]
    assert len(report.problems) == len(lost)
    for title, problem in zip(lost, report.problems, strict=True):
        assert title in problem.message and "no abstract" in problem.message
    lines = text.replace("\r\n", "\n").split("\n")
    for paper in papers:  # the reported line really holds the title
        assert lines[paper.sources[0].line - 1] == paper.title


@FAST
@given(
    records=st.lists(
        st.one_of(
            st.fixed_dictionaries({"title": TITLE, "abstract": ABSTRACT}),
            st.dictionaries(st.sampled_from(["title", "abstract", "id", "year"]), st.text(max_size=20)),
            st.text(max_size=30),  # a broken line
        ),
        min_size=1,
        max_size=10,
    )
)
def test_jsonl_each_line_is_a_paper_a_duplicate_or_a_problem(tmp_path: Path, records: list[object]) -> None:
    lines = [json.dumps(r) if isinstance(r, dict) else r.replace("\n", " ") for r in records]
    path = _write(tmp_path, "p.jsonl", "\n".join(lines).encode())
    try:
        papers, report = read_corpus([path])
    except CorpusError:
        return  # nothing usable: named in the message (checked elsewhere)
    accounted = {s.line for p in papers for s in p.sources} | {p.line for p in report.problems}
    for number, line in enumerate(lines, 1):
        if line.strip():
            assert number in accounted, f"line {number} vanished: {line!r}"


# -- citations ----------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(list("ab .[]-,0123456789?!\n") + ["Source ", "and ", "[1]", "[2, 3]"]), max_size=80
    ).map("".join)
)
def test_citation_parsing_never_raises(text: str) -> None:
    for body, numbers in split_answer(text):
        assert body and body == body.strip()
        assert not find_citations(body), f"a marker survived in {body!r}"
        assert all(isinstance(n, int) and n >= 0 for n in numbers)
        assert len(numbers) == len(set(numbers))
    assert strip_citations(text) == strip_citations(strip_citations(text))


@settings(max_examples=300, deadline=None)
@given(lists=st.lists(st.lists(st.integers(min_value=0, max_value=10_000), max_size=6), max_size=8))
def test_renumbering_is_a_bijection_onto_one_to_n(lists: list[list[int]]) -> None:
    mapping = renumber(lists)
    used = list(dict.fromkeys(n for nums in lists for n in nums))
    assert list(mapping) == used  # every old number, in order of first use
    assert sorted(mapping.values()) == list(range(1, len(used) + 1))  # onto 1..n, no repeats


@settings(max_examples=200, deadline=None)
@given(
    body=_sentence(2, 10),
    cited=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=4, unique=True),
)
def test_rendered_sentence_parses_back(body: str, cited: list[int]) -> None:
    assert split_answer(render_sentence(body, cited)) == [(body, cited)]


# -- sentence splitter and chunker --------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=600))
def test_sentence_spans_map_into_the_text(text: str) -> None:
    spans = sentence_spans(text)
    previous_end = 0
    for start, end in spans:
        assert previous_end <= start < end <= len(text)
        assert text[start:end].strip()
        previous_end = end
    covered = "".join(text[a:b] for a, b in spans)
    assert "".join(covered.split()) == "".join(text.split())  # no visible character is lost


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    return Chunker(HashEmbedder(max_tokens=40))


@FAST
@given(
    abstract=st.lists(
        st.one_of(_sentence(1, 30), st.text(alphabet=string.printable, min_size=1, max_size=80)),
        min_size=1,
        max_size=12,
    ).map(lambda parts: clean_whitespace(" ".join(parts)))
)
def test_chunks_map_back_into_the_abstract(chunker: Chunker, abstract: str) -> None:
    assume(abstract)
    paper = Paper(paper_id="p", title="A Title", abstract=abstract, sources=())
    chunks = chunker.chunk(paper)
    assert chunks
    for chunk in chunks:
        assert abstract[chunk.start : chunk.end] == chunk.text
        for a, b in chunk.sentences:
            assert chunk.start <= a < b <= chunk.end
    covered = set().union(*(range(c.start, c.end) for c in chunks))
    lost = [i for i, ch in enumerate(abstract) if not ch.isspace() and i not in covered]
    assert not lost, f"characters at {lost[:5]} are in no chunk"

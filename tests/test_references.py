"""References (display, links, JSON), metadata filters in retrieval, and export to
BibTeX / RIS / CSL-JSON."""

from __future__ import annotations

import json
from pathlib import Path

import bibtexparser
import pytest

import index_build.build
import rag.models
import rag.store
from index_build.corpus import read_corpus
from rag.cli import main
from rag.errors import FilterError
from rag.filters import PaperFilter, parse_year_range
from rag.models import HashEmbedder
from rag.references import (
    answer_to_dict,
    citation_keys,
    display_name,
    family_name,
    reference_link,
    reference_text,
    short_authors,
    to_bibtex,
    to_csl_json,
    to_ris,
)
from rag.retrieve import Retriever
from rag.types import Answer, AnswerSentence, Citation, Paper, RetrievedPaper, SourceRef
from ui.format import answer_markdown, evidence_html, plain_text

REF_FILES = ("refs.bib", "refs.ris", "refs.json", "arxiv_sample.jsonl", "listing_plain.txt")

ETN = Paper(
    paper_id="etn",
    title="Equivariant Transformer Networks",
    abstract="We propose Equivariant Transformers.",
    sources=(SourceRef("refs.bib", 6),),
    authors=("Tai, Kai Sheng", "Bailis, Peter", "Valiant, Gregory"),
    year=2019,
    venue="ICML",
    arxiv_id="1901.11399",
)
BARE = Paper("bare", "Quantum Widgets", "We introduce quantum widgets.", (SourceRef("listing.txt", 3),))


def test_names() -> None:
    assert family_name("Tai, Kai Sheng") == "Tai" and display_name("Tai, Kai Sheng") == "Kai Sheng Tai"
    assert family_name("Jan de Vries") == "de Vries" and family_name("A. Sun") == "Sun"
    assert family_name("{Ocean Acoustics Consortium}") == "Ocean Acoustics Consortium"
    assert display_name("von Neumann, Jr, John") == "John von Neumann Jr"
    assert short_authors(["Tai, K."]) == "Tai"
    assert short_authors(["Tai, K.", "Bailis, P."]) == "Tai and Bailis"
    assert short_authors(ETN.authors) == "Tai et al." and short_authors([]) is None


def test_reference_text_and_link() -> None:
    assert reference_text(ETN) == "Tai et al. (2019). Equivariant Transformer Networks. ICML."
    assert reference_link(ETN) == "https://arxiv.org/abs/1901.11399"
    doi = Paper("d", "A Title?", "x", doi="10.1/abc", year=2020, arxiv_id="2001.00001")
    assert (
        reference_text(doi) == "A Title? (2020). arXiv:2001.00001."
        and reference_link(doi) == "https://doi.org/10.1/abc"
    )
    assert reference_text(BARE) == "Quantum Widgets (listing.txt)" and reference_link(BARE) is None


def make_answer() -> Answer:
    retrieved = (
        RetrievedPaper("etn", ETN.title, 0.03, 0.7, files=("refs.bib",)),
        RetrievedPaper("bare", BARE.title, 0.02, 0.5, files=("listing.txt",)),
    )
    return Answer(
        question="q",
        text="ETs help [1]. Widgets exist [2].",
        raw_text="ETs help [1]. Widgets exist [2].",
        citations=(
            Citation(1, "etn", ETN.title, ("refs.bib",), ("We propose Equivariant Transformers.",), 0.7, 1),
            Citation(2, "bare", BARE.title, ("listing.txt",), ("We introduce quantum widgets.",), 0.5, 2),
        ),
        sentences=(AnswerSentence("ETs help.", (1,), True), AnswerSentence("Widgets exist.", (2,), True)),
        refused=False,
        retrieved=retrieved,
    )


def test_references_in_the_answer_json_chat_and_evidence() -> None:
    papers = {"etn": ETN, "bare": BARE}
    answer = make_answer()
    data = answer_to_dict(answer, papers)
    assert data["citations"][0]["reference"]["text"] == "Tai et al. (2019). Equivariant Transformer Networks. ICML."
    assert data["citations"][0]["reference"]["link"] == "https://arxiv.org/abs/1901.11399"
    assert data["citations"][1]["reference"]["text"] == "Quantum Widgets (listing.txt)"
    assert data["retrieved"][0]["reference"]["arxiv_id"] == "1901.11399"

    md = answer_markdown(answer, papers)
    assert "Tai et al\\. \\(2019\\)\\. Equivariant Transformer Networks\\. ICML\\." in md
    assert "(https://arxiv.org/abs/1901.11399)" in md
    assert "**Quantum Widgets** <sub>(listing\\.txt)</sub>" in md  # nothing better known
    copy = plain_text(answer, papers)
    assert "[1] Tai et al. (2019). Equivariant Transformer Networks. ICML. https://arxiv.org/abs/1901.11399" in copy
    html = evidence_html((), answer.retrieved, answer, papers)
    assert 'href="https://arxiv.org/abs/1901.11399"' in html and "Tai et al. (2019)" in html
    assert '<div class="ev-files">listing.txt</div>' in html


def test_untrusted_urls_are_not_linked() -> None:
    evil = Paper("e", "T", "x", authors=("A. B",), url="javascript:alert(1)")
    odd = Paper("o", "T", "x", authors=("A. B",), url='https://x.org/a")<script>')
    md = answer_markdown(
        Answer("q", "x [1].", "x [1].", (Citation(1, "e", "T", (), (), 0.5),), (), False, ()), {"e": evil}
    )
    assert "javascript" not in md.split("References")[1].split("(")[-1] and "](javascript" not in md
    html = evidence_html((), (RetrievedPaper("o", "T", 0.1, 0.1),), None, {"o": odd})
    assert "<script>" not in html and 'href="https://x.org/a%22%29%3Cscript%3E"' in html


# -- filters ------------------------------------------------------------------------------------
def test_year_ranges_and_bad_filters() -> None:
    assert parse_year_range("2019-2023") == (2019, 2023) and parse_year_range("2019-") == (2019, None)
    assert parse_year_range("-2023") == (None, 2023) and parse_year_range(2021) == (2021, 2021)
    assert parse_year_range("2020") == (2020, 2020) and parse_year_range([2019, None]) == (2019, None)
    for bad in ("soon", "2023-2019", (2019, "x"), True):
        with pytest.raises(FilterError, match="year"):
            parse_year_range(bad)
    with pytest.raises(FilterError, match="unknown filter.*'colour'"):
        PaperFilter.from_dict({"colour": "red"})
    with pytest.raises(FilterError, match="author"):
        PaperFilter.from_dict({"author": ""})


def test_filter_matching() -> None:
    spec = PaperFilter.from_dict({"author": "kai sheng TAI", "year": (2018, 2019)})
    assert spec.matches(ETN) and not spec.matches(BARE)
    assert PaperFilter.from_dict({"author": "K. Tai"}).matches(ETN)
    assert not PaperFilter.from_dict({"author": "Ta"}).matches(ETN)  # a word, not a substring
    muller = Paper("m", "T", "x", authors=("Müller, Jörg",), venue="Journal of Machine Learning Research")
    assert PaperFilter.from_dict({"author": "Muller", "venue": "machine learning"}).matches(muller)
    assert PaperFilter.from_dict({"source": "*.bib"}).matches(ETN)
    assert PaperFilter.from_dict({"source": ["x.ris", "listing.txt"]}).matches(BARE)


@pytest.fixture
def ref_index(tmp_path: Path, data_dir: Path):  # type: ignore[no-untyped-def]
    from index_build.build import build_index
    from rag.store import open_index

    embedder = HashEmbedder(dimension=64, max_tokens=256)
    corpus = [data_dir / name for name in REF_FILES]
    build_index({"corpus": corpus, "index_dir": tmp_path / "idx", "progress": False}, embedder=embedder)
    return open_index(tmp_path / "idx", embedder)


def test_filters_restrict_both_retrievers_before_fusion(ref_index) -> None:  # type: ignore[no-untyped-def]
    retriever = Retriever(ref_index, candidates=40)
    query = "neural networks learning representations"
    every = retriever.search(query, 20)
    recent = [ref_index.papers[h.paper_id] for h in every if (ref_index.papers[h.paper_id].year or 0) >= 2023]
    assert len(recent) < len(every)  # the unfiltered ranking mixes years
    for mode in ("hybrid", "dense", "bm25"):
        hits = retriever.search(query, 3, mode, filters={"year": (2023, None)})
        years = [ref_index.papers[h.paper_id].year for h in hits]
        assert hits and all(y is not None and y >= 2023 for y in years), (mode, years)
    # top-k is filled from matching papers, not thinned out of the unfiltered top-k
    assert len(retriever.search(query, 5, filters={"year": "2019-2024"})) == 5
    by_tai = retriever.search(query, 5, filters={"author": "Tai"})
    assert [h.title for h in by_tai] == ["Equivariant Transformer Networks"]
    ris = retriever.search(query, 10, filters={"source": "*.ris"})
    assert ris and all("refs.ris" in h.files for h in ris)
    with pytest.raises(
        FilterError, match=r"no paper in the index matches author 'Hinton' \(\d+ papers: \d+ with a year"
    ):
        retriever.search(query, 5, filters={"author": "Hinton"})


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_faiss_selector_path_agrees_with_the_exact_one(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, index_type: str
) -> None:
    from index_build.build import build_index
    from rag.store import open_index

    embedder = HashEmbedder(dimension=64, max_tokens=256)
    config = {"corpus": [data_dir / n for n in REF_FILES], "index_dir": tmp_path / "i", "index_type": index_type}
    build_index({**config, "progress": False}, embedder=embedder)
    index = open_index(tmp_path / "i", embedder)
    assert index.manifest["faiss"]["type"] == index_type
    allowed = Retriever(index).filtered_chunks({"year": (2019, 2023)})
    assert allowed
    exact = index.dense_search("transformers for images", 4, chunk_ids=allowed)
    monkeypatch.setattr(rag.store, "EXACT_SUBSET_MAX", 0)
    selected = index.dense_search("transformers for images", 4, chunk_ids=allowed)
    assert [h.chunk.chunk_id for h in selected] == [h.chunk.chunk_id for h in exact]
    assert [round(h.score, 5) for h in selected] == [round(h.score, 5) for h in exact]
    assert all(h.chunk.chunk_id in allowed for h in selected)


# -- export -------------------------------------------------------------------------------------
def test_bibtex_round_trip_keeps_keys_dois_and_authors(data_dir: Path, tmp_path: Path) -> None:
    papers, _ = read_corpus([data_dir / "refs.bib"])
    text = to_bibtex(papers)
    library = bibtexparser.parse_string(text)
    assert not library.failed_blocks
    entries = {e.key: e for e in library.entries}
    assert list(entries) == [p.citation_key for p in papers]
    for paper in papers:
        entry = entries[paper.citation_key]
        assert (entry["doi"] if "doi" in entry else None) == paper.doi
        assert entry["author"] == " and ".join(paper.authors)
    (tmp_path / "again.bib").write_text(text, encoding="utf-8")
    again, report = read_corpus([tmp_path / "again.bib"])
    assert report.problems == ()
    fields = ("title", "abstract", "authors", "year", "venue", "doi", "arxiv_id", "citation_key", "entry_type")
    assert [[getattr(p, f) for f in fields] for p in again] == [[getattr(p, f) for f in fields] for p in papers]


def test_ris_and_csl_json_round_trips(data_dir: Path, tmp_path: Path) -> None:
    papers, _ = read_corpus([data_dir / n for n in ("refs.bib", "refs.ris", "refs.json")])
    fields = ("title", "abstract", "year", "venue", "doi", "arxiv_id")
    for name, text in (("x.ris", to_ris(papers)), ("x.json", to_csl_json(papers))):
        (tmp_path / name).write_text(text, encoding="utf-8")
        again, report = read_corpus([tmp_path / name])
        assert report.problems == (), name
        assert [[getattr(p, f) for f in fields] for p in again] == [[getattr(p, f) for f in fields] for p in papers], (
            name
        )
        if name == "x.json":
            assert [p.authors for p in again] == [p.authors for p in papers]
        else:  # RIS has no mark for a group name: "{Stochastic Learning Group}" comes back bare
            assert [[display_name(a) for a in p.authors] for p in again] == [
                [display_name(a) for a in p.authors] for p in papers
            ]
        assert [p.citation_key for p in again] == citation_keys(papers)


def test_generated_keys_are_distinct() -> None:
    twins = [Paper(str(i), "Deep Widgets Again", "x", authors=("Sun, A.",), year=2020) for i in range(3)]
    assert citation_keys([*twins, BARE]) == ["sun2020deep", "sun2020deepa", "sun2020deepb", "anonquantum"]


# -- CLI ----------------------------------------------------------------------------------------
def test_rag_search_filters_and_export(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    embedder = HashEmbedder()
    monkeypatch.setattr(index_build.build, "load_embedder", lambda *a, **k: embedder)
    monkeypatch.setattr(rag.models, "load_embedder", lambda *a, **k: embedder)
    index = str(tmp_path / "idx")
    corpus = [a for n in REF_FILES for a in ("--corpus", str(data_dir / n))]
    assert main(["build", *corpus, "--index", index, "--no-progress"]) == 0
    capsys.readouterr()

    assert main(["search", "transformer networks", "--index", index, "--year", "2019-2020", "--author", "Tai"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1. [") and "Equivariant Transformer Networks" in out[0] and len(out) == 3
    assert out[1].strip() == (
        "Tai et al. (2019). Equivariant Transformer Networks. Proceedings of the 36th International Conference "
        "on Machine Learning.  https://arxiv.org/abs/1901.11399"
    )

    target = tmp_path / "out.bib"
    assert (
        main(
            [
                "search",
                "networks",
                "--index",
                index,
                "--source",
                "refs.bib",
                "-k",
                "3",
                "--export",
                "bib",
                "-o",
                str(target),
            ]
        )
        == 0
    )
    keys = [e.key for e in bibtexparser.parse_file(str(target)).entries]
    assert len(keys) == 3 and set(keys) <= {
        "tai2019equivariant",
        "kusupati2022matryoshka",
        "fang2023data",
        "mueller2024schroedinger",
        "okafor2025tides",
    }

    assert main(["search", "networks", "--index", index, "--export", "csl-json", "-k", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2

    assert main(["search", "networks", "--index", index, "--author", "Hinton"]) == 1
    assert "no paper in the index matches author 'Hinton'" in capsys.readouterr().err
    assert main(["search", "networks", "--index", index, "--year", "later"]) == 1
    assert "filter 'year' must be" in capsys.readouterr().err

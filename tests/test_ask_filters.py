"""Metadata filters on the answer path (``ask``, ``Answerer.stream``, ``rag ask``) and the cited
references of an answer exported as BibTeX / RIS / CSL-JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import bibtexparser
import pytest

import index_build.build
import rag.answer
import rag.models
from rag.answer import Answerer, AnswerEvent, EvidenceEvent, ask
from rag.cli import main
from rag.errors import FilterError
from rag.llm import FakeGenerator, Message
from rag.models import HashEmbedder
from rag.refusal import NO_MATCHING_PAPER, RefusalPolicy

REF_FILES = ("refs.bib", "refs.ris", "refs.json", "arxiv_sample.jsonl", "listing_plain.txt")
CONFIG = {"min_relevance": 0.0, "top_k": 3}
ETN_QUESTION = "How much do Equivariant Transformers improve the error rate of ResNet classifiers?"
ETN_REPLY = (
    "Equivariant Transformers improve the sample efficiency of ResNet classifiers, with relative "
    "improvements in error rate of up to 15% in the limited data regime [1]."
)


@pytest.fixture
def ref_index_dir(tmp_path: Path, data_dir: Path) -> Path:
    from index_build.build import build_index

    corpus = [data_dir / name for name in REF_FILES]
    build_index({"corpus": corpus, "index_dir": tmp_path / "idx", "progress": False}, embedder=HashEmbedder())
    return tmp_path / "idx"


@pytest.fixture
def answerer_of(ref_index_dir: Path):  # type: ignore[no-untyped-def]
    from rag.store import open_index

    index = open_index(ref_index_dir, HashEmbedder())

    def make(reply: object, **config: object) -> tuple[Answerer, FakeGenerator]:
        gen = FakeGenerator(reply)
        return Answerer({**CONFIG, **config}, index=index, generator=gen), gen

    return make


def test_filters_restrict_the_sources_of_an_answer(answerer_of) -> None:  # type: ignore[no-untyped-def]
    answerer, _ = answerer_of(ETN_REPLY)
    papers = answerer.index.papers
    question = "neural networks learning representations"
    unfiltered = answerer.retrieve(question, "fact", answerer.config).retrieved
    assert any((papers[r.paper_id].year or 0) < 2023 for r in unfiltered)
    events = list(answerer.stream(question, filters={"year": (2023, None)}))
    evidence = next(e for e in events if isinstance(e, EvidenceEvent))
    assert evidence.retrieved and all((papers[r.paper_id].year or 0) >= 2023 for r in evidence.retrieved)
    assert all((papers[s.paper_id].year or 0) >= 2023 for s in evidence.sources)


def test_list_questions_retrieve_within_the_filter(answerer_of) -> None:  # type: ignore[no-untyped-def]
    answerer, gen = answerer_of("never called")
    answer = answerer.ask("Which papers use networks?", filters={"source": "*.ris"}, list_min_relevance=0.0)
    assert answer.form == "list"
    assert answer.retrieved and all("refs.ris" in r.files for r in answer.retrieved)
    assert all("refs.ris" in answerer.index.papers[c.paper_id].source_files for c in answer.citations)
    assert not gen.calls


def test_answer_cites_with_metadata_and_exports_its_references(answerer_of) -> None:  # type: ignore[no-untyped-def]
    answerer, _ = answerer_of(ETN_REPLY)
    answer = answerer.ask(ETN_QUESTION, filters={"author": "Tai", "year": "2019-2019"})
    assert not answer.refused, answer.refusal_reason
    assert [c.title for c in answer.citations] == ["Equivariant Transformer Networks"]
    assert [p.citation_key for p in answer.papers] == ["tai2019equivariant"]
    reference = answer.to_dict()["citations"][0]["reference"]
    assert reference["text"].startswith("Tai et al. (2019). Equivariant Transformer Networks.")
    assert reference["link"] == "https://arxiv.org/abs/1901.11399"

    library = bibtexparser.parse_string(answer.references("bib"))
    assert [e.key for e in library.entries] == ["tai2019equivariant"]
    assert "Tai, Kai Sheng" in library.entries[0]["author"] and library.entries[0]["eprint"] == "1901.11399"
    assert "TI  - Equivariant Transformer Networks" in answer.references("ris")
    assert json.loads(answer.references("csl"))[0]["author"][0]["family"] == "Tai"


def test_a_filter_no_paper_matches_is_refused_saying_so(answerer_of) -> None:  # type: ignore[no-untyped-def]
    answerer, gen = answerer_of(ETN_REPLY)
    events = list(answerer.stream(ETN_QUESTION, filters={"author": "Hinton", "year": "2019-2023"}))
    answer = events[-1].answer
    assert isinstance(events[-1], AnswerEvent) and answer.refused
    assert answer.refusal_code == NO_MATCHING_PAPER
    assert "No paper matches the filters" in answer.text and "author 'Hinton'" in answer.text
    assert "year 2019-2023" in answer.refusal_reason
    assert answer.retrieved == () and not gen.calls  # neither retrieval nor the model ran


def test_a_malformed_filter_is_an_error(answerer_of) -> None:  # type: ignore[no-untyped-def]
    answerer, _ = answerer_of(ETN_REPLY)
    with pytest.raises(FilterError, match="filter 'year' must be"):
        answerer.ask(ETN_QUESTION, filters={"year": "recent"})
    with pytest.raises(FilterError, match="unknown filter"):
        answerer.ask(ETN_QUESTION, filters={"journal": "ICML"})


def test_module_level_ask_takes_filters(ref_index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rag.answer, "load_embedder", lambda *a, **k: HashEmbedder())
    monkeypatch.setattr(rag.answer, "load_generator", lambda *a, **k: FakeGenerator(ETN_REPLY))
    config = {**CONFIG, "index_dir": ref_index_dir}
    answer = ask(ETN_QUESTION, config=config, filters={"venue": "Machine Learning", "author": "Tai"})
    assert [c.title for c in answer.citations] == ["Equivariant Transformer Networks"]
    refused = ask(ETN_QUESTION, config=config, filters={"venue": "Nature"})
    assert refused.refused and refused.refusal_code == NO_MATCHING_PAPER


def _patch_models(monkeypatch: pytest.MonkeyPatch, reply: object) -> list[Sequence[Message]]:
    prompts: list[Sequence[Message]] = []

    def record(messages: Sequence[Message]) -> str:
        prompts.append(messages)
        return reply(messages) if callable(reply) else str(reply)

    embedder = HashEmbedder()
    monkeypatch.setattr(index_build.build, "load_embedder", lambda *a, **k: embedder)
    monkeypatch.setattr(rag.models, "load_embedder", lambda *a, **k: embedder)
    monkeypatch.setattr(rag.answer, "load_embedder", lambda *a, **k: embedder)
    monkeypatch.setattr(rag.answer, "load_generator", lambda *a, **k: FakeGenerator(record))
    return prompts


def test_rag_ask_filters_and_exports_bibtex(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _patch_models(monkeypatch, ETN_REPLY)
    index = str(tmp_path / "idx")
    assert main(["build", "--corpus", str(data_dir / "sample.bib"), "--corpus", str(data_dir / "listing_plain.txt"),
                 "--index", index, "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    args = ["ask", ETN_QUESTION, "--index", index, "--year", "2018-2020", "--author", "Tai", "--export", "bib"]
    # The relevance threshold is set for the real embedder; the fake one scores lower.
    monkeypatch.setattr(Answerer, "policy", lambda self, cfg: RefusalPolicy(min_relevance=0.0))
    assert main(args) == 0
    captured = capsys.readouterr()
    library = bibtexparser.parse_string(captured.out)  # stdout holds only the BibTeX
    assert not library.failed_blocks
    assert [e.key for e in library.entries] == ["tai2019equivariant"]
    assert "Tai et al. (2019). Equivariant Transformer Networks." in captured.err  # the answer, on stderr

    target = tmp_path / "refs.ris"
    assert main([*args[:-1], "ris", "-o", str(target)]) == 0
    captured = capsys.readouterr()
    assert "References:" in captured.out and "wrote 1 reference(s)" in captured.err
    assert target.read_text(encoding="utf-8").startswith("TY  - ")

    assert main(["ask", ETN_QUESTION, "--index", index, "--author", "Hinton"]) == 0
    out = capsys.readouterr().out
    assert "No paper matches the filters" in out and "author 'Hinton'" in out
    assert main(["ask", ETN_QUESTION, "--index", index, "--year", "soon"]) == 1
    assert "filter 'year' must be" in capsys.readouterr().err


def test_api_takes_the_same_filters(answerer_of) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from ui.server import create_app

    answerer, _ = answerer_of(ETN_REPLY)
    app = create_app(answerer.config, lambda model: answerer, chat=False, host=None)
    with TestClient(app) as client:
        body = {"question": ETN_QUESTION, "filters": {"author": ["Tai"], "year_min": 2019, "year_max": 2019}}
        data = client.post("/api/ask", json=body).json()
        assert [c["title"] for c in data["citations"]] == ["Equivariant Transformer Networks"]
        assert data["citations"][0]["reference"]["citation_key"] == "tai2019equivariant"
        assert {r["title"] for r in data["retrieved"]} == {"Equivariant Transformer Networks"}
        none = client.post("/api/ask", json={"question": ETN_QUESTION, "filters": {"venue": ["Nature"]}}).json()
        assert none["refused"] and none["refusal_code"] == NO_MATCHING_PAPER
        found = client.get("/api/search", params={"q": "networks", "k": 5, "source": "*.ris"}).json()
        assert found["results"] and all("refs.ris" in r["files"] for r in found["results"])
        bad = client.get("/api/search", params={"q": "networks", "year": "soon"})
        assert bad.status_code == 400 and "filter 'year' must be" in bad.json()["detail"]

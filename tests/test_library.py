"""Adding papers to a served index (``ui.library.Library``): checks, background build, the swap
between questions, one build at a time, and the uploads kept by later builds."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from index_build.build import UPLOADS, build_index
from rag.answer import Answerer
from rag.config import get_config
from rag.llm import FakeGenerator
from rag.store import open_index
from ui.app import filters_from, references_file, status_html
from ui.library import UPLOAD_MAX_BYTES, Busy, Library, Upload, UploadError, check_uploads, safe_name

TIDES_Q = "How well do tidal turbines measure sea temperature?"
TIDES_REPLY = "Tidal turbines recover sea temperature to within 0.3 degrees from strain alone [1]."


@pytest.fixture
def served(small_corpus: Path, tmp_path: Path, fake_embedder):  # type: ignore[no-untyped-def]
    cfg = get_config({"index_dir": tmp_path / "index", "corpus": [small_corpus], "progress": False,
                      "min_relevance": 0.0, "top_k": 3})  # fmt: skip
    build_index(cfg, embedder=fake_embedder)
    answerer = Answerer(cfg, index=open_index(cfg.index_dir, fake_embedder), generator=FakeGenerator(TIDES_REPLY))
    return cfg, answerer


def sample(data_dir: Path) -> Upload:
    return Upload("My Zotero library.bib", (data_dir / "sample.bib").read_bytes())


def test_uploads_are_checked_before_anything_runs() -> None:
    with pytest.raises(UploadError, match="choose one or more files"):
        check_uploads([])
    with pytest.raises(UploadError, match=r"run\.sh: not a corpus file"):
        check_uploads([Upload("run.sh", b"echo hi")])
    with pytest.raises(UploadError, match="over the 8 MB limit"):
        check_uploads([Upload("big.bib", b"@" * (UPLOAD_MAX_BYTES + 1))])
    with pytest.raises(UploadError, match="the file is empty"):
        check_uploads([Upload("empty.ris", b"  \n")])
    assert safe_name("../../etc/passwd.bib") == "passwd.bib"
    assert safe_name("C:\\Users\\me\\My refs (1).RIS") == "My_refs_1.ris"
    assert safe_name(".hidden.json") == "hidden.json"


def test_added_papers_answer_the_next_question(served, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, answerer = served
    library = Library(cfg, lambda model: answerer)
    before = library("fake")
    assert before is answerer and not any("Tidal" in p.title for p in before.index.papers.values())

    library.add([sample(data_dir)], model="fake")
    status = library.wait(120)
    assert status.state == "done", status.message
    assert status.new_papers == 4 and status.version == 1  # sample.bib's 4 usable entries
    assert status.papers_parsed == len(before.index.papers) + 4
    assert any("alcorn2019strike" in p and "no abstract" in p for p in status.problems)
    assert any("broken2021entry" in p for p in status.problems)
    assert (cfg.index_dir / UPLOADS / "My_Zotero_library.bib").is_file()

    after = library("fake")
    assert after is not before and after.generator is before.generator  # the loaded model is shared
    assert len(before.index.papers) + 4 == len(after.index.papers)  # the old answerer keeps its papers
    answer = after.ask(TIDES_Q, filters={"source": "*.bib"})
    assert [c.title for c in answer.citations] == ["Tidal Turbines as Ocean Thermometers"]
    reference = answer.to_dict()["citations"][0]["reference"]
    assert reference["text"].startswith("Okafor and Lindqvist (2025).")
    assert reference["link"] == "https://doi.org/10.5555/jos.2025.0042"
    path = references_file([answer], "RIS")
    assert path is not None and "DO  - 10.5555/jos.2025.0042" in Path(path).read_text(encoding="utf-8")
    html = status_html(status)
    assert 'value="100"' in html and "added 4 new paper(s)" in html

    # A later build of the same index (`rag build`) keeps the added papers and their file.
    assert build_index(cfg, embedder=answerer.embedder).status == "up-to-date"
    again = build_index(cfg, embedder=answerer.embedder, force=True)
    assert again.papers == len(after.index.papers)
    assert (cfg.index_dir / UPLOADS / "My_Zotero_library.bib").is_file()


def test_a_second_upload_while_building_is_refused(served, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, answerer = served
    started, go_on = threading.Event(), threading.Event()

    def slow_build(*args: Any, **kwargs: Any) -> Any:
        started.set()
        assert go_on.wait(60)
        return build_index(*args, **kwargs)

    library = Library(cfg, lambda model: answerer, build=slow_build)
    library.add([sample(data_dir)])
    assert started.wait(60)
    with pytest.raises(Busy, match="papers are already being added"):
        library.add([Upload("more.bib", (data_dir / "refs.bib").read_bytes())])
    assert library.status().running and library("fake") is answerer  # nothing swapped mid-build
    go_on.set()
    assert library.wait(120).state == "done"
    assert library.add([Upload("more.ris", (data_dir / "refs.ris").read_bytes())]).running  # free again
    assert library.wait(120).state == "done"


def test_a_file_without_papers_adds_nothing(served) -> None:  # type: ignore[no-untyped-def]
    cfg, answerer = served
    library = Library(cfg, lambda model: answerer)
    library.add([Upload("notes.bib", b"@misc{k, title={No abstract here}}\n")])
    status = library.wait(60)
    assert status.state == "failed" and "no file holds a usable entry" in status.message
    assert any("no abstract" in p for p in status.problems) or "usable" in status.message
    assert not (cfg.index_dir / UPLOADS).exists() or not any((cfg.index_dir / UPLOADS).iterdir())
    assert library("fake") is answerer


def test_settings_filters() -> None:
    assert filters_from(None, None, "", "  ", None) == {}
    assert filters_from(2019, None, "Hinton; G. LeCun", "NeurIPS", "*.bib") == {
        "year": (2019, None),
        "author": ["Hinton", "G. LeCun"],
        "venue": ["NeurIPS"],
        "source": ["*.bib"],
    }
    assert filters_from(None, 2023.0, None, None, None) == {"year": (None, 2023)}
    with pytest.raises(Exception, match="whole number"):
        filters_from("2019.5", None, None, None, None)

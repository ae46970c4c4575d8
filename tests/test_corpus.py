from __future__ import annotations

import json
from pathlib import Path

import pytest

from index_build.corpus import read_corpus
from rag.config import BUNDLED_CORPUS
from rag.errors import CorpusError
from rag.text import normalize_title, paper_id_for


def titles(papers: list) -> list[str]:
    return [p.title for p in papers]


def test_plain_layout_with_glued_subscribe(data_dir: Path) -> None:
    papers, report = read_corpus([data_dir / "listing_plain.txt"])
    assert titles(papers) == [
        "Quantum Widgets for Sparse Retrieval",
        "Gradient Gardening: Pruning Networks by Watering Their Weights",
        "Tiny Owls: Nocturnal Object Detection with Thermal Cameras",
    ]
    assert report.entries == 3 and report.problems == ()
    assert papers[0].abstract.startswith("We introduce quantum widgets")
    assert papers[0].sources[0].line == 3


def test_furniture_layout_skips_page_text(data_dir: Path) -> None:
    papers, report = read_corpus([data_dir / "listing_furniture.txt"])
    assert titles(papers) == [
        "Lunar Lattices for Protein Folding",
        "Quantum Widgets for Sparse Retrieval",
        "Echo Chambers in Recommender Systems: A Simulation Study",
    ]
    assert report.problems == ()
    assert papers[0].sources[0].line == 13


def test_duplicates_merge_and_keep_every_source(small_corpus: Path) -> None:
    papers, report = read_corpus([small_corpus])
    assert report.entries == 6 and report.papers == 5 and report.duplicates == 1
    widget = next(p for p in papers if p.title.startswith("Quantum Widgets"))
    assert widget.source_files == ("listing_furniture.txt", "listing_plain.txt")


def test_bundled_corpus_counts() -> None:
    papers, report = read_corpus([BUNDLED_CORPUS])
    assert report.entries == 645
    assert len(papers) == 591
    assert report.duplicates == 54
    assert report.problems == ()
    assert len({p.paper_id for p in papers}) == 591
    assert sum(len(p.sources) for p in papers) == 645
    assert all(not p.title.startswith("Subscribe") for p in papers)


def test_ids_are_stable_and_readable() -> None:
    pid = paper_id_for("Deep Residual Learning for Image Recognition")
    assert pid == paper_id_for("  deep residual learning, for IMAGE recognition! ")
    assert pid.startswith("deep-residual-learning-for-image-recognition-")
    assert pid != paper_id_for("Deep Residual Learning for Image Recognition II")
    assert normalize_title("Café—Net") == "café net"
    with pytest.raises(ValueError):
        paper_id_for("!!!")


def test_title_without_abstract_is_reported(tmp_path: Path) -> None:
    good = (
        "A good abstract that is long enough to be recognised as prose, with many words in it, "
        "describing a method, its evaluation on a benchmark, and the results it reaches."
    )
    (tmp_path / "c.txt").write_text(f"Lonely Title\nGood Title\n{good}\nTrailing Title\n", encoding="utf-8")
    papers, report = read_corpus([tmp_path / "c.txt"])
    assert titles(papers) == ["Good Title"]
    messages = [str(p) for p in report.problems]
    assert messages[0].startswith("c.txt:1: title with no abstract")
    assert messages[1].startswith("c.txt:4: title with no abstract (file ends after it)")


def test_abstract_without_title_is_reported(tmp_path: Path) -> None:
    orphan = "An abstract with no title in front of it, long enough to be prose with more than twenty-five words in it for sure, yes indeed it is."
    (tmp_path / "c.txt").write_text(f"{orphan}\nT\n{orphan}\n", encoding="utf-8")
    papers, report = read_corpus([tmp_path / "c.txt"])
    assert titles(papers) == ["T"]
    assert str(report.problems[0]).startswith("c.txt:1: abstract with no title")


def test_non_utf8_line_loses_only_its_entry(tmp_path: Path, data_dir: Path) -> None:
    raw = (data_dir / "listing_plain.txt").read_bytes().replace(b"Pruning removes", b"Pruning \xff removes")
    (tmp_path / "bad.txt").write_bytes(raw)
    papers, report = read_corpus([tmp_path / "bad.txt"])
    assert len(papers) == 2
    assert any("bad.txt:6: not valid UTF-8 (byte 0xff" in str(p) for p in report.problems)
    assert any("lost its abstract" in str(p) for p in report.problems)


def test_windows_line_endings(tmp_path: Path, data_dir: Path) -> None:
    raw = (data_dir / "listing_furniture.txt").read_bytes().replace(b"\n", b"\r\n")
    (tmp_path / "win.txt").write_bytes(raw)
    papers, report = read_corpus([tmp_path / "win.txt"])
    assert len(papers) == 3 and report.problems == ()
    assert "\r" not in papers[0].abstract


def test_same_title_different_abstract_keeps_first(tmp_path: Path, data_dir: Path) -> None:
    text = (data_dir / "listing_plain.txt").read_text(encoding="utf-8")
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "b.txt").write_text(text.replace("37 learned prototypes", "38 learned prototypes"), encoding="utf-8")
    papers, report = read_corpus([tmp_path])
    widget = next(p for p in papers if p.title.startswith("Quantum"))
    assert "37 learned" in widget.abstract
    assert report.duplicates == 2
    assert any("b.txt:3:" in str(p) and "different abstract" in str(p) for p in report.problems)


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(CorpusError, match="corpus is empty"):
        read_corpus([tmp_path / "empty.txt"])


def test_directory_without_corpus_files(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# nothing here")
    with pytest.raises(CorpusError, match="holds no corpus files"):
        read_corpus([tmp_path])


def test_missing_path_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file"):
        read_corpus([tmp_path / "nope.txt"])
    (tmp_path / "x.pdf").write_text("x")
    with pytest.raises(CorpusError, match="unknown corpus format"):
        read_corpus([tmp_path / "x.pdf"])


def test_jsonl_and_csv(data_dir: Path) -> None:
    papers, report = read_corpus([data_dir / "papers.jsonl", data_dir / "papers.csv"])
    assert report.problems == ()
    solar, coral, bikes = papers
    assert solar.paper_id == "solar-1" and solar.url == "https://example.org/solar"
    assert solar.authors == ("A. Sun", "B. Ray") and solar.year == 2023
    assert coral.paper_id == paper_id_for("Coral Reef Acoustics") and coral.authors == ("C. Wave", "D. Deep")
    assert coral.sources[0].line == 3
    assert bikes.year == 2024 and bikes.sources[0].line == 2


def test_bad_jsonl_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"title": "Fine", "abstract": "An abstract."}\n'
        '{"title": "Broken", "abstract": \n'
        '{"title": "", "abstract": "No title."}\n'
        '["not", "an", "object"]\n'
        '{"title": "Bad year", "abstract": "Text.", "year": "soon"}\n',
        encoding="utf-8",
    )
    papers, report = read_corpus([path])
    assert titles(papers) == ["Fine"]
    found = {p.line: p.message for p in report.problems}
    assert found[2].startswith("not valid JSON")
    assert found[3] == "field 'title' is missing or empty"
    assert "expected an object" in found[4]
    assert "'year' is not a whole number" in found[5]


def test_csv_missing_column_is_reported(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "bad.csv").write_text("title,summary\nA,B\n", encoding="utf-8")
    with pytest.raises(CorpusError) as info:
        read_corpus([tmp_path / "bad.csv"])
    assert "bad.csv:1: CSV header lacks column(s) abstract" in str(info.value)
    papers, report = read_corpus([tmp_path / "bad.csv", data_dir / "papers.csv"])
    assert len(papers) == 1 and "lacks column" in str(report.problems[0])


def test_title_of_punctuation_only_is_reported(tmp_path: Path) -> None:
    abstract = "word " * 40
    path = tmp_path / "p.jsonl"
    lines = [{"title": ":", "abstract": abstract}, {"title": "Real Title", "abstract": abstract}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n", encoding="utf-8")
    papers, report = read_corpus([path])
    assert [p.title for p in papers] == ["Real Title"]
    assert str(report.problems[0]).startswith("p.jsonl:1: unusable title ':'")

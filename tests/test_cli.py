from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import index_build.build
import rag.models
from rag.cli import main
from rag.models import HashEmbedder


@pytest.fixture
def fake_models(monkeypatch: pytest.MonkeyPatch) -> HashEmbedder:
    embedder = HashEmbedder()
    monkeypatch.setattr(index_build.build, "load_embedder", lambda *a, **k: embedder)
    monkeypatch.setattr(rag.models, "load_embedder", lambda *a, **k: embedder)
    return embedder


def test_help_lists_every_registered_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "build" in out and "search" in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: rag" in capsys.readouterr().out


def test_build_then_search(
    small_corpus: Path, tmp_path: Path, fake_models: HashEmbedder, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "idx"
    assert main(["build", "--corpus", str(small_corpus), "--index", str(index), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "6 entries read, 1 merged as duplicates, 0 skipped" in out
    assert "built" in out and "5 papers" in out and "peak memory" in out

    assert main(["build", "--corpus", str(small_corpus), "--index", str(index)]) == 0
    assert "is up to date" in capsys.readouterr().out

    assert main(["search", "lunar lattice protein folding", "--index", str(index), "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("1. [") and "Lunar Lattices for Protein Folding" in out.splitlines()[0]


def test_build_reports_skipped_entries(
    tmp_path: Path, fake_models: HashEmbedder, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("Orphan Title\n" + (data_dir / "listing_plain.txt").read_text(), encoding="utf-8")
    assert main(["build", "--corpus", str(corpus), "--index", str(tmp_path / "i"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["papers"] == 3 and result["corpus"]["skipped"] == 1
    assert result["problems"][0]["line"] == 1 and "title with no abstract" in result["problems"][0]["message"]


def test_errors_are_messages_not_tracebacks(
    tmp_path: Path, fake_models: HashEmbedder, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "--corpus", str(tmp_path / "missing"), "--index", str(tmp_path / "i")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no such file" in err and "Traceback" not in err
    assert main(["search", "x", "--index", str(tmp_path / "none")]) == 1
    assert "run `rag build`" in capsys.readouterr().err


def test_ask_prints_each_verified_sentence_while_the_model_writes(
    fake_index, fake_embedder, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import io

    import rag.answer
    from rag.llm import FakeGenerator, Message

    out = io.StringIO()
    printed_before_the_end: list[str] = []

    class Watched(FakeGenerator):
        def stream(self, messages: Sequence[Message], *, max_tokens: int) -> Iterator[str]:
            pieces = list(super().stream(messages, max_tokens=max_tokens))
            yield from pieces[:-1]
            printed_before_the_end.append(out.getvalue())  # what the reader saw before the last word
            yield pieces[-1]

    reply = (
        "OwlSet has 12,000 thermal images of animals at night [1]. "
        "Tiny Owl runs at 95 frames per second on a phone [1]. Tiny Owl reaches 61.3 mAP on OwlSet [1]."
    )
    monkeypatch.setattr(rag.answer, "load_generator", lambda *a, **k: Watched(reply))
    monkeypatch.setattr(rag.answer, "load_embedder", lambda *a, **k: fake_embedder)
    monkeypatch.setattr(sys, "stdout", out)
    question = "How many thermal images of animals at night are in OwlSet?"
    assert main(["ask", question, "--index", str(fake_index.index_dir), "-k", "3"]) == 0
    seen = printed_before_the_end[0]
    assert "  OwlSet has 12,000 thermal images of animals at night [1]." in seen
    assert "  Tiny Owl runs at 95 frames per second on a phone [?]." in seen
    assert "      [?] not supported: the number 95 is not in “Tiny Owls”" in seen
    assert "61.3" not in seen  # the last sentence is not printed before it is checked
    text = out.getvalue()
    assert "  Tiny Owl reaches 61.3 mAP on OwlSet [1]." in text and "References:" in text
    assert text.count("OwlSet has 12,000 thermal images of animals at night [1].") == 1  # not printed twice

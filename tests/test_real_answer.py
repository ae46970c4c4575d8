"""Slow: real llama.cpp models on the real bundled index."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.answer import Answerer
from rag.cli import main
from rag.llm import LlamaCppGenerator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_answerer(real_index) -> Answerer:  # type: ignore[no-untyped-def]
    return Answerer(
        {"index_dir": real_index.index_dir},
        index=real_index,
        generator=LlamaCppGenerator("qwen2.5-coder-1.5b", n_threads=2),
    )


def test_tiny_model_streams_through_llama_cpp() -> None:
    gen = LlamaCppGenerator("smollm2-135m", n_threads=2)
    messages = [{"role": "user", "content": "Say hello."}]
    pieces = list(gen.stream(messages, max_tokens=8))
    assert pieces and "".join(pieces).strip()
    assert 3 < gen.count_tokens(messages) < 40


@pytest.mark.parametrize(
    ("question", "title", "must_include"),
    [
        ("How many frames does the 8-Calves dataset contain?", "8-Calves Image dataset", "67,760"),
        (
            "How much do Equivariant Transformers improve the error rate of ResNet classifiers?",
            "Equivariant Transformer Networks",
            "15%",
        ),
        ("What is Matryoshka Representation Learning?", "Matryoshka Representation Learning", ""),
    ],
)
def test_default_model_cites_the_right_paper(
    default_answerer: Answerer, question: str, title: str, must_include: str
) -> None:
    answer = default_answerer.ask(question)
    assert not answer.refused, answer.raw_text
    assert answer.citations and answer.citations[0].title == title
    assert must_include in answer.text
    assert all(s.supported for s in answer.sentences if s.citations)
    # 480 tokens of evidence (the first paper whole) + the fixed instructions and the question.
    assert answer.prompt_tokens <= 750 and answer.invalid_citations == 0


def test_question_outside_the_collection_is_refused(default_answerer: Answerer) -> None:
    answer = default_answerer.ask("What is the boiling point of mercury on Mars?")
    assert answer.refused and answer.citations == ()
    assert answer.text.startswith("The collection does not answer this question.")


def test_cli_ask_end_to_end_with_the_tiny_model(real_index, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    code = main(
        [
            "ask",
            "What does a data filtering network do?",
            "--index",
            str(Path(real_index.index_dir)),
            "--model",
            "smollm2-135m",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Sources:" in out and "[1] Data Filtering Networks" in out
    assert ("References:" in out) or ("The collection does not answer" in out)

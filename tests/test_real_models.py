"""Slow: the packaged MiniLM builds the real bundled index and finds known papers."""

from __future__ import annotations

from pathlib import Path

import pytest

from index_build.chunking import SPECIAL_TOKENS
from rag.config import BUNDLED_CORPUS

pytestmark = pytest.mark.slow


def test_real_chunks_fit_the_model_window(real_index, real_embedder) -> None:  # type: ignore[no-untyped-def]
    longest = max(real_embedder.count_tokens(c.embed_text) for c in real_index.chunks.values())
    assert longest + SPECIAL_TOKENS <= real_embedder.max_tokens == 256


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("8-Calves dataset occlusion-rich object detection and identity classification", "8-Calves Image dataset"),
        ("learned filters that curate image-text pairs for training CLIP", "Data Filtering Networks"),
        (
            "embedding performance deteriorates on longer texts",
            "Length-Induced Embedding Collapse in Transformer-based Models",
        ),
    ],
)
def test_distinctive_phrase_finds_its_paper_first(real_index, query: str, title: str) -> None:  # type: ignore[no-untyped-def]
    hits = real_index.dense_search(query, 5)
    assert hits[0].chunk.title == title


def test_real_embeddings_are_unit_vectors(real_embedder) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    vectors = real_embedder.embed(["a graph neural network", "protein folding"])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_packaged_model_path_exists() -> None:
    from rag.models import resolve_embedder_path

    assert (resolve_embedder_path("all-MiniLM-L6-v2") / "model.safetensors").is_file()
    assert Path(BUNDLED_CORPUS).is_dir()


def test_a_yes_no_answer_that_only_points_at_a_paper_gets_its_closest_sentence(real_index) -> None:  # type: ignore[no-untyped-def]
    """A paraphrased yes/no question shares few words with the abstract that answers it; when the
    model only restates it and points at a paper (what the 1.5B model wrote on a held-out split),
    that paper's sentence closest to the question is quoted instead of a refusal."""
    from rag.answer import Answerer
    from rag.llm import FakeGenerator

    question = (
        "Do deep nets trained with plain minibatch gradient updates first tell classes apart using simple summary "
        "properties of their inputs, such as the average and the spread, before making use of more intricate properties?"
    )
    reply = (
        "Yes, deep nets trained with plain minibatch gradient updates first tell classes apart using simple summary "
        "properties of their inputs, such as the average and the spread, before making use of more intricate "
        "properties. This is explained in [1]."
    )
    answer = Answerer(index=real_index, generator=FakeGenerator(reply)).ask(question)
    assert not answer.refused, answer.refusal_reason
    assert answer.sentences[0].verdict == "quote" and "higher-order" in answer.text
    assert answer.citations[0].title == "Neural networks trained with SGD learn distributions of increasing complexity"
    assert "This is explained in" not in answer.text  # the pointer is no answer

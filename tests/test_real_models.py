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

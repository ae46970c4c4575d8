from __future__ import annotations

from pathlib import Path

import pytest

from index_build.chunking import SPECIAL_TOKENS, Chunker, ChunkTooLongError
from index_build.corpus import read_corpus
from rag.config import BUNDLED_CORPUS
from rag.models import HashEmbedder
from rag.types import Paper


def check_chunks(paper: Paper, chunks: list, embedder: HashEmbedder) -> None:
    assert chunks, paper.paper_id
    for i, chunk in enumerate(chunks):
        assert chunk.position == i and chunk.paper_id == paper.paper_id
        assert paper.abstract[chunk.start : chunk.end] == chunk.text
        assert embedder.count_tokens(chunk.embed_text) + SPECIAL_TOKENS <= embedder.max_tokens
        for start, end in chunk.sentences:
            assert chunk.start <= start < end <= chunk.end
            assert paper.abstract[start:end].strip()
    # Chunks cover the abstract in order, up to the whitespace between them.
    covered = " ".join(c.text for c in chunks).split()
    assert covered == paper.abstract.split()


def test_small_window_splits_on_sentences(data_dir: Path) -> None:
    embedder = HashEmbedder(max_tokens=48)
    papers, _ = read_corpus([data_dir / "listing_plain.txt"])
    chunker = Chunker(embedder)
    for paper in papers:
        chunks = chunker.chunk(paper)
        check_chunks(paper, chunks, embedder)
        assert len(chunks) >= 2
        # With room for whole sentences, every chunk starts at a sentence start.
        starts = {a for c in chunks for a, _ in c.sentences}
        assert all(c.start in starts for c in chunks)


def test_bundled_corpus_fits_window() -> None:
    embedder = HashEmbedder(max_tokens=256)
    papers, _ = read_corpus([BUNDLED_CORPUS])
    chunker = Chunker(embedder)
    for paper in papers[:150]:
        check_chunks(paper, chunker.chunk(paper), embedder)


def test_sentence_longer_than_window_is_cut_not_truncated() -> None:
    words = " ".join(f"w{i}" for i in range(120))
    paper = Paper(paper_id="p", title="Long", abstract=f"{words}. Short end.")
    embedder = HashEmbedder(max_tokens=40)
    chunks = Chunker(embedder).chunk(paper)
    check_chunks(paper, chunks, embedder)
    assert len(chunks) >= 4


def test_title_longer_than_window_is_an_error() -> None:
    paper = Paper(paper_id="p", title=" ".join(["word"] * 60), abstract="A short abstract.")
    with pytest.raises(ChunkTooLongError, match="paper p"):
        Chunker(HashEmbedder(max_tokens=40)).chunk(paper)

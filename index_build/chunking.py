"""Split abstracts into chunks that fit the embedder's window, keeping offsets and sentences.

llama-index's ``SentenceSplitter`` does the splitting (sentence-aware, with the embedder's own
tokenizer counting tokens); the title that is prefixed to every chunk for embedding is
accounted for through ``split_text_metadata_aware``, so no chunk is truncated by the model.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.node_parser import SentenceSplitter

from rag.models import Embedder
from rag.text import splitter_sentence_spans
from rag.types import Chunk, Paper

SPECIAL_TOKENS = 2  # [CLS] and [SEP] that a BERT-style embedder adds to every input
SPLITTER_NAME = "llama_index.SentenceSplitter"


class ChunkTooLongError(ValueError):
    """The title alone leaves no room for text in the embedder's window."""


def chunk_budget(embedder: Embedder) -> int:
    """Tokens available for title + text in one chunk."""
    return embedder.max_tokens - SPECIAL_TOKENS


def chunking_settings(embedder: Embedder, overlap: int) -> dict[str, Any]:
    """What the manifest records about chunking; a change forces a rebuild."""
    return {
        "splitter": SPLITTER_NAME,
        "chunk_size": chunk_budget(embedder),
        "chunk_overlap": overlap,
        "title_prefix": True,
    }


class Chunker:
    """Chunk papers for one embedder; reuses one splitter and the embedder's tokenizer."""

    def __init__(self, embedder: Embedder, overlap: int = 0) -> None:
        self.embedder = embedder
        self.budget = chunk_budget(embedder)
        self._splitter = SentenceSplitter(
            chunk_size=self.budget,
            chunk_overlap=overlap,
            # The splitter only takes len() of what this returns.
            tokenizer=lambda text: range(embedder.count_tokens(text)),
        )

    def chunk(self, paper: Paper) -> list[Chunk]:
        """Chunks of one paper, in order, with offsets into ``paper.abstract``.

        Raises:
            ChunkTooLongError: the title is too long to leave room for any text.
        """
        abstract = paper.abstract
        prefix = paper.title + "\n"
        try:
            pieces = self._splitter.split_text_metadata_aware(abstract, prefix)
        except ValueError as exc:
            raise ChunkTooLongError(
                f"paper {paper.paper_id}: the title takes more than the embedder's {self.budget}-token window ({exc})"
            ) from exc
        spans = splitter_sentence_spans(abstract)
        chunks: list[Chunk] = []
        previous = (-1, 0)  # (start, end) of the chunk before
        for position, piece in enumerate(p for p in pieces if p.strip()):
            start = _locate(abstract, piece, *previous)
            if start < 0:
                raise ValueError(f"paper {paper.paper_id}: chunk {position} does not occur in the abstract")
            end = start + len(piece)
            previous = (start, end)
            sentences = tuple((max(a, start), min(b, end)) for a, b in spans if a < end and b > start)
            chunks.append(
                Chunk(
                    chunk_id=f"{paper.paper_id}#{position}",
                    paper_id=paper.paper_id,
                    title=paper.title,
                    text=piece,
                    start=start,
                    end=end,
                    sentences=sentences or ((start, end),),
                    position=position,
                )
            )
        return chunks


def _locate(text: str, piece: str, previous_start: int, previous_end: int) -> int:
    """Where ``piece``, the chunk after the one at [previous_start, previous_end), starts in ``text``.

    A chunk starts after the previous one does and reaches past its end (it may overlap it):
    a short piece such as "0:" also occurs inside the previous chunk, and taking that
    occurrence would leave the real text in no chunk (found by the property tests).
    """
    start = text.find(piece, previous_start + 1)
    while start >= 0 and start + len(piece) <= previous_end:
        start = text.find(piece, start + 1)
    if start < 0:  # not after the previous chunk: fall back to the first occurrence anywhere
        start = text.find(piece)
    return start

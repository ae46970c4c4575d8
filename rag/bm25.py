"""The BM25 index of the FAISS store: built and saved with the index, loaded on first use.

llama-index's ``BM25Retriever`` (bm25s) over the chunks' embed text (title + chunk), English
stemming. ``rag build`` saves it under ``bm25/`` so that the first question does not tokenise
the whole corpus; an index written before it existed still works (BM25 is built in memory then).
The Milvus store does not use this: it ranks with Milvus's built-in BM25 function.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BM25_DIR = "bm25"
DEFAULT_TOP_K = 40


def build_bm25(nodes: Sequence[Any], top_k: int = DEFAULT_TOP_K) -> Any:
    """A ``BM25Retriever`` over ``nodes`` (llama-index nodes), returning up to ``top_k`` chunks."""
    import Stemmer
    from llama_index.retrievers.bm25 import BM25Retriever

    return BM25Retriever.from_defaults(
        nodes=list(nodes),
        similarity_top_k=max(1, min(top_k, len(nodes))),
        stemmer=Stemmer.Stemmer("english"),
        language="english",
    )


def save_bm25(index_dir: Path, nodes: Sequence[Any]) -> None:
    """Build the BM25 index of ``nodes`` and save it in ``index_dir / bm25``."""
    if not nodes:
        return
    path = index_dir / BM25_DIR
    path.mkdir(parents=True, exist_ok=True)
    build_bm25(nodes).persist(str(path))


def load_bm25(index_dir: Path, chunk_ids: set[str], top_k: int) -> Any | None:
    """The saved BM25 index, if there is one and it covers exactly ``chunk_ids``; else None."""
    path = index_dir / BM25_DIR
    if not path.is_dir():
        return None
    import Stemmer
    from llama_index.retrievers.bm25 import BM25Retriever

    try:
        retriever = BM25Retriever.from_persist_dir(str(path))
    except Exception as exc:  # bm25s raises OSError / ValueError / JSON errors for damaged files
        logger.warning("ignoring unreadable BM25 index %s (%s): building it in memory", path, exc)
        return None
    if {doc["node_id"] for doc in retriever.corpus} != chunk_ids:
        logger.warning("BM25 index %s does not match the chunks of the index: building it in memory", path)
        return None
    retriever.stemmer = Stemmer.Stemmer("english")
    retriever.similarity_top_k = max(1, min(top_k, len(chunk_ids)))
    return retriever

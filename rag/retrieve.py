"""Hybrid retrieval: dense (FAISS or Milvus) + BM25, fused by reciprocal rank, aggregated to papers.

Each retriever ranks chunks; a paper takes the rank of its best chunk in each ranking, and
reciprocal-rank fusion combines the paper rankings, so a paper appears once. Every returned
paper also gets its best dense similarity to the question, the signal the refusal threshold
uses (BM25 scores are not comparable across questions).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from rag.errors import FilterError
from rag.filters import PaperFilter
from rag.store import RagIndex
from rag.types import RetrievedPaper, ScoredChunk

logger = logging.getLogger(__name__)


def rrf_fuse(rankings: dict[str, Sequence[str]], k: int = 60) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion of ranked id lists: score(id) = sum over lists of 1 / (k + rank).

    Ties keep the order in which ids first appear in the lists (dense first), so the result
    is deterministic.
    """
    scores: dict[str, float] = {}
    for ranking in rankings.values():
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: i for i, item in enumerate(dict.fromkeys(x for r in rankings.values() for x in r))}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def papers_in_order(hits: Sequence[ScoredChunk]) -> list[str]:
    """Paper ids in the order their best chunk appears."""
    return list(dict.fromkeys(h.chunk.paper_id for h in hits))


class Retriever:
    """Dense, BM25 and hybrid search over one opened index."""

    def __init__(self, index: RagIndex, *, candidates: int = 40, rrf_k: int = 10) -> None:
        self.index = index
        self.candidates = candidates
        self.rrf_k = rrf_k
        self._bm25: Any = None
        self._lock = threading.Lock()

    def _bm25_retriever(self) -> Any:
        """The FAISS store's BM25: the one saved at build time, else built in memory once."""
        from rag.bm25 import build_bm25, load_bm25

        with self._lock:
            if self._bm25 is None:
                self._bm25 = load_bm25(self.index.index_dir, set(self.index.chunks), self.candidates)
                if self._bm25 is None:
                    self._bm25 = build_bm25(self.index.nodes, self.candidates)
        return self._bm25

    def bm25_search(self, query: str, *, chunk_ids: Collection[str] | None = None) -> list[ScoredChunk]:
        """Chunks sharing (stemmed) words with the query, best first; zero scores dropped.

        ``chunk_ids`` restricts the ranking to those chunks (a metadata filter). With the Milvus
        store, Milvus's built-in BM25 full-text search ranks them.
        """
        if not query.strip():
            return []
        if self.index.backend is not None:
            found = self.index.backend.bm25(query, self.candidates, chunk_ids)
            return [
                ScoredChunk(chunk=self.index.chunks[cid], score=score, rank=r)
                for r, (cid, score) in enumerate((f for f in found if f[0] in self.index.chunks), 1)
            ]
        if chunk_ids is not None:
            return self._bm25_within(query, chunk_ids)
        out: list[ScoredChunk] = []
        for hit in self._bm25_retriever().retrieve(query):
            chunk = self.index.chunks.get(hit.node.node_id)
            if chunk is not None and (hit.score or 0.0) > 0.0:
                out.append(ScoredChunk(chunk=chunk, score=float(hit.score or 0.0), rank=len(out) + 1))
        return out

    def _bm25_within(self, query: str, chunk_ids: Collection[str]) -> list[ScoredChunk]:
        """BM25 over a subset of chunks: the same index, with the other chunks' weight set to 0.

        The llama-index retriever takes a weight mask only at construction; this runs the same
        tokenisation and bm25s call as its ``_retrieve`` with a mask per query instead, so one
        BM25 index serves every filter.
        """
        import bm25s

        retriever = self._bm25_retriever()
        mask = np.fromiter((doc["node_id"] in chunk_ids for doc in retriever.corpus), dtype=np.float32)
        k = min(self.candidates, int(mask.sum()))
        if k == 0:
            return []
        tokens = bm25s.tokenize(
            query,
            stemmer=retriever.stemmer if not retriever.skip_stemming else None,
            token_pattern=retriever.token_pattern,
            show_progress=False,
        )
        indexes, scores = retriever.bm25.retrieve(tokens, k=k, show_progress=False, weight_mask=mask)
        out: list[ScoredChunk] = []
        for idx, score in zip(indexes[0], scores[0], strict=True):
            # a BM25 index loaded with its corpus (the saved one) returns the documents themselves
            doc = idx if isinstance(idx, dict) else retriever.corpus[int(idx)]
            chunk = self.index.chunks.get(doc["node_id"])
            if chunk is not None and float(score) > 0.0 and chunk.chunk_id in chunk_ids:
                out.append(ScoredChunk(chunk=chunk, score=float(score), rank=len(out) + 1))
        return out

    def filtered_chunks(self, filters: Mapping[str, Any] | PaperFilter | None) -> set[str] | None:
        """Ids of the chunks of the papers that pass ``filters`` (None: no filter given).

        Raises:
            FilterError: a filter is malformed, or no paper of the index matches.
        """
        spec = filters if isinstance(filters, PaperFilter) else PaperFilter.from_dict(filters)
        if not spec.active:
            return None
        papers = spec.select(self.index.papers.values())
        if not papers:
            raise FilterError(spec.no_match(list(self.index.papers.values())))
        return {c.chunk_id for pid in papers for c in self.index.paper_chunks(pid)}

    def search(
        self,
        query: str,
        top_k: int,
        mode: str = "hybrid",
        *,
        vector: np.ndarray | None = None,
        filters: Mapping[str, Any] | PaperFilter | None = None,
    ) -> list[RetrievedPaper]:
        """The ``top_k`` best papers for ``query``, best first.

        Args:
            query: the question or search words.
            top_k: how many papers to return.
            mode: "hybrid" (dense + BM25, fused by reciprocal rank), "dense" or "bm25".
            vector: the query's embedding, if already computed.
            filters: metadata filters (``rag.filters``), e.g. ``{"year": (2019, 2023),
                "author": "Hinton", "venue": "NeurIPS", "source": "my.bib"}``. Both retrievers
                rank only the chunks of matching papers, before fusion, so the top ``k`` is
                filled from matching papers.

        Raises:
            FilterError: a filter is malformed, or no paper of the index matches it.
        """
        allowed = self.filtered_chunks(filters)  # validated even for an empty query
        if not query.strip() or top_k < 1:
            return []
        if vector is None:
            vector = self.index.query_vector(query)
        rankings: dict[str, list[str]] = {}
        dense_hits: list[ScoredChunk] = []
        bm25_hits: list[ScoredChunk] = []
        if mode in ("hybrid", "dense"):
            dense_hits = self.index.dense_search(query, self.candidates, vector=vector, chunk_ids=allowed)
            rankings["dense"] = papers_in_order(dense_hits)
        if mode in ("hybrid", "bm25"):
            bm25_hits = self.bm25_search(query, chunk_ids=allowed)
            rankings["bm25"] = papers_in_order(bm25_hits)
        fused = rrf_fuse(rankings, self.rrf_k)[:top_k]

        dense_best = {}
        for hit in dense_hits:
            dense_best.setdefault(hit.chunk.paper_id, hit.score)
        bm25_best = {}
        for hit in bm25_hits:
            bm25_best.setdefault(hit.chunk.paper_id, hit.score)
        dense_rank = {pid: r for r, pid in enumerate(rankings.get("dense", []), 1)}
        bm25_rank = {pid: r for r, pid in enumerate(rankings.get("bm25", []), 1)}

        out: list[RetrievedPaper] = []
        for paper_id, score in fused:
            paper = self.index.papers[paper_id]
            similarity = dense_best.get(paper_id)
            if similarity is None:  # found by BM25 only: measure it against the stored vectors
                ids = [c.chunk_id for c in self.index.paper_chunks(paper_id)]
                similarity = float(np.max(self.index.chunk_vectors(ids) @ vector)) if ids else 0.0
            out.append(
                RetrievedPaper(
                    paper_id=paper_id,
                    title=paper.title,
                    score=score,
                    dense_score=float(similarity),
                    bm25_score=float(bm25_best.get(paper_id, 0.0)),
                    dense_rank=dense_rank.get(paper_id),
                    bm25_rank=bm25_rank.get(paper_id),
                    files=paper.source_files,
                )
            )
        return out

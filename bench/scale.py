"""Retrieval at scale on synthetic vectors: exact FAISS against HNSW and IVF.

Embedding a million abstracts on 2 cores takes days, so the vectors are synthetic: unit vectors
of dimension 384 drawn around 2,000 random centres (a Gaussian mixture, like real embeddings,
which cluster by topic; uniformly random vectors have no neighbourhood structure and flatter
every approximate index's recall). Queries are 200 further draws from the same mixture.
Measured per size: build time, memory (serialised index size), p50/p95 latency of one query at a
time, and recall@10 against exact search.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from rag.faiss_index import make_index

DIM = 384
CENTRES = 2_000
SPREAD = 0.35  # noise scale around each centre, before normalising


def synthetic(n: int, seed: int = 0, centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around the mixture centres (made here if not given), and the centres."""
    rng = np.random.default_rng(seed)
    if centres is None:
        centres = rng.standard_normal((CENTRES, DIM)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, DIM), dtype=np.float32)
    step = 100_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        pick = rng.integers(0, len(centres), hi - lo)
        block = centres[pick] + SPREAD * rng.standard_normal((hi - lo, DIM)).astype(np.float32) / np.sqrt(DIM) * 4
        out[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, centres


def _latencies(index: Any, queries: np.ndarray, k: int) -> tuple[list[float], np.ndarray]:
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = index.search(q[None, :], k)
        times.append(time.perf_counter() - t)
        found.append(ids[0])
    return times, np.stack(found)


def measure(
    n: int, kinds: tuple[str, ...] = ("flat", "hnsw", "ivf"), queries: int = 200, k: int = 10
) -> list[dict[str, Any]]:
    """One row per index type for a collection of ``n`` synthetic vectors."""
    import faiss

    data, centres = synthetic(n, seed=1)
    qs, _ = synthetic(queries, seed=2, centres=centres)
    rows: list[dict[str, Any]] = []
    exact_ids: np.ndarray | None = None
    for kind in kinds:
        t = time.perf_counter()
        index, params = make_index(kind, DIM, data)
        index.add(data)
        build_s = time.perf_counter() - t
        index_mb = len(faiss.serialize_index(index)) / 1e6
        _latencies(index, qs[:10], k)  # warm caches
        times, ids = _latencies(index, qs, k)
        if kind == "flat":
            exact_ids = ids
        recall = None
        if exact_ids is not None:
            recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact_ids, strict=True)]))
        rows.append(
            {
                "vectors": n,
                "index": kind,
                "params": params,
                "build_s": build_s,
                "index_mb": index_mb,
                "p50_ms": float(np.percentile(times, 50) * 1000),
                "p95_ms": float(np.percentile(times, 95) * 1000),
                "recall@10": recall,
            }
        )
        del index
    return rows

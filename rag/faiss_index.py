"""FAISS index types: exact for small collections, approximate (HNSW, IVF) for large ones.

All use inner product on unit vectors (= cosine). ``choose_index_type`` picks by the number of
chunks; the choice and its search parameters are recorded in the manifest, and ``tune`` applies
them again when an index is opened.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf")
# Exact search takes ~1 ms at 10k vectors and ~22 ms at 100k (`rag bench`, 2 cores), so it is kept
# up to 50k. The approximate settings follow the recall of MiniLM embeddings of 500k pseudo-abstracts
# recombined from real sentences (issue #17's measurement; Gaussian clusters, which this benchmark
# used before, flatter IVF to recall@10 1.00): IVF (4 sqrt(n) lists) needs 128 probes for 0.97
# (16: 0.89, 64: 0.95), HNSW M 32 needs efConstruction 200 and efSearch 512 for 0.96 (efConstruction
# 40 / efSearch 64: 0.73). bench/scale.py now measures these curves on vectors mixed from the real
# chunk embeddings; README "Scale" says which of its figures were measured.
FLAT_MAX = 50_000
HNSW_MAX = 500_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 512
IVF_NPROBE = 128


def choose_index_type(requested: str, n_vectors: int) -> str:
    """The concrete type for ``requested`` ("auto" picks by collection size)."""
    if requested != "auto":
        return requested
    if n_vectors <= FLAT_MAX:
        return "flat"
    return "hnsw" if n_vectors <= HNSW_MAX else "ivf"


def ivf_lists(n_vectors: int) -> int:
    """Number of IVF lists: about 4 * sqrt(n), at least 1, and trainable (>= 39 vectors per list)."""
    return max(1, min(int(4 * math.sqrt(n_vectors)), n_vectors // 39 or 1))


def make_index(index_type: str, dimension: int, vectors: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """An empty (trained, for IVF) FAISS index of the given type, and its parameters."""
    import faiss

    if index_type == "flat":
        return faiss.IndexFlatIP(dimension), {"type": "flat"}
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index, {
            "type": "hnsw",
            "M": HNSW_M,
            "ef_construction": HNSW_EF_CONSTRUCTION,
            "ef_search": HNSW_EF_SEARCH,
        }
    if index_type == "ivf":
        nlist = ivf_lists(len(vectors))
        quantizer = faiss.IndexFlatIP(dimension)
        index = faiss.IndexIVFFlat(quantizer, dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        if len(vectors):
            index.train(np.ascontiguousarray(vectors, dtype=np.float32))
        index.nprobe = min(IVF_NPROBE, nlist)
        return index, {"type": "ivf", "nlist": nlist, "nprobe": index.nprobe}
    raise ValueError(f"unknown index type {index_type!r}; use one of {', '.join(INDEX_TYPES)}")


def tune(index: Any, params: dict[str, Any]) -> None:
    """Re-apply search parameters after loading (FAISS does not persist all of them)."""
    import faiss

    kind = params.get("type", "flat")
    if kind == "hnsw":
        index.hnsw.efSearch = int(params.get("ef_search", HNSW_EF_SEARCH))
    elif kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = int(params.get("nprobe", IVF_NPROBE))
        ivf.make_direct_map()  # so stored vectors can be read back by position

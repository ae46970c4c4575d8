"""Retrieval at scale on vectors that look like real embeddings: FAISS (exact, IVF, HNSW) and milvus-lite.

Embedding a million abstracts on 2 cores takes days, so the collection is made from the real
chunk embeddings of a built index (MiniLM, dimension 384): each synthetic vector is a random
convex mix of a real vector and a few of its nearest real neighbours, plus Gaussian noise,
re-normalised. It stays on the real embeddings' manifold (topics overlap as they do in real
data) instead of sitting in well-separated Gaussian clusters, which flatter IVF (the earlier
version of this benchmark reported recall@10 1.00 for IVF at 1M). Queries are real sentences of
the abstracts, embedded with the same model. Ground truth is exact search (numpy, inner product).

Measured per size: build time, size (serialised FAISS index / milvus-lite's data directory),
p50/p95 latency of one query at a time, and recall@10 against exact search, for each setting
swept (IVF nprobe; HNSW efConstruction x efSearch; milvus-lite FLAT and IVF_FLAT).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.faiss_index import HNSW_M, ivf_lists

DIM = 384
NEIGHBOURS = 10  # a synthetic vector mixes a real vector with up to 3 of its 10 nearest neighbours
MIX = 3
NOISE = 0.03  # per-dimension noise (real unit vectors have ~0.05 per dimension), before normalising
K = 10
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def load_base(index_dir: Path) -> np.ndarray:
    """The real chunk vectors of a built index (its embedding cache), shape (n, dim), unit length."""
    with np.load(Path(index_dir) / "embeddings.npz", allow_pickle=False) as data:
        vectors = np.asarray(data["vectors"], dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def sentences(index_dir: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences (>= 6 words) of the index's abstracts, drawn at random."""
    found: list[str] = []
    with (Path(index_dir) / "papers.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            abstract = json.loads(line).get("abstract", "")
            found += [s.strip() for s in _SENTENCE.split(abstract) if len(s.split()) >= 6]
    unique = sorted(set(found))
    rng = np.random.default_rng(seed)
    return [unique[i] for i in rng.permutation(len(unique))[:n]]


def realistic(n: int, base: np.ndarray, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors: random convex mixes of a real vector and up to ``MIX`` of its nearest
    real neighbours (Dirichlet weights), plus noise, re-normalised."""
    rng = np.random.default_rng(seed)
    sims = base @ base.T
    np.fill_diagonal(sims, -np.inf)
    near = np.argsort(-sims, axis=1)[:, :NEIGHBOURS]
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    step = 50_000
    for lo in range(0, n, step):
        m = min(n, lo + step) - lo
        anchor = rng.integers(0, len(base), m)
        pick = near[anchor[:, None], rng.integers(0, NEIGHBOURS, (m, MIX))]
        members = np.concatenate([anchor[:, None], pick], axis=1)  # (m, 1 + MIX)
        weights = rng.dirichlet(np.ones(1 + MIX), m).astype(np.float32)
        block = np.einsum("mk,mkd->md", weights, base[members])
        block += NOISE * rng.standard_normal(block.shape).astype(np.float32)
        out[lo : lo + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Ids of the exact top ``k`` by inner product, shape (len(queries), k)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for lo in range(0, len(queries), 64):
        scores = queries[lo : lo + 64] @ data.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[lo : lo + 64] = np.take_along_axis(top, order, axis=1)
    return out


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / len(b) for a, b in zip(found, exact, strict=True)]))


def _timed(search: Any, queries: np.ndarray) -> tuple[list[float], np.ndarray]:
    for q in queries[:5]:  # warm caches
        search(q)
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        ids = search(q)
        times.append(time.perf_counter() - t)
        found.append(np.pad(np.asarray(ids, dtype=np.int64)[:K], (0, max(0, K - len(ids))), constant_values=-1))
    return times, np.stack(found)


def _row(n: int, engine: str, kind: str, params: dict[str, Any], build_s: float, size_mb: float, times: list[float],
         found: np.ndarray, exact: np.ndarray) -> dict[str, Any]:  # fmt: skip
    return {
        "vectors": n,
        "engine": engine,
        "index": kind,
        "params": params,
        "build_s": build_s,
        "index_mb": size_mb,
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p95_ms": float(np.percentile(times, 95) * 1000),
        "recall@10": recall(found, exact),
    }


def _faiss_search(index: Any) -> Any:
    return lambda q: index.search(q[None, :], K)[1][0]


def measure_faiss(
    data: np.ndarray,
    queries: np.ndarray,
    exact: np.ndarray,
    *,
    nprobes: Sequence[int] = (16, 32, 64, 128),
    hnsw: Sequence[tuple[int, Sequence[int]]] = ((40, (64, 256)), (200, (64, 128, 256, 512))),
) -> list[dict[str, Any]]:
    """Rows for exact FAISS, IVF at each nprobe (one build) and HNSW at each (efConstruction, efSearch)."""
    import faiss

    n, dim = data.shape
    rows = []
    t = time.perf_counter()
    flat = faiss.IndexFlatIP(dim)
    flat.add(data)
    build = time.perf_counter() - t
    times, found = _timed(_faiss_search(flat), queries)
    rows.append(_row(n, "faiss", "flat", {}, build, len(faiss.serialize_index(flat)) / 1e6, times, found, exact))

    if nprobes:
        nlist = ivf_lists(n)
        t = time.perf_counter()
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(data)
        ivf.add(data)
        build = time.perf_counter() - t
        size = len(faiss.serialize_index(ivf)) / 1e6
        for nprobe in nprobes:
            ivf.nprobe = min(nprobe, nlist)
            times, found = _timed(_faiss_search(ivf), queries)
            rows.append(
                _row(n, "faiss", "ivf", {"nlist": nlist, "nprobe": ivf.nprobe}, build, size, times, found, exact)
            )

    for ef_construction, ef_searches in hnsw:
        t = time.perf_counter()
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(data)
        build = time.perf_counter() - t
        size = len(faiss.serialize_index(index)) / 1e6
        for ef in ef_searches:
            index.hnsw.efSearch = ef
            times, found = _timed(_faiss_search(index), queries)
            params = {"M": HNSW_M, "ef_construction": ef_construction, "ef_search": ef}
            rows.append(_row(n, "faiss", "hnsw", params, build, size, times, found, exact))
    return rows


def measure_milvus_lite(
    data: np.ndarray, queries: np.ndarray, exact: np.ndarray, *, nprobes: Sequence[int] = (32,)
) -> list[dict[str, Any]]:
    """Rows for milvus-lite (through pymilvus, as the product uses it): FLAT, and IVF_FLAT (same
    nlist as FAISS) at each nprobe. Build time includes inserting the vectors over its local gRPC."""
    from pymilvus import DataType, MilvusClient

    n, dim = data.shape
    rows = []
    work = Path(tempfile.mkdtemp(prefix="rag-bench-milvus-"))
    try:
        variants: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [("flat", {"index_type": "FLAT"}, [{}])]
        if nprobes:
            nlist = ivf_lists(n)
            variants.append(
                ("ivf", {"index_type": "IVF_FLAT", "params": {"nlist": nlist}}, [{"nprobe": p} for p in nprobes])
            )
        for kind, index_config, searches in variants:
            uri = str(work / f"{kind}.db")
            client = MilvusClient(uri)
            t = time.perf_counter()
            schema = client.create_schema(auto_id=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            params = client.prepare_index_params()
            params.add_index(field_name="vector", metric_type="IP", **index_config)
            client.create_collection("bench", schema=schema, index_params=params)
            for lo in range(0, n, 5000):
                block = data[lo : lo + 5000]
                client.insert("bench", [{"id": lo + i, "vector": v} for i, v in enumerate(block.tolist())])
            client.flush("bench")
            client.load_collection("bench")
            build = time.perf_counter() - t
            size = sum(p.stat().st_size for p in Path(uri).rglob("*") if p.is_file()) / 1e6
            for search in searches:

                def one(q: np.ndarray, search: dict[str, Any] = search, client: Any = client) -> list[int]:
                    res = client.search(
                        "bench", data=[q.tolist()], anns_field="vector", limit=K,
                        search_params={"metric_type": "IP", "params": search},
                    )  # fmt: skip
                    return [int(h["id"]) for h in res[0]]

                times, found = _timed(one, queries)
                shown = {**index_config.get("params", {}), **search}
                rows.append(_row(n, "milvus-lite", kind, shown, build, size, times, found, exact))
            client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def measure(
    n: int,
    base: np.ndarray,
    queries: np.ndarray,
    *,
    nprobes: Sequence[int] = (16, 32, 64, 128),
    hnsw: Sequence[tuple[int, Sequence[int]]] = ((40, (64, 256)), (200, (64, 128, 256, 512))),
    milvus_nprobes: Sequence[int] | None = (32,),
    seed: int = 1,
) -> list[dict[str, Any]]:
    """Every row for a collection of ``n`` realistic vectors (``milvus_nprobes`` None: no milvus-lite)."""
    data = realistic(n, base, seed=seed)
    exact = exact_top_k(data, queries)
    rows = measure_faiss(data, queries, exact, nprobes=nprobes, hnsw=hnsw)
    if milvus_nprobes is not None:
        rows += measure_milvus_lite(data, queries, exact, nprobes=milvus_nprobes)
    return rows


def real_recall(base: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """recall@10 of the default index types on the real chunk vectors alone (no synthetic ones)."""
    exact = exact_top_k(base, queries)
    rows = measure_faiss(base, queries, exact, nprobes=(16, 32, 64), hnsw=((200, (64, 128)),))
    return {f"{r['index']} {json.dumps(r['params'], sort_keys=True)}": r["recall@10"] for r in rows}

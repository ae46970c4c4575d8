"""Retrieval latency on the real index: dense, BM25 and hybrid against llama-index's default
``VectorStoreIndex.as_retriever()`` over the same index (the baseline), one query at a time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from rag.retrieve import Retriever
from rag.store import RagIndex

GOLD = Path(__file__).resolve().parents[1] / "eval" / "data" / "dev.jsonl"


def queries(limit: int = 300) -> list[str]:
    """The gold questions and simple variants of them (lower-cased, without question words,
    first half, keywords reversed): a few hundred distinct, realistic queries."""
    base = [json.loads(line)["question"] for line in GOLD.read_text(encoding="utf-8").splitlines() if line.strip()]
    out: list[str] = []
    for q in base:
        words = q.rstrip("?").split()
        out += [
            q,
            q.lower(),
            " ".join(
                w for w in words if w.lower() not in {"what", "which", "how", "does", "do", "is", "the", "a", "of"}
            ),
            " ".join(words[: max(3, len(words) // 2)]),
            " ".join(reversed(words)),
            q + " Please cite the paper.",
            "papers about " + " ".join(words[-4:]),
        ]
    return list(dict.fromkeys(out))[:limit]


def _time(fn: Any, items: list[str]) -> list[float]:
    out = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - t)
    return out


def measure(index: RagIndex, top_k: int = 4, n_queries: int = 300) -> dict[str, dict[str, float]]:
    """p50 / p95 (ms) for each method; query embedding time is included everywhere."""
    qs = queries(n_queries)
    retriever = Retriever(index)
    baseline = index.vector_index.as_retriever()  # llama-index defaults (similarity_top_k=2)
    methods = {
        "llama-index as_retriever() (baseline)": baseline.retrieve,
        "dense": lambda q: index.dense_search(q, retriever.candidates),
        "bm25": retriever.bm25_search,
        "hybrid (dense + BM25, RRF, per paper)": lambda q: retriever.search(q, top_k, "hybrid"),
    }
    for fn in methods.values():  # warm up: BM25 build, caches
        fn(qs[0])
    out: dict[str, dict[str, float]] = {}
    for name, fn in methods.items():
        times = _time(fn, qs)
        out[name] = {
            "queries": len(qs),
            "p50_ms": float(np.percentile(times, 50) * 1000),
            "p95_ms": float(np.percentile(times, 95) * 1000),
        }
    return out

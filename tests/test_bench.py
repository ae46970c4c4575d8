from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.cli import markdown
from bench.retrieval import measure as measure_retrieval
from bench.retrieval import queries
from bench.scale import measure, realistic


def _base(n: int = 60, dim: int = 24) -> np.ndarray:
    """Stand-in for real chunk embeddings: unit vectors in a few overlapping topics."""
    rng = np.random.default_rng(3)
    topics = rng.standard_normal((6, dim))
    base = topics[rng.integers(0, 6, n)] + 0.6 * rng.standard_normal((n, dim))
    return (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)


def test_realistic_vectors_are_unit_and_stay_near_the_real_ones() -> None:
    base = _base()
    data = realistic(2000, base, seed=1)
    assert data.shape == (2000, base.shape[1]) and np.allclose(np.linalg.norm(data, axis=1), 1.0, atol=1e-5)
    random = np.random.default_rng(0).standard_normal(data.shape).astype(np.float32)
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    # each vector sits among the real ones (a mix of neighbours), far closer than a random direction
    assert (data @ base.T).max(axis=1).mean() > (random @ base.T).max(axis=1).mean() + 0.3
    assert not np.allclose(realistic(10, base, seed=2), realistic(10, base, seed=3))


def test_scale_rows_compare_against_exact() -> None:
    base = _base()
    queries = realistic(25, base, seed=9)
    rows = measure(3000, base, queries, nprobes=(2, 64), hnsw=((40, (16, 64)),), milvus_nprobes=(64,))
    kinds = {(r["engine"], r["index"], r["params"].get("nprobe") or r["params"].get("ef_search")): r for r in rows}
    assert set(kinds) == {
        ("faiss", "flat", None),
        ("faiss", "ivf", 2),
        ("faiss", "ivf", 64),
        ("faiss", "hnsw", 16),
        ("faiss", "hnsw", 64),
        ("milvus-lite", "flat", None),
        ("milvus-lite", "ivf", 64),
    }
    assert kinds["faiss", "flat", None]["recall@10"] == 1.0 == kinds["milvus-lite", "flat", None]["recall@10"]
    # more probes find more of the exact neighbours; probing every list is exact
    assert kinds["faiss", "ivf", 2]["recall@10"] < kinds["faiss", "ivf", 64]["recall@10"] == 1.0
    assert all(r["p95_ms"] >= r["p50_ms"] > 0 and r["build_s"] > 0 and r["index_mb"] > 0 for r in rows)


def test_query_set_is_a_few_hundred_distinct_queries() -> None:
    qs = queries()
    assert 200 <= len(qs) <= 300 and len(set(qs)) == len(qs)


def test_retrieval_measure_on_a_small_index(fake_index) -> None:  # type: ignore[no-untyped-def]
    out = measure_retrieval(fake_index, n_queries=20)
    assert "llama-index as_retriever() (baseline)" in out and "hybrid (dense + BM25, RRF, per paper)" in out
    assert all(v["queries"] == 20 and v["p95_ms"] >= v["p50_ms"] > 0 for v in out.values())


def test_markdown_report_states_ratios() -> None:
    build = {
        "wall_s": 100.0,
        "seconds": 90.0,
        "embedded": 900,
        "peak_rss_mb": 900.0,
        "size_bytes": 6e6,
        "stage_seconds": {"embed": 80.0},
        "papers": 591,
        "chunks": 929,
        "index_type": "flat",
    }
    results = {
        "date": "2026-01-01",
        "machine": "test",
        "build": {
            "cold": build,
            "warm": {**build, "wall_s": 4.0, "embedded": 0},
            "add_10_papers": {**build, "wall_s": 10.0, "embedded": 16},
        },
        "scale": [
            {
                "vectors": 1000,
                "index": "flat",
                "build_s": 0.1,
                "index_mb": 1.5,
                "p50_ms": 2.0,
                "p95_ms": 3.0,
                "recall@10": 1.0,
            },
            {
                "vectors": 1000,
                "index": "hnsw",
                "build_s": 0.5,
                "index_mb": 2.0,
                "p50_ms": 0.5,
                "p95_ms": 0.8,
                "recall@10": 0.97,
            },
        ],
    }
    md = markdown(results)
    assert "| warm (no change) | 4.0 | 0 |" in md and "0.040x" in md
    assert "| 1,000 | faiss | hnsw |  | 0.5 | 2 | 0.50 | 0.80 | 0.970 | 0.250x |" in md


def test_load_report_counts_and_ratio() -> None:
    from bench.load import LoadQuestion, LoadReport, RequestResult, judge

    report = LoadReport(clients=2, duration_s=60.0)
    report.results = [
        RequestResult(0, "q", "answered", 10.0),
        RequestResult(1, "q", "answered", 20.0),
        RequestResult(1, "q", "rejected", 0.1, "queue is full"),
        RequestResult(0, "q", "mixed_up", 12.0, "cites a stranger"),
    ]
    summary = report.to_dict()
    assert (summary["requests"], summary["answered"], summary["rejected_queue_full"], summary["mixed_up"]) == (
        4,
        2,
        1,
        1,
    )
    assert summary["latency_p50_s"] == 15.0 and summary["throughput_per_min"] == 2.0

    evidence = '<div class="ev-title">Tiny Owls</div><div class="ev-title">Lunar &amp; Lattices</div>'
    ok = ([], evidence, "1/1 sentences verified", "Fact [1].\n\nReferences:\n[1] Lunar & Lattices (a.txt)", "")
    stranger = ([], evidence, "done", "Fact [1].\n\nReferences:\n[1] Echo Chambers (b.txt)", "")
    assert judge(LoadQuestion("q", "Lunar & Lattices"), ok) == ("answered", "")
    assert judge(LoadQuestion("q"), stranger)[0] == "mixed_up"
    assert judge(LoadQuestion("q", "Tiny Owls"), ok)[0] == "mixed_up"
    assert judge(LoadQuestion("q"), ([{"content": "⚠️ boom"}], "", "error", "", ""))[0] == "error"

    results = {
        "date": "2026-01-01",
        "machine": "test",
        "load": {"model": "m", "one_client": {**summary, "clients": 1}, "many_clients": summary, "p50_ratio": 3.0},
    }
    assert "| 2 | 60 | 4 | 2 |" in markdown(results) and "3.00x" in markdown(results)


def test_api_latency_is_measured_beside_ask_in_process(fake_index) -> None:  # type: ignore[no-untyped-def]
    from bench.api import markdown as api_markdown
    from bench.api import measure as measure_api
    from bench.api import quote_first_source
    from rag.answer import Answerer
    from rag.llm import FakeGenerator

    answerer = Answerer(
        {"min_relevance": 0.05, "top_k": 3}, index=fake_index, generator=FakeGenerator(quote_first_source)
    )
    questions = ["How many thermal images are in OwlSet?", "What halves echo chambers?", "What are quantum widgets?"]
    out = measure_api(answerer, questions)
    assert out["questions"] == 3 and out["all_answers_identical"]
    assert all(row["in_process"] > 0 and row["api_ask"] > 0 and row["api_stream"] > 0 for row in out["rows"])
    assert "POST /api/ask" in api_markdown(out, "fake") and "api_ask_added_ms" in out


def test_arxiv_import_bench_generates_and_parses(tmp_path: Path) -> None:
    from bench.arxiv_import import generate, parse

    path = tmp_path / "arxiv.jsonl"
    generate(path, 300)
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert {"id", "title", "abstract", "categories", "authors_parsed", "versions", "update_date"} <= set(first)
    every = parse(path, [], None, trace=True)
    assert every["entries"] == every["papers"] == 300 and every["problems"] == 0
    assert float(every["python_heap_peak_mb"]) > 0  # type: ignore[arg-type]
    some = parse(path, ["cs.LG"], 20, trace=False)
    assert some["entries"] == 20


def test_llama_server_slots_options_command_and_ratios() -> None:
    import argparse

    import pytest

    from bench.llm_server import llama_server_cmd, markdown_parallel, parse_parallel, with_ratios

    assert parse_parallel("1,4") == [1, 4] and parse_parallel("2") == [2]
    for bad in ("", "0,4", "1,1", "one"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_parallel(bad)
    cmd = llama_server_cmd(
        Path("/x/llama-server"), Path("/m.gguf"), "m", port=9, parallel=4, n_threads=2, ctx_per_slot=2048
    )
    assert cmd[cmd.index("--parallel") + 1] == "4" and cmd[cmd.index("--ctx-size") + 1] == "8192"
    assert cmd[cmd.index("--alias") + 1] == "m" and cmd[cmd.index("--host") + 1] == "127.0.0.1"

    def run(p50: float, p95: float, per_min: float) -> dict[str, object]:
        return {
            "clients": 8,
            "complete": 8,
            "incomplete": 0,
            "errors": 0,
            "latency_p50_s": p50,
            "latency_p95_s": p95,
            "complete_per_min": per_min,
            "error_messages": [],
            "command": "llama-server ...",
        }

    runs = with_ratios({"1": run(40.0, 80.0, 6.0), "4": run(30.0, 50.0, 9.0)})
    assert runs["1"]["complete_per_min_ratio"] == 1.0 and runs["4"]["complete_per_min_ratio"] == 1.5
    md = markdown_parallel(
        {"date": "2026-01-01", "model": "m", "machine": "test", "threads": 2, "llama_server": {"runs": runs}}
    )
    assert "| 4 | 8 | 8 | 0 | 0 | 30.0 | 50.0 | 9.00 | 0.75x | 0.62x | 1.50x |" in md

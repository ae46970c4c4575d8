"""The HTTP API's added latency over ``ask()`` in-process, measured in the same run.

The server is what ``rag ui`` serves (chat app and API on one FastAPI app, uvicorn), started in
this process on a loopback port and sharing the ``Answerer`` that answers in-process. Each
question is asked three ways, in an order that rotates from one question to the next so that
warm caches favour none: ``Answerer.ask()``, ``POST /api/ask`` and ``POST /api/ask/stream`` (read
to its ``answer`` event). A warm-up pass over every question comes first. The added latency is
reported as p50(API) - p50(in-process) and as the median of the per-question differences.

``--fake`` (what CI and a busy machine can afford): the bundled corpus indexed with the hashing
embedder in a temporary directory and a fake model that quotes its first source, so the figure
is the API's own cost (HTTP, JSON, validation, the queue, thread hops) beside a short pipeline
run; with the real models the same cost sits beside seconds of generation.

Run: ``python -m bench.api --fake [--questions 20] [--out FILE.json]``, or without ``--fake`` to
use the built index and the configured model.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.answering import load_questions
from rag.answer import Answerer
from rag.config import BUNDLED_CORPUS, get_config
from rag.llm import FakeGenerator, Message

# Four more questions about bundled papers, so that 20 distinct questions are asked.
EXTRA_QUESTIONS = [
    "What does ResNeSt apply to different network branches?",
    "How does Detic detect twenty thousand classes?",
    "Which tasks did the SS3 text classifier reach state-of-the-art performance on?",
    "What test accuracy on EuroSAT does balanced multi-task attention reach without pre-training?",
]
WAYS = ("in_process", "api_ask", "api_stream")


def quote_first_source(messages: Sequence[Message]) -> str:
    """A fake model's answer: the first sentence of source [1], cited, so verification passes."""
    user = messages[-1]["content"]
    lines = user.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("[1] ") and i + 1 < len(lines):
            sentence = lines[i + 1].split(". ")[0].rstrip(".")
            return f"{sentence} [1]."
    return "The sources do not answer this question."


def fake_answerer(work: Path) -> Answerer:
    """The bundled corpus, indexed with the hashing embedder, and the fake model."""
    from index_build.build import build_index
    from rag.models import HashEmbedder
    from rag.store import open_index

    embedder = HashEmbedder(dimension=384, max_tokens=256)
    # A low relevance threshold: hashed vectors score lower than MiniLM, and refusing before the
    # model would skip the stages the API wraps.
    cfg = get_config(
        {"index_dir": work / "index", "corpus": [BUNDLED_CORPUS], "progress": False, "min_relevance": 0.05}
    )
    build_index(cfg, embedder=embedder)
    return Answerer(cfg, index=open_index(cfg.index_dir, embedder), generator=FakeGenerator(quote_first_source))


def serve(app: Any) -> tuple[str, Callable[[], None]]:
    """Serve an ASGI app on a free loopback port in a thread; returns (url, stop)."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(15)

    return f"http://127.0.0.1:{port}/", stop


def measure(answerer: Answerer, questions: Sequence[str]) -> dict[str, Any]:
    """Seconds per question for each way of asking, after a warm-up pass."""
    import httpx

    from ui.server import create_app

    url, stop = serve(create_app(answerer.config, lambda model: answerer, host="127.0.0.1"))
    try:
        with httpx.Client(base_url=url, timeout=600) as http:

            def in_process(q: str) -> dict[str, Any]:
                return answerer.ask(q).to_dict()

            def api_ask(q: str) -> dict[str, Any]:
                response = http.post("api/ask", json={"question": q})
                response.raise_for_status()
                return dict(response.json())

            def api_stream(q: str) -> dict[str, Any]:
                kind, answer = "", None
                with http.stream("POST", "api/ask/stream", json={"question": q}) as response:
                    response.raise_for_status()
                    for line in response.iter_lines():
                        if line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: ") and kind == "answer":
                            answer = json.loads(line[6:])
                if answer is None:
                    raise RuntimeError(f"no answer event for {q!r}")
                return dict(answer)

            calls = {"in_process": in_process, "api_ask": api_ask, "api_stream": api_stream}
            for q in questions:  # warm-up: models, BM25, caches, connections
                for call in calls.values():
                    call(q)
            rows: list[dict[str, Any]] = []
            for i, q in enumerate(questions):
                order = WAYS[i % 3 :] + WAYS[: i % 3]
                row: dict[str, Any] = {"question": q}
                texts = set()
                for way in order:
                    t = time.perf_counter()
                    answer = calls[way](q)
                    row[way] = time.perf_counter() - t
                    texts.add(answer["text"])
                row["same_answer"] = len(texts) == 1
                rows.append(row)
    finally:
        stop()
    return summarize(rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    p50 = {way: statistics.median(r[way] for r in rows) for way in WAYS}
    out: dict[str, Any] = {
        "questions": len(rows),
        "p50_ms": {way: round(v * 1000, 2) for way, v in p50.items()},
        "all_answers_identical": all(r["same_answer"] for r in rows),
        "rows": rows,
    }
    for way in ("api_ask", "api_stream"):
        diffs = [r[way] - r["in_process"] for r in rows]
        out[f"{way}_added_ms"] = {
            "p50_difference": round((p50[way] - p50["in_process"]) * 1000, 2),
            "median_of_paired_differences": round(statistics.median(diffs) * 1000, 2),
            "ratio_of_p50s": round(p50[way] / p50["in_process"], 3),
        }
    return out


def markdown(summary: dict[str, Any], label: str) -> str:
    p = summary["p50_ms"]
    lines = [
        f"{label}; {summary['questions']} questions, p50 in ms, same run.",
        "",
        "| way | p50 (ms) | added vs ask() (p50 difference) | median paired difference | ratio |",
        "|---|---|---|---|---|",
        f"| ask() in-process | {p['in_process']:.1f} | - | - | 1.000x |",
    ]
    for way, name in (("api_ask", "POST /api/ask"), ("api_stream", "POST /api/ask/stream (to the answer event)")):
        a = summary[f"{way}_added_ms"]
        lines.append(
            f"| {name} | {p[way]:.1f} | {a['p50_difference']:+.1f} | {a['median_of_paired_differences']:+.1f} | "
            f"{a['ratio_of_p50s']:.3f}x |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.splitlines()[0])
    parser.add_argument("--fake", action="store_true", help="hashing embedder and fake model (no real models)")
    parser.add_argument("--questions", type=int, default=20, help="how many questions (default 20)")
    parser.add_argument("--index", type=Path, default=None, help="index directory (without --fake)")
    parser.add_argument("--model", default=None, help="model name (without --fake)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    questions = ([q["question"] for q in load_questions()] + EXTRA_QUESTIONS)[: args.questions]
    work = Path(tempfile.mkdtemp(prefix="rag-bench-api-"))
    try:
        if args.fake:
            answerer = fake_answerer(work)
            label = "Fake model, bundled corpus with the hashing embedder"
        else:
            fields = {k: v for k, v in (("index_dir", args.index), ("model", args.model)) if v is not None}
            answerer = Answerer(get_config(fields))
            label = f"Model {answerer.config.model}, index {answerer.config.index_dir}"
        summary = measure(answerer, questions)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["label"] = label
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(markdown(summary, label))
    if not summary["all_answers_identical"]:
        print("warning: the ways of asking gave different answers to some question", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load test of the chat app: N clients on localhost ask questions in turn for a bounded time.

Each client has its own Gradio session (as a browser tab would) and calls the app's ``/ask``
endpoint, the same handler the page uses. A request counts as

* answered: an answer or a refusal came back, and every paper it cites is one that *its own*
  question retrieved (shown in its own evidence panel); when the question names the paper
  it should cite, that paper is cited;
* mixed up: it cites a paper its own question did not retrieve (another session's answer);
* rejected: the queue was full and the client was told so (polite, counted apart);
* error: anything else (an exception, an error status, a timeout).
"""

from __future__ import annotations

import html
import logging
import re
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

_REFERENCE = re.compile(r"^\[(\d+)\] (.+) \([^()]*\)$", re.MULTILINE)
_EVIDENCE_TITLE = re.compile(r'<div class="ev-title">(.*?)</div>', re.DOTALL)


@dataclass(frozen=True, slots=True)
class LoadQuestion:
    """A question and, optionally, the title of the paper a right answer cites."""

    question: str
    expect_title: str | None = None


@dataclass(slots=True)
class RequestResult:
    client: int
    question: str
    outcome: str  # answered | refused | rejected | mixed_up | error
    latency_s: float
    detail: str = ""


@dataclass(slots=True)
class LoadReport:
    clients: int
    duration_s: float
    results: list[RequestResult] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        done = sorted(r.latency_s for r in self.results if r.outcome in ("answered", "refused"))
        return {
            "clients": self.clients,
            "duration_s": round(self.duration_s, 1),
            "requests": len(self.results),
            "answered": self.count("answered"),
            "refused": self.count("refused"),
            "rejected_queue_full": self.count("rejected"),
            "mixed_up": self.count("mixed_up"),
            "errors": self.count("error"),
            "latency_p50_s": round(_percentile(done, 50), 2) if done else None,
            "latency_p95_s": round(_percentile(done, 95), 2) if done else None,
            "latency_max_s": round(done[-1], 2) if done else None,
            "throughput_per_min": round(len(done) / self.duration_s * 60, 2) if self.duration_s else None,
            "problems": [f"client {r.client}: {r.outcome}: {r.detail}" for r in self.results if r.detail][:20],
        }


def _percentile(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])


def judge(question: LoadQuestion, outputs: Sequence[Any]) -> tuple[str, str]:
    """Classify one ``/ask`` result: (outcome, detail)."""
    _chat, evidence, status, copy_text, _box = outputs
    if str(status).startswith("error"):
        chat = outputs[0] or [{}]
        return "error", str(chat[-1].get("content", ""))[:200]
    retrieved = {html.unescape(t).strip() for t in _EVIDENCE_TITLE.findall(str(evidence))}
    cited = [title.strip() for _, title in _REFERENCE.findall(str(copy_text))]
    strangers = [t for t in cited if t not in retrieved]
    if strangers:
        return "mixed_up", f"{question.question[:50]!r} cites {strangers[0][:60]!r}, which it did not retrieve"
    if not cited:
        return "refused", ""
    if question.expect_title and question.expect_title not in cited:
        return "mixed_up", f"{question.question[:50]!r} should cite {question.expect_title[:60]!r}, cites {cited}"
    return "answered", ""


def run_load(
    url: str,
    questions: Sequence[LoadQuestion],
    *,
    clients: int = 8,
    duration_s: float = 60.0,
    request_timeout_s: float = 600.0,
    settings: tuple[int, str, bool, str] | None = None,
) -> LoadReport:
    """``clients`` sessions ask ``questions`` round-robin until ``duration_s`` has passed; each
    request already sent is waited for. ``settings``: (top_k, mode, strict, model) of every request."""
    from gradio_client import Client

    report = LoadReport(clients=clients, duration_s=0.0)
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + duration_s

    def client_loop(index: int) -> None:
        client = Client(url, verbose=False, download_files=False)
        extra = settings or ()
        i = index
        first = True
        while first or time.perf_counter() < deadline:  # every client asks at least once
            first = False
            q = questions[i % len(questions)]
            i += 1
            t = time.perf_counter()
            try:
                job = (
                    client.submit(q.question, [], *extra, api_name="/ask")
                    if extra
                    else client.submit(q.question, [], api_name="/ask")
                )
                outcome, detail = judge(q, job.result(timeout=request_timeout_s))
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the test
                text = str(exc) or type(exc).__name__
                outcome, detail = ("rejected", text[:120]) if "queue is full" in text.lower() else ("error", text[:200])
                if outcome == "error":
                    logger.warning("client %d: %s", index, text[:200])
            with lock:
                report.results.append(RequestResult(index, q.question, outcome, time.perf_counter() - t, detail))

    threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration_s + request_timeout_s + 60)
    report.duration_s = time.perf_counter() - start
    return report


def bench_load(
    index_dir: Any, model: str, *, clients: int = 8, duration_s: float = 180.0, baseline_requests: int = 3
) -> dict[str, Any]:
    """The chat app with a real model: one client asking in turn (the baseline), then ``clients``
    at once for ``duration_s``, in the same process and run. Returns both summaries and the
    ratio of their median latencies (requests queue for the one model, so expect ~clients x)."""
    import json
    from pathlib import Path

    from rag.config import get_config

    questions = [
        LoadQuestion(json.loads(line)["question"])
        for line in (Path(__file__).parent / "data" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    cfg = get_config({"index_dir": index_dir, "model": model})
    return {"model": model, **one_against_many(cfg, questions, clients, duration_s, baseline_requests)}


def one_against_many(
    cfg: Any, questions: Sequence[LoadQuestion], clients: int, duration_s: float, baseline_requests: int
) -> dict[str, Any]:
    """The chat app on loopback with ``cfg``'s model, warm: ``baseline_requests`` questions from
    one client asking in turn (the baseline), then ``clients`` at once for ``duration_s``.
    Returns both summaries and the ratio of their median latencies."""
    from ui.app import CSS, build_app, default_factory

    factory = default_factory(cfg)
    factory(cfg.model).warm_up()
    app = build_app(cfg, factory, models=[cfg.model])
    app.queue(max_size=32, default_concurrency_limit=1)
    _, url, _ = app.launch(server_name="127.0.0.1", prevent_thread_lock=True, share=False, css=CSS, quiet=True)
    try:
        one = LoadReport(clients=1, duration_s=0.0)  # the baseline: one client, one question at a time
        t = time.perf_counter()
        for q in questions[:baseline_requests]:
            one.results += run_load(url, [q], clients=1, duration_s=0.0).results
        one.duration_s = time.perf_counter() - t
        many = run_load(url, questions, clients=clients, duration_s=duration_s)
    finally:
        app.close()
    base, load = one.to_dict(), many.to_dict()
    ratio = load["latency_p50_s"] / base["latency_p50_s"] if load["latency_p50_s"] and base["latency_p50_s"] else None
    return {"one_client": base, "many_clients": load, "p50_ratio": ratio}

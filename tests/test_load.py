"""The chat app, the HTTP API and the Answerer under 8 concurrent clients on localhost: every
request is answered in order or politely rejected, with no errors and no answers mixed up between
sessions, and chat and API requests share one queue in front of one model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from servers import SlowFake, serve, serve_asgi

from bench.load import LoadQuestion, run_load
from rag.answer import Answerer
from rag.llm import FakeGenerator, Message

# Each question, the paper a right answer cites, and what the fake model answers to it.
CASES = {
    "How many thermal images of animals at night are in OwlSet?": (
        "Tiny Owls: Nocturnal Object Detection with Thermal Cameras",
        "OwlSet has 12,000 thermal images of animals at night [1].",
    ),
    "What precision does the lunar lattice graph network reach on contact maps?": (
        "Lunar Lattices for Protein Folding",
        "A graph network predicts contact maps with 88% precision on a lunar lattice [1].",
    ),
    "What halves the size of echo chambers in recommender systems?": (
        "Echo Chambers in Recommender Systems",
        "Diversity-aware re-ranking halves the size of echo chambers [1].",
    ),
    "How much memory do quantum widgets save over BM25?": (
        "Quantum Widgets for Sparse Retrieval",
        "Quantum widgets use half the memory of BM25 [1].",
    ),
}


def reply(messages: Sequence[Message]) -> str:
    """Answer the question in the prompt, citing whichever source number holds its paper."""
    user = messages[-1]["content"]
    question = user.split("Question:")[1].split("\n")[0].strip()
    title, answer = CASES[question]
    for line in user.splitlines():
        if line.startswith("[") and title in line:
            return answer.replace("[1]", line.split("]")[0] + "]")
    return "The sources do not answer this question."


@pytest.fixture
def index(small_corpus: Path, tmp_path: Path, fake_embedder):  # type: ignore[no-untyped-def]
    from index_build.build import build_index
    from rag.config import get_config
    from rag.store import open_index

    cfg = get_config({"index_dir": tmp_path / "index", "corpus": [small_corpus], "progress": False})
    build_index(cfg, embedder=fake_embedder)
    return cfg, open_index(cfg.index_dir, fake_embedder)


def full_titles(index) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The corpus titles that the CASES titles start with (some are longer in the corpus)."""
    _, opened = index
    titles = [p.title for p in opened.papers.values()]
    return {short: next(t for t in titles if t.startswith(short)) for short, _ in CASES.values()}


@pytest.fixture
def app_url(index) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from ui.app import build_app

    cfg, opened = index
    cfg = cfg.replace(min_relevance=0.05, top_k=3)
    answerer = Answerer(cfg, index=opened, generator=SlowFake(reply, delay_s=0.01))
    url, app = serve(build_app(cfg, lambda model: answerer, models=["fake"]))
    yield url
    app.close()


def test_eight_clients_on_the_app_get_their_own_answers(app_url: str, index) -> None:  # type: ignore[no-untyped-def]
    titles = full_titles(index)
    questions = [LoadQuestion(q, titles[t]) for q, (t, _) in CASES.items()]
    report = run_load(app_url, questions, clients=8, duration_s=20, request_timeout_s=120)
    summary = report.to_dict()
    assert summary["errors"] == 0 and summary["mixed_up"] == 0, summary["problems"]
    assert summary["answered"] >= 16, summary  # every client got answers, not one request each
    assert {r.client for r in report.results if r.outcome == "answered"} == set(range(8))
    assert summary["rejected_queue_full"] == 0  # 8 clients fit in the queue (max 32)


def test_full_queue_is_a_polite_rejection(index) -> None:  # type: ignore[no-untyped-def]
    """More waiting requests than the queue holds: the extra ones are told so, none fails."""
    from ui.app import build_app
    from ui.gate import ModelQueue

    cfg, opened = index
    cfg = cfg.replace(min_relevance=0.05, top_k=3)
    answerer = Answerer(cfg, index=opened, generator=SlowFake(reply, delay_s=0.2))
    url, app = serve(build_app(cfg, lambda model: answerer, models=["fake"], queue=ModelQueue(max_waiting=2)))
    try:
        titles = full_titles(index)
        questions = [LoadQuestion(q, titles[t]) for q, (t, _) in CASES.items()]
        report = run_load(url, questions, clients=8, duration_s=3, request_timeout_s=120)
    finally:
        app.close()
    summary = report.to_dict()
    assert summary["errors"] == 0 and summary["mixed_up"] == 0, summary["problems"]
    assert summary["rejected_queue_full"] >= 1 and summary["answered"] >= 1, summary


def test_eight_threads_on_one_answerer(index) -> None:  # type: ignore[no-untyped-def]
    """The Python API under the same load: calls queue on the model lock, none is mixed up."""
    cfg, opened = index
    titles = full_titles(index)
    answerer = Answerer(cfg.replace(min_relevance=0.05, top_k=3), index=opened, generator=FakeGenerator(reply))
    failures: list[str] = []
    done: list[float] = []
    deadline = time.perf_counter() + 5

    def client(n: int) -> None:
        items = list(CASES.items())
        i = n
        while time.perf_counter() < deadline:
            question, (title, _) = items[i % len(items)]
            i += 1
            t = time.perf_counter()
            try:
                answer = answerer.ask(question)
            except Exception as exc:  # noqa: BLE001
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            cited = [c.title for c in answer.citations]
            retrieved = {r.title for r in answer.retrieved}
            if answer.question != question or cited != [titles[title]] or not set(cited) <= retrieved:
                failures.append(f"{question!r} -> {cited}")
            done.append(time.perf_counter() - t)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:5]
    assert len(done) >= 40


class CountingFake(SlowFake):
    """Counts generations running at once (there must never be two)."""

    def __init__(self, reply, delay_s: float) -> None:  # type: ignore[no-untyped-def]
        super().__init__(reply, delay_s=delay_s)
        self.active = 0
        self.most = 0
        self.count_lock = threading.Lock()

    def stream(self, messages: Sequence[Message], *, max_tokens: int) -> Iterator[str]:
        with self.count_lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            yield from super().stream(messages, max_tokens=max_tokens)
        finally:
            with self.count_lock:
                self.active -= 1


def test_eight_clients_mixing_chat_and_api_share_one_queue(index) -> None:  # type: ignore[no-untyped-def]
    """4 chat sessions and 4 API clients (2 plain, 2 streaming) on one server: each gets its own
    answers, none is lost, and the model never runs two requests at once."""
    from ui.gate import ModelQueue
    from ui.server import create_app

    cfg, opened = index
    cfg = cfg.replace(min_relevance=0.05, top_k=3)
    model = CountingFake(reply, delay_s=0.01)
    answerer = Answerer(cfg, index=opened, generator=model)
    queue = ModelQueue()
    url, stop = serve_asgi(create_app(cfg, lambda name: answerer, models=["fake"], queue=queue, host="127.0.0.1"))
    titles = full_titles(index)
    items = list(CASES.items())
    api: list[tuple[int, str]] = []  # (client, problem or "")
    sent = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + 8

    def api_client(n: int) -> None:
        i, first = n, True
        with httpx.Client(base_url=url, timeout=120) as http:
            while first or time.perf_counter() < deadline:
                first = False
                question, (title, _) = items[i % len(items)]
                i += 1
                with lock:
                    sent[0] += 1
                try:
                    if n % 2:
                        with http.stream("POST", "api/ask/stream", json={"question": question}) as response:
                            kinds, answer = [], None
                            for line in response.iter_lines():
                                if line.startswith("event: "):
                                    kinds.append(line[7:])
                                elif line.startswith("data: ") and kinds[-1] == "answer":
                                    answer = json.loads(line[6:])
                        waited = kinds.count("queued")  # they come first, while the request waits
                        assert kinds[waited] == "evidence" and kinds[-1] == "answer", kinds
                        assert set(kinds[waited + 1 : -1]) <= {"progress", "token", "sentence"}, kinds
                    else:
                        response = http.post("api/ask", json={"question": question})
                        assert response.status_code == 200, response.text
                        answer = response.json()
                    assert answer is not None
                    cited = [c["title"] for c in answer["citations"]]
                    retrieved = {r["title"] for r in answer["retrieved"]}
                    ok = answer["question"] == question and cited == [titles[title]] and set(cited) <= retrieved
                    problem = "" if ok else f"{question!r} -> {cited}"
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    problem = f"{type(exc).__name__}: {exc}"
                with lock:
                    api.append((n, problem))

    threads = [threading.Thread(target=api_client, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        questions = [LoadQuestion(q, titles[t]) for q, (t, _) in CASES.items()]
        chat = run_load(url, questions, clients=4, duration_s=8, request_timeout_s=120).to_dict()
        for t in threads:
            t.join(120)
    finally:
        stop()
    problems = [p for _, p in api if p]
    assert not problems, problems[:5]
    assert len(api) == sent[0] and {n for n, _ in api} == set(range(4))  # none lost, every client answered
    assert chat["errors"] == 0 and chat["mixed_up"] == 0 and chat["rejected_queue_full"] == 0, chat["problems"]
    assert chat["answered"] >= 4, chat
    assert model.most == 1  # one generation at a time, chat and API together
    # Every chat message and API call took its turn in the one queue.
    assert queue.snapshot()["served"] == chat["requests"] + len(api)

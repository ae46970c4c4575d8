"""The HTTP API with FastAPI's TestClient and the fake generator: every endpoint, its errors,
the order of the streamed events, the safety rules, and `rag ui` / `rag serve` serving it."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

import rag.answer
import rag.cli
from rag.answer import Answerer
from rag.config import RETRIEVAL_MODES, get_config
from rag.errors import ConfigError
from rag.llm import FakeGenerator, Message
from rag.types import AnswerSentence
from ui.api import event_payload
from ui.gate import ModelQueue
from ui.schemas import (
    AnswerOut,
    ErrorEventOut,
    EvidenceEventOut,
    Mode,
    PaperOut,
    ProgressEventOut,
    QueuedEvent,
    RetrievedPaperOut,
    SentenceEventOut,
    TokenEventOut,
)
from ui.server import Credentials, check_bind, create_app, credentials_from

OWL_Q = "How many thermal images of animals at night are in OwlSet?"
ECHO_Q = "What halves the size of echo chambers in recommender systems?"
ANSWERS = {  # a word of the question -> (title the right answer cites, the fake model's answer)
    "OwlSet": ("Tiny Owls", "OwlSet has 12,000 thermal images of animals at night [1]."),
    "echo": ("Echo Chambers", "Diversity-aware re-ranking halves the size of echo chambers [1]."),
}
CONFIG = {"min_relevance": 0.05, "top_k": 3}


def reply(messages: Sequence[Message]) -> str:
    """A fake model: answers the questions of ANSWERS citing the source that holds the right paper,
    and rewrites follow-ups by naming OwlSet."""
    user = messages[-1]["content"]
    if "Follow-up question:" in user:
        return "How large is OwlSet?"
    question = user.split("Question:")[1].split("\n")[0]
    for word, (title, answer) in ANSWERS.items():
        if word in question:
            for line in user.splitlines():
                if line.startswith("[") and title in line:
                    return answer.replace("[1]", line.split("]")[0] + "]")
    return "The sources do not answer this question."


@pytest.fixture
def answerer(fake_index) -> Answerer:  # type: ignore[no-untyped-def]
    return Answerer(CONFIG, index=fake_index, generator=FakeGenerator(reply))


@pytest.fixture
def client(answerer: Answerer) -> Iterator[TestClient]:
    app = create_app(answerer.config, lambda model: answerer, chat=False, host=None)
    with TestClient(app) as c:
        yield c


def read_events(response: Any) -> list[tuple[str, int, Any]]:
    """(event type, id, data) of each server-sent event; comments skipped."""
    events = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields:
            events.append((fields["event"], int(fields["id"]), json.loads(fields["data"])))
    return events


def without_timings(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "timings"}


# -- ask ------------------------------------------------------------------------------------------------
def test_ask_returns_the_verified_answer(client: TestClient, answerer: Answerer) -> None:
    response = client.post("/api/ask", json={"question": OWL_Q})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["text"] == "OwlSet has 12,000 thermal images of animals at night [1]."
    assert not data["refused"] and data["refusal_reason"] is None
    cited = data["citations"][0]
    assert cited["n"] == 1 and cited["title"].startswith("Tiny Owls") and cited["paper_id"]
    assert cited["evidence"] and "12,000" in cited["evidence"][0]
    assert data["sentences"][0]["supported"] is True and data["model"] == "fake-llm"
    assert {"retrieve", "first_token", "total"} <= set(data["timings"])
    # The same as ask() in-process, field for field (timings aside).
    assert without_timings(data) == without_timings(answerer.ask(OWL_Q).to_dict())


def test_ask_passes_settings_and_refuses_off_topic_questions(client: TestClient) -> None:
    data = client.post("/api/ask", json={"question": OWL_Q, "top_k": 1, "mode": "bm25", "strict": True}).json()
    assert len(data["sources"]) == 1 and data["retrieved"][0]["bm25_rank"] == 1
    refused = client.post("/api/ask", json={"question": "What does the AlphaFold 3 paper say about ligands?"}).json()
    assert refused["refused"] and refused["refusal_reason"] and not refused["citations"]


def test_follow_up_uses_the_history(client: TestClient) -> None:
    first = client.post("/api/ask", json={"question": OWL_Q}).json()
    follow = client.post(
        "/api/ask",
        json={"question": "How large is it?", "history": [{"question": OWL_Q, "answer": first["text"]}]},
    ).json()
    assert follow["standalone_question"] == "How large is OwlSet?"
    assert follow["question"] == "How large is it?"


def test_response_models_mirror_the_records(client: TestClient, answerer: Answerer, fake_index) -> None:  # type: ignore[no-untyped-def]
    """The OpenAPI page documents every field the records send, and nothing they do not."""

    def same_fields(model: type[BaseModel], data: dict[str, Any], where: str) -> None:
        assert set(model.model_fields) == set(data), f"{where}: {set(model.model_fields) ^ set(data)}"
        for name, field in model.model_fields.items():
            inner = getattr(field.annotation, "__args__", (field.annotation,))[0]
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                for item in data[name] if isinstance(data[name], list) else [data[name]]:
                    same_fields(inner, item, f"{where}.{name}")

    answer = answerer.ask(OWL_Q).to_dict()
    assert answer["citations"] and answer["sentences"] and answer["sources"] and answer["retrieved"]
    same_fields(AnswerOut, answer, "Answer")
    paper = next(iter(fake_index.papers.values())).to_dict()
    same_fields(PaperOut, paper, "Paper")
    spec = client.get("/openapi.json").json()
    assert spec["paths"]["/api/ask"]["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AnswerOut"
    }
    assert set(Mode.__args__) == set(RETRIEVAL_MODES)  # type: ignore[attr-defined]


# -- stream ------------------------------------------------------------------------------------------------
def test_stream_sends_evidence_tokens_then_the_answer(client: TestClient) -> None:
    with client.stream("POST", "/api/ask/stream", json={"question": OWL_Q}) as response:
        response.read()
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = read_events(response)
    kinds = [kind for kind, _, _ in events]
    assert kinds[:2] == ["evidence", "progress"] and kinds[-1] == "answer", kinds
    assert set(kinds[2:-1]) == {"token", "sentence"}, kinds
    assert [n for _, n, _ in events] == list(range(1, len(events) + 1))
    evidence, answer = events[0][2], events[-1][2]
    EvidenceEventOut.model_validate(evidence)
    AnswerOut.model_validate(answer)
    progress = ProgressEventOut.model_validate(events[1][2])
    assert progress.prompt_tokens == answer["prompt_tokens"] and progress.text.startswith("reading ")
    sentences = [SentenceEventOut.model_validate(data) for kind, _, data in events if kind == "sentence"]
    # The verified sentences are the answer's, in its final form, with the papers they cite.
    assert [s.text for s in sentences] == [s["shown"] for s in answer["sentences"]]
    assert [c.paper_id for s in sentences for c in s.cited] == [c["paper_id"] for c in answer["citations"]]
    for kind, _, data in events[2:-1]:
        if kind == "token":
            TokenEventOut.model_validate(data)
    assert evidence["sources"] and evidence["sources"][0]["sentences"]
    tokens = "".join(data["text"] for kind, _, data in events[2:-1] if kind == "token")
    assert tokens.strip() == answer["raw_text"]
    assert {c["paper_id"] for c in answer["citations"]} <= {s["paper_id"] for s in evidence["sources"]}
    plain = client.post("/api/ask", json={"question": OWL_Q}).json()
    assert without_timings(answer) == without_timings(plain)


def test_stream_of_a_refusal_before_the_model_has_no_tokens(fake_index) -> None:  # type: ignore[no-untyped-def]
    picky = Answerer({**CONFIG, "min_relevance": 0.99}, index=fake_index, generator=FakeGenerator(reply))
    app = create_app(picky.config, lambda model: picky, chat=False, host=None)
    with TestClient(app) as client, client.stream("POST", "/api/ask/stream", json={"question": OWL_Q}) as r:
        r.read()
    events = read_events(r)
    assert [kind for kind, _, _ in events] == ["evidence", "answer"]
    assert events[0][2]["sources"] == [] and events[1][2]["refused"]


def test_stream_reports_a_failure_after_the_start_as_an_error_event(fake_index) -> None:  # type: ignore[no-untyped-def]
    class Broken(FakeGenerator):
        def stream(self, messages: Sequence[Message], *, max_tokens: int) -> Iterator[str]:
            yield "OwlSet "
            raise RuntimeError("the model crashed")

    answerer = Answerer(CONFIG, index=fake_index, generator=Broken("x"))
    app = create_app(answerer.config, lambda model: answerer, chat=False, host=None)
    with TestClient(app, raise_server_exceptions=False) as client:
        with client.stream("POST", "/api/ask/stream", json={"question": OWL_Q}) as r:
            r.read()
        events = read_events(r)
        assert [kind for kind, _, _ in events] == ["evidence", "progress", "token", "error"]
        error = ErrorEventOut.model_validate(events[-1][2])
        assert error.status == 500 and "server log" in error.detail and "crashed" not in error.detail
        assert app.state.service.queue.running == 0  # the turn ended with the stream
        assert client.post("/api/ask", json={"question": OWL_Q}).status_code == 500
    assert not answerer.generator.lock.locked()  # type: ignore[attr-defined]


def test_event_types_the_api_does_not_know_yet_pass_through() -> None:
    """The stream is ready for a `sentence` event: its type and fields go out as they are."""

    @dataclasses.dataclass(frozen=True)
    class SentenceEvent:
        kind: ClassVar[str] = "sentence"
        index: int
        sentence: AnswerSentence

    kind, data = event_payload(SentenceEvent(0, AnswerSentence("OwlSet has 12,000 images.", (1,), True)))
    assert kind == "sentence"
    assert data["index"] == 0 and data["sentence"]["supported"] is True and data["sentence"]["citations"] == (1,)
    json.dumps(data)


def test_queued_event_says_how_many_are_ahead(answerer: Answerer) -> None:
    queue = ModelQueue()
    app = create_app(answerer.config, lambda model: answerer, chat=False, host=None, queue=queue)
    with TestClient(app) as client:
        holder = queue.enter()

        def release_once_the_request_waits() -> None:  # not a fixed delay: a loaded machine is slow
            deadline = time.monotonic() + 30
            while queue.waiting < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            holder.release()

        threading.Thread(target=release_once_the_request_waits, daemon=True).start()
        with client.stream("POST", "/api/ask/stream", json={"question": OWL_Q}) as r:
            r.read()
    events = read_events(r)
    assert [kind for kind, _, _ in events][:2] == ["queued", "evidence"] and events[-1][0] == "answer"
    assert QueuedEvent.model_validate(events[0][2]).ahead == 1


# -- search and papers -----------------------------------------------------------------------------------------
def test_search_returns_papers_with_scores(client: TestClient) -> None:
    data = client.get("/api/search", params={"q": "thermal images of animals at night", "k": 3}).json()
    results = data["results"]
    assert len(results) == 3 and results[0]["title"].startswith("Tiny Owls")
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    for r in results:
        RetrievedPaperOut.model_validate(r)
        assert -1.0 <= r["dense_score"] <= 1.0
    dense = client.get("/api/search", params={"q": "thermal images", "k": 2, "mode": "dense"}).json()
    assert dense["mode"] == "dense" and all(r["bm25_rank"] is None for r in dense["results"])


def test_paper_has_its_metadata_and_abstract(client: TestClient, fake_index) -> None:  # type: ignore[no-untyped-def]
    hit = client.get("/api/search", params={"q": "OwlSet thermal images", "k": 1}).json()["results"][0]
    response = client.get(f"/api/papers/{hit['paper_id']}")
    assert response.status_code == 200
    assert response.json() == fake_index.papers[hit["paper_id"]].to_dict()
    assert "12,000 thermal images" in response.json()["abstract"]
    for missing in ("no-such-paper", "a/b/c", "%2e%2e%2fetc%2fpasswd"):
        r = client.get(f"/api/papers/{missing}")
        assert r.status_code == 404 and "no paper" in r.json()["detail"], missing
    r = client.get("/api/papers/../../etc/passwd")  # the client resolves the dots: no such route
    assert r.status_code == 404 and "root:" not in r.text


# -- errors ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("question", ["", "   ", "?!?... ;;", "🦉🔥"])
def test_bad_question_is_400_with_the_cli_message(
    client: TestClient,
    fake_index,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    question: str,
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(rag.answer, "open_index", lambda *a, **k: fake_index)
    monkeypatch.setattr(rag.answer, "load_generator", lambda *a, **k: FakeGenerator(reply))
    monkeypatch.setattr(rag.answer, "load_embedder", lambda *a, **k: fake_index.embedder)
    assert rag.cli.main(["ask", question]) == 1
    cli_message = capsys.readouterr().err.strip().removeprefix("error: ")
    for path in ("/api/ask", "/api/ask/stream"):
        response = client.post(path, json={"question": question})
        assert response.status_code == 400 and response.json() == {"detail": cli_message}, path
    assert client.get("/api/search", params={"q": question or "?"}).status_code in (400, 422)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "question"]),
        ({"question": 42}, ["body", "question"]),
        ({"question": "x" * 5001}, ["body", "question"]),
        ({"question": OWL_Q, "top_k": 99}, ["body", "top_k"]),
        ({"question": OWL_Q, "top_k": "four"}, ["body", "top_k"]),
        ({"question": OWL_Q, "mode": "grep"}, ["body", "mode"]),
        ({"question": OWL_Q, "strict": "sometimes"}, ["body", "strict"]),
        ({"question": OWL_Q, "history": [{"question": "q"}]}, ["body", "history", 0, "answer"]),
        ({"question": OWL_Q, "history": [{"question": "q", "answer": "a"}] * 21}, ["body", "history"]),
        ({"question": OWL_Q, "filters": {"year_min": 2024, "year_max": 2020}}, ["body", "filters"]),
        ({"question": OWL_Q, "filters": {"authors": ["x"]}}, ["body", "filters", "authors"]),
        ({"question": OWL_Q, "filters": {"paper_ids": ["no-such-paper"]}}, ["body", "filters", "paper_ids", 0]),
        # No client can name a model file, an index or any other setting the API does not offer.
        ({"question": OWL_Q, "model": "/etc/passwd"}, ["body", "model"]),
        ({"question": OWL_Q, "index_dir": "/tmp"}, ["body", "index_dir"]),
        ({"question": OWL_Q, "config": {"model": "x.gguf"}}, ["body", "config"]),
    ],
)
def test_validation_errors_are_422_naming_the_field(client: TestClient, body: dict[str, Any], loc: list[Any]) -> None:
    for path in ("/api/ask", "/api/ask/stream"):
        response = client.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert loc in [e["loc"] for e in response.json()["detail"]], response.json()


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({}, ["query", "q"]),
        ({"q": "owls", "k": 0}, ["query", "k"]),
        ({"q": "owls", "k": 51}, ["query", "k"]),
        ({"q": "owls", "mode": "grep"}, ["query", "mode"]),
        ({"q": "x" * 1001}, ["query", "q"]),
    ],
)
def test_search_validation(client: TestClient, params: dict[str, Any], loc: list[str]) -> None:
    response = client.get("/api/search", params=params)
    assert response.status_code == 422 and loc in [e["loc"] for e in response.json()["detail"]]


def test_oversized_body_is_refused(client: TestClient) -> None:
    big = {"question": OWL_Q, "history": [{"question": "q", "answer": "a" * 19_000}] * 4}
    response = client.post("/api/ask", json=big)  # ~76 kB: over the API's 64 KiB
    assert response.status_code == 413
    assert (
        client.post(
            "/api/ask", content=b"{" + b" " * 2_000_000 + b"}", headers={"content-type": "application/json"}
        ).status_code
        == 413
    )


def test_unavailable_index_is_503_with_what_to_run(tmp_path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    cfg = get_config({"index_dir": tmp_path / "nowhere", **CONFIG})
    answerer = Answerer(cfg, embedder=fake_embedder, generator=FakeGenerator(reply))
    app = create_app(cfg, lambda model: answerer, chat=False, host=None)
    with TestClient(app) as client:
        for response in (
            client.post("/api/ask", json={"question": OWL_Q}),
            client.post("/api/ask/stream", json={"question": OWL_Q}),
            client.get("/api/search", params={"q": "owls"}),
            client.get("/api/papers/x"),
            client.get("/api/health"),
        ):
            assert response.status_code == 503, response.text
            assert "rag build" in response.text and str(tmp_path) not in response.text


def test_unavailable_model_is_503_with_what_to_run(fake_index) -> None:  # type: ignore[no-untyped-def]
    cfg = get_config({**CONFIG, "model": "no-such-model"})
    answerer = Answerer(cfg, index=fake_index)  # the model is looked up (and missing) on first use
    app = create_app(cfg, lambda model: answerer, chat=False, host=None)
    with TestClient(app) as client:
        assert client.get("/api/health").status_code == 200  # not known to be missing yet
        for path in ("/api/ask", "/api/ask/stream"):
            response = client.post(path, json={"question": OWL_Q})
            assert response.status_code == 503 and "rag models" in response.json()["detail"], path
        health = client.get("/api/health")
        assert health.status_code == 503 and not health.json()["model"]["ok"]
        assert client.get("/api/search", params={"q": "owls"}).status_code == 200  # no model needed


def test_full_queue_is_429_with_a_retry_hint(answerer: Answerer) -> None:
    queue = ModelQueue(max_waiting=0, default_turn_s=12.0)
    app = create_app(answerer.config, lambda model: answerer, chat=False, host=None, queue=queue)
    with TestClient(app) as client:
        holder = queue.enter()  # a chat message is being answered, and nobody may wait
        try:
            for path in ("/api/ask", "/api/ask/stream"):
                response = client.post(path, json={"question": OWL_Q})
                assert response.status_code == 429, response.text
                assert response.headers["retry-after"] == "12" and response.json()["retry_after_s"] == 12
                assert "queue is full" in response.json()["detail"]
            assert client.get("/api/search", params={"q": "owls"}).status_code == 200  # no model: no queue
        finally:
            holder.release()
        assert client.post("/api/ask", json={"question": OWL_Q}).status_code == 200


def test_health_summarises_the_index_model_and_queue(client: TestClient, fake_index) -> None:  # type: ignore[no-untyped-def]
    data = client.get("/api/health").json()
    assert data["status"] == "ok"
    assert data["index"]["papers"] == len(fake_index.papers) and data["index"]["chunks"] == len(fake_index.chunks)
    assert data["index"]["embedding_model"] == fake_index.embedder.name and data["index"]["corpus_hash"]
    assert data["model"]["name"] == "qwen2.5-coder-1.5b" and data["model"]["ok"]
    assert data["queue"] == {**data["queue"], "running": 0, "waiting": 0, "max_waiting": 32}
    client.post("/api/ask", json={"question": OWL_Q})
    after = client.get("/api/health").json()
    assert after["model"]["status"] == "ready" and after["queue"]["served"] == 1


def test_filters_restrict_the_papers(client: TestClient, fake_index) -> None:  # type: ignore[no-untyped-def]
    owl = next(pid for pid, p in fake_index.papers.items() if p.title.startswith("Tiny Owls"))
    echo = next(pid for pid, p in fake_index.papers.items() if p.title.startswith("Echo Chambers"))
    only_echo = client.post("/api/ask", json={"question": OWL_Q, "filters": {"paper_ids": [echo]}}).json()
    assert {s["paper_id"] for s in only_echo["sources"]} <= {echo} and owl not in json.dumps(only_echo["citations"])
    both = client.post("/api/ask", json={"question": OWL_Q, "filters": {"paper_ids": [echo, owl]}}).json()
    assert {s["paper_id"] for s in both["sources"]} == {owl, echo} and both["citations"][0]["paper_id"] == owl
    # The tiny corpus has no years: a year filter leaves nothing, and the system refuses.
    dated = client.post("/api/ask", json={"question": OWL_Q, "filters": {"year_min": 2020}}).json()
    assert dated["refused"] and dated["retrieved"] == []


# -- safety --------------------------------------------------------------------------------------------------
def test_auth_guards_the_api_docs_and_chat(answerer: Answerer) -> None:
    creds = Credentials("ada", "s3cret:with:colons")
    app = create_app(answerer.config, lambda model: answerer, chat=True, host=None, credentials=creds)
    with TestClient(app) as client:
        for path in ("/api/health", "/docs", "/openapi.json"):
            denied = client.get(path)
            assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Basic"), path
            assert client.get(path, auth=("ada", "wrong")).status_code == 401
            assert client.get(path, auth=("ada", "s3cret:with:colons")).status_code == 200
        assert client.post("/api/ask", json={"question": OWL_Q}).status_code == 401
        ok = client.post("/api/ask", json={"question": OWL_Q}, auth=("ada", "s3cret:with:colons"))
        assert ok.status_code == 200
        assert client.get("/gradio_api/info").status_code == 401  # the chat wants its login too
        assert client.get("/config").status_code == 401
        spec = client.get("/openapi.json", auth=("ada", "s3cret:with:colons")).json()
        assert spec["components"]["securitySchemes"]["HTTPBasic"]["scheme"] == "basic"


def test_bind_rules() -> None:
    creds = Credentials("a", "b")
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(host, None, False)
    for host in ("0.0.0.0", "::", "192.168.1.5", "myhost.example"):
        with pytest.raises(ConfigError, match="--auth USER:PASSWORD.*--no-auth"):
            check_bind(host, None, False)
        check_bind(host, creds, False)
        check_bind(host, None, True)
    with pytest.raises(ConfigError, match="contradicts"):
        check_bind("0.0.0.0", creds, True)
    assert credentials_from(None, {"RAG_UI_AUTH": "u:p:q"}) == Credentials("u", "p:q")
    assert credentials_from("x:y", {"RAG_UI_AUTH": "u:p"}) == Credentials("x", "y")
    assert credentials_from(None, {}) is None
    with pytest.raises(ConfigError, match="USER:PASSWORD") as info:
        credentials_from("justapassword", {})
    assert "justapassword" not in str(info.value)


def test_loopback_server_accepts_only_loopback_host_names(answerer: Answerer) -> None:
    app = create_app(answerer.config, lambda model: answerer, chat=False, host="127.0.0.1")
    for base, status in (("http://127.0.0.1:7860", 200), ("http://localhost:7860", 200), ("http://evil.example", 400)):
        with TestClient(app, base_url=base) as client:
            assert client.get("/api/health").status_code == status, base


def test_docs_page_works_offline(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "/docs/static/swagger-ui-bundle.js" in html and "/openapi.json" in html
    assert "cdn" not in html.lower() and "https://" not in html
    assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/api/ask", "/api/ask/stream", "/api/search", "/api/papers/{paper_id}", "/api/health"}
    stream = spec["paths"]["/api/ask/stream"]["post"]["responses"]
    assert list(stream["200"]["content"]) == ["text/event-stream"]
    assert list(stream["429"]["content"]) == ["application/json"]


def _built(tmp_path, fake_embedder, small_corpus):  # type: ignore[no-untyped-def]
    from index_build.build import build_index

    index_dir = tmp_path / "index"
    build_index({"corpus": [small_corpus], "index_dir": index_dir, "progress": False}, embedder=fake_embedder)
    return index_dir


@pytest.mark.parametrize("command", ["ui", "serve"])
def test_rag_ui_serves_chat_api_and_docs(
    command: str, tmp_path, fake_embedder, small_corpus, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import ui.server

    index_dir = _built(tmp_path, fake_embedder, small_corpus)
    served: dict[str, Any] = {}
    monkeypatch.setattr(ui.server, "run_server", lambda app, host, port: served.update(app=app, host=host, port=port))
    monkeypatch.setattr(rag.answer, "load_embedder", lambda *a, **k: fake_embedder)
    monkeypatch.setattr(rag.answer, "load_generator", lambda *a, **k: FakeGenerator(reply))
    monkeypatch.delenv("RAG_UI_AUTH", raising=False)
    assert rag.cli.main([command, "--index", str(index_dir)]) == 0
    assert served["host"] == "127.0.0.1" and served["port"] == 7860
    with TestClient(served["app"], base_url="http://127.0.0.1:7860") as client:
        for path in ("/api/health", "/docs", "/openapi.json", "/api/search?q=owls"):
            assert client.get(path).status_code == 200, path
        answer = client.post("/api/ask", json={"question": OWL_Q}).json()
        assert answer["citations"][0]["title"].startswith("Tiny Owls")
        with client.stream("POST", "/api/ask/stream", json={"question": OWL_Q}) as r:
            r.read()
        assert read_events(r)[-1][2]["text"] == answer["text"]
        paper = client.get(f"/api/papers/{answer['citations'][0]['paper_id']}").json()
        assert "OwlSet" in paper["abstract"]
        page = client.get("/")
        assert (page.status_code == 200 and "gradio" in page.text.lower()) is (command == "ui")


def test_rag_ui_refuses_an_open_public_bind(
    tmp_path, fake_embedder, small_corpus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    import ui.server

    index_dir = _built(tmp_path, fake_embedder, small_corpus)
    served: list[str] = []
    apps: list[Any] = []
    monkeypatch.setattr(ui.server, "run_server", lambda app, host, port: (served.append(host), apps.append(app)))
    monkeypatch.setattr(rag.answer, "load_embedder", lambda *a, **k: fake_embedder)
    monkeypatch.setattr(rag.answer, "load_generator", lambda *a, **k: FakeGenerator(reply))
    monkeypatch.delenv("RAG_UI_AUTH", raising=False)
    assert rag.cli.main(["ui", "--host", "0.0.0.0", "--index", str(index_dir)]) == 1
    assert "refusing to serve on 0.0.0.0 without authentication" in capsys.readouterr().err and not served
    assert rag.cli.main(["serve", "--host", "0.0.0.0", "--no-auth", "--index", str(index_dir)]) == 0
    assert rag.cli.main(["ui", "--host", "0.0.0.0", "--auth", "bob:pw2", "--index", str(index_dir)]) == 0
    monkeypatch.setenv("RAG_UI_AUTH", "ada:pw")
    assert rag.cli.main(["ui", "--host", "0.0.0.0", "--index", str(index_dir)]) == 0
    assert served == ["0.0.0.0"] * 3
    with TestClient(apps[0]) as client:  # --no-auth: open, as asked
        assert client.get("/api/health").status_code == 200
    for app, login in ((apps[1], ("bob", "pw2")), (apps[2], ("ada", "pw"))):
        with TestClient(app) as client:  # the chat's login is Gradio's own auth
            assert client.get("/gradio_api/info").status_code == 401
            assert client.get("/api/health").status_code == 401
            assert client.get("/api/health", auth=login).status_code == 200
            assert client.post("/login", data={"username": login[0], "password": "wrong"}).status_code == 400
            assert client.post("/login", data={"username": login[0], "password": login[1]}).status_code == 200
            assert client.get("/gradio_api/info").status_code == 200  # the session cookie of the login


def test_a_client_that_leaves_mid_stream_frees_the_model(answerer: Answerer) -> None:
    """Over a real socket: the stream is cut after the first token; the turn and the model's
    lock are released, and the next request is answered."""
    from servers import SlowFake, serve_asgi

    slow = Answerer(CONFIG, index=answerer.index, generator=SlowFake(reply, delay_s=0.3))
    queue = ModelQueue()
    url, stop = serve_asgi(create_app(slow.config, lambda model: slow, chat=False, host="127.0.0.1", queue=queue))
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            with http.stream("POST", "api/ask/stream", json={"question": OWL_Q}) as response:
                for line in response.iter_lines():
                    if line == "event: token":
                        break
            deadline = time.perf_counter() + 10
            while queue.running and time.perf_counter() < deadline:
                time.sleep(0.05)
            assert queue.running == 0 and not slow.generator.lock.locked()  # type: ignore[attr-defined]
            answer = http.post("api/ask", json={"question": ECHO_Q}).json()
            assert answer["citations"][0]["title"].startswith("Echo Chambers")
    finally:
        stop()


def test_readme_client_streams(answerer: Answerer, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's Python client, run as written against a server on loopback."""
    from pathlib import Path

    from servers import serve_asgi

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("```python\nimport json, httpx")
    code = readme[start + len("```python\n") : readme.index("```", start + 10)]
    url, stop = serve_asgi(create_app(answerer.config, lambda model: answerer, chat=False, host="127.0.0.1"))
    try:
        code = code.replace("http://127.0.0.1:7860/", url).replace(
            "How many frames does the 8-Calves dataset contain?", OWL_Q
        )
        exec(compile(code, "README.md", "exec"), {})
    finally:
        stop()
    out = capsys.readouterr().out
    assert out.startswith("OwlSet has 12,000") and "\n\nVerified:\nOwlSet has 12,000" in out
    assert "\n[1] Tiny Owls" in out

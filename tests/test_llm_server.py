"""The LLM through an OpenAI-compatible server (``--llm-url``), against a real
``python -m llama_cpp.server`` on loopback serving the tiny SmolLM2 (it loads in about a second,
so these are not marked slow), and the cut-off answer with a fake."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from bench.llm_server import LlamaCppServer
from rag.answer import Answerer, AnswerEvent, EvidenceEvent, TokenEvent
from rag.cli import _print_answer, main
from rag.config import BUNDLED_CORPUS, DEFAULT_LLM, get_config
from rag.errors import ConfigError, LLMServerError, LLMStreamError
from rag.llm import FakeGenerator, LlamaCppGenerator, Message, load_generator
from rag.llm_server import OpenAIGenerator
from rag.models import HashEmbedder
from tests.servers import free_port
from ui.format import answer_markdown, plain_text, status_line

TINY = "smollm2-135m"
DEV = Path(__file__).resolve().parent.parent / "eval" / "data" / "dev.jsonl"
# Every question goes to the model (the hash embedder's similarities mean nothing), with short replies.
SETTINGS = {"min_relevance": -1.0, "max_answer_tokens": 40, "extractive_fallback": False}


def dev_questions(n: int) -> list[str]:
    """The first ``n`` fact questions of the dev split (a list question would not run the model)."""
    rows = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["question"] for r in rows if r.get("type") != "list"][:n]


@pytest.fixture(scope="module")
def tiny_server() -> Iterator[LlamaCppServer]:
    server = LlamaCppServer(TINY, TINY, n_threads=1)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bundled_fake_index(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The bundled corpus with the fake embedder (seconds), so real dev questions reach the model."""
    from index_build.build import build_index
    from rag.store import open_index

    embedder = HashEmbedder(dimension=64, max_tokens=256)
    index_dir = tmp_path_factory.mktemp("bundled-fake") / "index"
    build_index({"corpus": [BUNDLED_CORPUS], "index_dir": index_dir, "progress": False}, embedder=embedder)
    return open_index(index_dir, embedder)


def answerer(index, generator) -> Answerer:  # type: ignore[no-untyped-def]
    return Answerer({**SETTINGS, "index_dir": index.index_dir}, index=index, generator=generator)


# -- against a real llama_cpp.server ----------------------------------------------------------------


def test_events_stream_in_order_through_the_server(tiny_server: LlamaCppServer, bundled_fake_index) -> None:  # type: ignore[no-untyped-def]
    gen = OpenAIGenerator(tiny_server.url, TINY)
    events = list(answerer(bundled_fake_index, gen).stream(dev_questions(1)[0]))
    kinds = [e.kind for e in events]
    assert kinds[0] == "evidence" and kinds[-1] == "answer"
    assert kinds[1] == "progress" and "token" in kinds, kinds  # what the model reads, then its tokens
    assert set(kinds[2:-1]) <= {"token", "sentence"}, kinds  # and each sentence as it is verified
    assert isinstance(events[0], EvidenceEvent) and events[0].sources
    answer = events[-1].answer  # type: ignore[union-attr]
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert tokens.strip() and answer.raw_text and tokens.strip()[:10] == answer.raw_text[:10]
    assert answer.model == f"{TINY} via {tiny_server.url}"
    assert not answer.incomplete and "first_token" in answer.timings
    # llama_cpp.server reports no usage in a stream: the prompt count is the estimate.
    assert gen.usage(answer_messages_of(answer)) is None
    assert 100 < answer.prompt_tokens < 2048


def answer_messages_of(answer) -> list[Message]:  # type: ignore[no-untyped-def]
    from rag.prompts import answer_messages

    return answer_messages(answer.question, answer.sources, answer.form)


def test_same_verified_answer_as_in_process(tiny_server: LlamaCppServer, bundled_fake_index) -> None:  # type: ignore[no-untyped-def]
    """Greedy decoding of the same GGUF file gives the same answer in process and through the server."""
    local = answerer(bundled_fake_index, LlamaCppGenerator(TINY, n_threads=1))
    remote = answerer(bundled_fake_index, OpenAIGenerator(tiny_server.url, TINY))
    for question in dev_questions(3):
        a, b = local.ask(question), remote.ask(question)
        assert a.raw_text and b.raw_text == a.raw_text, question
        assert (b.text, b.refused, b.refusal_code) == (a.text, a.refused, a.refusal_code)
        assert [c.paper_id for c in b.citations] == [c.paper_id for c in a.citations]
        assert [s.supported for s in b.sentences] == [s.supported for s in a.sentences]


def test_wrong_model_name_is_a_clear_error(tiny_server: LlamaCppServer) -> None:
    gen = OpenAIGenerator(tiny_server.url, "no-such-model")
    with pytest.raises(LLMServerError, match=r"does not serve the model 'no-such-model'; it serves 'smollm2-135m'"):
        list(gen.stream([{"role": "user", "content": "hi"}], max_tokens=2))


def test_the_default_name_takes_the_servers_one_model(tiny_server: LlamaCppServer) -> None:
    gen = OpenAIGenerator(tiny_server.url, DEFAULT_LLM, adopt_single=True)
    assert "".join(gen.stream([{"role": "user", "content": "Say hello."}], max_tokens=4)).strip()
    assert gen.model == TINY


def test_api_key_is_sent_and_a_refusal_says_where_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    server = LlamaCppServer(TINY, TINY, n_threads=1, api_key="sk-test-key")
    try:
        messages = [{"role": "user", "content": "Say hello."}]
        with pytest.raises(LLMServerError, match=r"refused the request \(HTTP 401.*RAG_LLM_API_KEY"):
            list(OpenAIGenerator(server.url, TINY).stream(messages, max_tokens=2))
        monkeypatch.setenv("RAG_LLM_API_KEY", "sk-test-key")
        gen = load_generator(TINY, llm_url=server.url)
        assert "".join(gen.stream(messages, max_tokens=4)).strip()
    finally:
        server.stop()


def test_server_stopped_mid_answer_gives_a_verified_incomplete_answer(bundled_fake_index) -> None:  # type: ignore[no-untyped-def]
    server = LlamaCppServer(TINY, TINY, n_threads=1)
    try:
        qa = Answerer(
            {**SETTINGS, "max_answer_tokens": 160, "index_dir": bundled_fake_index.index_dir},
            index=bundled_fake_index,
            generator=OpenAIGenerator(server.url, TINY),
        )
        events = []
        for event in qa.stream(dev_questions(1)[0]):
            events.append(event)
            if isinstance(event, TokenEvent) and sum(isinstance(e, TokenEvent) for e in events) == 1:
                killer = threading.Thread(target=server.kill)  # the server dies after the first token
                killer.start()
                killer.join()
    finally:
        server.stop()
    answer = events[-1].answer  # type: ignore[union-attr]
    assert isinstance(events[-1], AnswerEvent)
    assert answer.incomplete
    assert any("incomplete" in w and "stopped sending mid-answer" in w for w in answer.warnings)
    assert answer.raw_text  # what came before the cut is kept, and verified
    assert answer.to_dict()["incomplete"] is True


def test_unreachable_server_is_a_clear_error(bundled_fake_index) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    qa = answerer(bundled_fake_index, OpenAIGenerator(url, TINY))
    with pytest.raises(
        LLMServerError, match=r"cannot reach the LLM server at http://127\.0\.0\.1:\d+/v1 .*is it running"
    ):
        qa.ask(dev_questions(1)[0])
    with pytest.raises(LLMServerError, match="cannot reach"):
        qa.warm_up()


# -- configuration, key, CLI --------------------------------------------------------------------------


def test_llm_url_comes_from_the_environment_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_LLM_URL", "http://127.0.0.1:8080/v1")
    assert get_config().llm_url == "http://127.0.0.1:8080/v1"
    assert get_config({"llm_url": "http://10.0.0.2:8000/v1"}).llm_url == "http://10.0.0.2:8000/v1"
    with pytest.raises(ConfigError, match="must not hold credentials"):
        get_config({"llm_url": "http://user:secret@127.0.0.1:8080/v1"})
    with pytest.raises(ConfigError, match="http:// or https://"):
        get_config({"llm_url": "127.0.0.1:8080"})


def test_the_api_key_is_sent_but_never_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAG_LLM_API_KEY", "sk-very-secret")
    url = f"http://127.0.0.1:{free_port()}/v1"
    cfg = get_config({"llm_url": url})
    gen = load_generator(cfg.model, llm_url=cfg.llm_url, timeout=5.0)
    assert isinstance(gen, OpenAIGenerator) and gen._client.api_key == "sk-very-secret"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(LLMServerError) as err:
        list(gen.stream([{"role": "user", "content": "hi"}], max_tokens=2))
    assert "sk-very-secret" not in str(err.value)
    assert "sk-very-secret" not in caplog.text
    assert "sk-very-secret" not in json.dumps(cfg.to_dict()) and "sk-very-secret" not in gen.name


def test_cli_takes_llm_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "a question", "--llm-url", "localhost:8080"]) == 1
    assert "llm_url must be an http:// or https:// URL" in capsys.readouterr().err


# -- a reply cut off mid-answer (fake) ----------------------------------------------------------------


class CutOff(FakeGenerator):
    """Streams the first ``keep`` words of its reply, then fails as a dropped connection does."""

    def __init__(self, reply: str, keep: int) -> None:
        super().__init__(reply)
        self.keep = keep

    def stream(self, messages: Sequence[Message], *, max_tokens: int) -> Iterator[str]:
        for i, piece in enumerate(super().stream(messages, max_tokens=max_tokens)):
            if i == self.keep:
                raise LLMStreamError("the LLM server at http://127.0.0.1:1/v1 stopped sending mid-answer (test)")
            yield piece


def test_a_cut_off_reply_is_verified_and_marked_incomplete(fake_index) -> None:  # type: ignore[no-untyped-def]
    paper = next(iter(fake_index.papers.values()))
    first_sentence = paper.abstract.split(". ")[0].rstrip(".") + "."
    reply = f"{first_sentence} [1] And then the model went on about something else entirely [2]"
    gen = CutOff(reply, keep=len(first_sentence.split()) + 1)
    qa = Answerer({"index_dir": fake_index.index_dir, "min_relevance": -1.0}, index=fake_index, generator=gen)
    answer = qa.ask(paper.title)
    assert answer.incomplete
    assert answer.raw_text.startswith(first_sentence[:20]) and "something else" not in answer.raw_text
    assert any(w.startswith("the answer is incomplete") for w in answer.warnings)
    # never shown as complete: the chat, the copy text, the status line and the CLI all say so
    assert answer_markdown(answer).startswith("⚠️ **Incomplete answer:**")
    assert plain_text(answer).startswith("[Incomplete answer:")
    assert status_line(answer).startswith("INCOMPLETE")
    import io

    out = io.StringIO()
    _print_answer(answer, out)
    assert out.getvalue().startswith("INCOMPLETE answer")


def test_a_failure_before_the_first_piece_is_an_error(fake_index) -> None:  # type: ignore[no-untyped-def]
    qa = Answerer(
        {"index_dir": fake_index.index_dir, "min_relevance": -1.0},
        index=fake_index,
        generator=CutOff("Some reply.", keep=0),
    )
    with pytest.raises(LLMStreamError):
        qa.ask(next(iter(fake_index.papers.values())).title)


@pytest.mark.slow
def test_default_model_gives_the_same_answer_through_the_server(real_index) -> None:  # type: ignore[no-untyped-def]
    """The 1.5B model: in process and through llama_cpp.server, the same verified answers."""
    model = "qwen2.5-coder-1.5b"
    server = LlamaCppServer(model, model, n_threads=2)
    try:
        cfg = {"index_dir": real_index.index_dir}
        local = Answerer(cfg, index=real_index, generator=LlamaCppGenerator(model, n_threads=2))
        remote = Answerer(cfg, index=real_index, generator=OpenAIGenerator(server.url, model))
        for question in dev_questions(3):
            a, b = local.ask(question), remote.ask(question)
            assert a.raw_text and b.raw_text == a.raw_text, question
            assert (b.text, b.refused) == (a.text, a.refused)
            assert [c.paper_id for c in b.citations] == [c.paper_id for c in a.citations]
            assert not b.incomplete and b.model == f"{model} via {server.url}"
    finally:
        server.stop()


def test_api_answers_503_when_the_llm_server_is_down(fake_index) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from ui.server import create_app

    url = f"http://127.0.0.1:{free_port()}/v1"
    qa = Answerer(
        {"index_dir": fake_index.index_dir, "min_relevance": -1.0, "llm_url": url},
        index=fake_index,
        generator=OpenAIGenerator(url, TINY),
    )
    app = create_app(qa.config, lambda model: qa, chat=False, host=None)
    with TestClient(app) as client:
        response = client.post("/api/ask", json={"question": next(iter(fake_index.papers.values())).title})
        assert response.status_code == 503
        assert "language model server cannot answer" in response.json()["detail"]
        assert "language model server" in client.get("/api/health").json()["model"]["status"]

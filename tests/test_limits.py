"""Hardening (issue 15): long inputs against the context window, and per-question overrides
that must either change the answer's settings or be refused, never silently ignored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rag.answer
from index_build.build import build_index
from rag.answer import Answerer
from rag.errors import ConfigError, ContextOverflowError, RagError
from rag.llm import FakeGenerator, LlamaCppGenerator
from rag.models import HashEmbedder

LONG_Q = "What do the elephant seal tracking tags measure during deep dives?"


def _long_sentence(chars: int = 40_000) -> str:
    """One sentence of ``chars`` characters: no full stop until the end."""
    words = []
    n = 0
    while sum(len(w) + 1 for w in words) < chars - 1:
        words.append(f"elephant seal tracking tags measure dive depth{n}")
        n += 1
    body = " ".join(words)[: chars - 1]
    return (body[:-1] + "s" if body.endswith(" ") else body) + "."


@pytest.fixture
def long_index(tmp_path: Path) -> tuple[Path, HashEmbedder]:
    abstract = _long_sentence()
    assert len(abstract) == 40_000 and abstract.count(".") == 1
    rows = [{"title": "Elephant seal tracking over one long sentence", "abstract": abstract}]
    for i in range(5):
        rows.append(
            {
                "title": f"Owl survey {i}",
                "abstract": f"Owls {i} hunt at night in forests with thermal cameras. The survey counted {i} owls.",
            }
        )
    corpus = tmp_path / "long.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    embedder = HashEmbedder(dimension=64, max_tokens=256)
    index_dir = tmp_path / "index"
    result = build_index({"corpus": [corpus], "index_dir": index_dir, "progress": False}, embedder=embedder)
    assert result.papers == 6 and not result.problems  # the long abstract is indexed, not skipped
    return index_dir, embedder


@pytest.mark.parametrize("select", [True, False], ids=["selected-evidence", "whole-abstracts"])
def test_a_40000_character_single_sentence_abstract_fits_the_context(
    long_index: tuple[Path, HashEmbedder], select: bool
) -> None:
    """Every pass of evidence selection keeps to the budget (the naive whole-abstract way too):
    the one sentence is cut at a word boundary, marked with an ellipsis, and the prompt fits."""
    index_dir, embedder = long_index
    gen = FakeGenerator("Elephant seal tracking tags measure dive depth [1].")
    cfg = {"index_dir": index_dir, "min_relevance": -1.0, "select_evidence": select, "n_ctx": 2048}
    answer = Answerer(cfg, embedder=embedder, generator=gen).ask(LONG_Q)
    seal = next(s for s in answer.sources if s.title.startswith("Elephant seal"))
    (sentence,) = seal.sentences
    assert sentence.text.endswith(" …") and len(sentence.text) < 4_000  # <= 480 tokens of 10,000
    kept = sentence.text.removesuffix(" …")
    abstract = _long_sentence()
    assert abstract.startswith(kept) and abstract[len(kept)] == " "  # cut between two words
    prompt = gen.count_tokens(gen.calls[-1])
    assert answer.prompt_tokens == prompt and prompt + 160 <= 2048


def test_a_prompt_too_long_for_n_ctx_is_refused_before_generation(long_index: tuple[Path, HashEmbedder]) -> None:
    index_dir, embedder = long_index
    gen = FakeGenerator("never asked")
    answerer = Answerer({"index_dir": index_dir, "min_relevance": -1.0, "n_ctx": 300}, embedder=embedder, generator=gen)
    with pytest.raises(ContextOverflowError, match=r"context window of 300 tokens.*raise n_ctx"):
        answerer.ask(LONG_Q)
    assert gen.calls == []  # nothing was sent to the model


class _Llama:
    """llama-cpp-python's Llama as far as the generator uses it, failing as it does on overflow."""

    def create_chat_completion(self, **_: Any) -> Iterator[dict[str, Any]]:
        raise ValueError("Requested tokens (3100) exceed context window of 2048")
        yield {}  # a generator, like the real streaming call


def test_the_models_context_error_becomes_a_clear_rag_error(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)
    gen = LlamaCppGenerator(str(path), n_ctx=2048)
    gen._llm = _Llama()
    with pytest.raises(ContextOverflowError, match=r"exceed context window of 2048.*raise n_ctx") as info:
        list(gen.stream([{"role": "user", "content": "hi"}], max_tokens=10))
    assert isinstance(info.value, RagError)
    assert gen.lock.acquire(blocking=False)  # released for the next question


def test_context_overflow_reaches_the_chat_as_a_message(long_index: tuple[Path, HashEmbedder]) -> None:
    from ui.app import respond

    index_dir, embedder = long_index
    answerer = Answerer(
        {"index_dir": index_dir, "min_relevance": -1.0, "n_ctx": 300}, embedder=embedder, generator=FakeGenerator("x")
    )
    *_, last = respond(lambda model: answerer, LONG_Q, [], [], 4, "hybrid", False, "qwen2.5-coder-1.5b")
    assert "context window of 300 tokens" in last[0][-1]["content"] and last[2] == "error"


# -- per-question overrides ----------------------------------------------------------------------------
class _NamedFake(FakeGenerator):
    def __init__(self, name: str, n_ctx: int) -> None:
        super().__init__("Owls hunt at night [1].", name=name)
        self.n_ctx = n_ctx


def test_model_and_n_ctx_overrides_are_honoured(
    long_index: tuple[Path, HashEmbedder], monkeypatch: pytest.MonkeyPatch
) -> None:
    index_dir, embedder = long_index
    loaded: list[tuple[str, int]] = []

    def load_generator(model: str, *, n_ctx: int = 2048, **_: object) -> FakeGenerator:
        loaded.append((model, n_ctx))
        return _NamedFake(model, n_ctx)

    monkeypatch.setattr(rag.answer, "load_generator", load_generator)
    own = _NamedFake("own-model", 2048)
    answerer = Answerer({"index_dir": index_dir, "min_relevance": -1.0}, embedder=embedder, generator=own)
    q = "Which owls hunt at night?"
    assert answerer.ask(q).model == "own-model" and loaded == [] and len(own.calls) == 1
    other = answerer.ask(q, model="qwen2.5-coder-0.5b")
    assert other.model == "qwen2.5-coder-0.5b" and loaded == [("qwen2.5-coder-0.5b", 2048)]
    assert len(own.calls) == 1  # the configured model was not asked
    with pytest.raises(ContextOverflowError, match="context window of 200"):
        answerer.ask(q, n_ctx=200)  # the override reaches the model's window (and its check)
    assert loaded[-1] == ("qwen2.5-coder-1.5b", 200)
    assert answerer.ask(q, n_ctx=4096).model == "qwen2.5-coder-1.5b" and loaded[-1] == ("qwen2.5-coder-1.5b", 4096)


def test_candidates_and_rrf_k_overrides_are_honoured(long_index: tuple[Path, HashEmbedder]) -> None:
    index_dir, embedder = long_index
    answerer = Answerer(
        {"index_dir": index_dir, "min_relevance": -1.0, "top_k": 6}, embedder=embedder, generator=FakeGenerator("x")
    )
    q = "Which owls hunt at night?"
    default = answerer.ask(q)
    one = answerer.ask(q, candidates=1)  # each retriever returns one chunk: at most two papers
    assert len(default.retrieved) == 6 and 1 <= len(one.retrieved) <= 2
    assert answerer.retriever_for(answerer.config.replace(candidates=1)).candidates == 1
    assert answerer.retriever.candidates == 40  # the configured retriever is unchanged
    scores = {r.score for r in answerer.ask(q, rrf_k=1000).retrieved}
    assert max(scores) <= 2 / 1001 < min(r.score for r in default.retrieved[:1])  # fused with k=1000
    assert answerer.retriever_for(answerer.config.replace(rrf_k=1000)).rrf_k == 1000


@pytest.mark.parametrize(
    ("field", "value"),
    [("index_dir", "/elsewhere"), ("embed_model", "/some/model"), ("corpus", ["x.jsonl"]), ("chunk_overlap", 5)],
)
def test_index_settings_per_question_are_refused(
    long_index: tuple[Path, HashEmbedder], field: str, value: object
) -> None:
    index_dir, embedder = long_index
    gen = FakeGenerator("x")
    answerer = Answerer({"index_dir": index_dir, "min_relevance": -1.0}, embedder=embedder, generator=gen)
    with pytest.raises(ConfigError, match=f"{field} cannot change for one question.*another Answerer"):
        answerer.ask("Which owls hunt at night?", **{field: value})
    assert gen.calls == []


@pytest.mark.slow
def test_llama_cpp_context_error_of_a_real_model_is_a_rag_error() -> None:
    """The tiny packaged model with a 512-token window (llama.cpp may pad it) and a prompt of
    ~1,600 tokens: llama.cpp's own error, raised before any token is evaluated."""
    gen = LlamaCppGenerator("smollm2-135m", n_ctx=512, n_threads=2)
    messages = [{"role": "user", "content": "owls hunt at night " * 400}]
    assert gen.count_tokens(messages) > 1024
    with pytest.raises(ContextOverflowError, match=r"exceed context window of \d+.*raise n_ctx \(now 512\)"):
        list(gen.stream(messages, max_tokens=8))
    assert gen.lock.acquire(blocking=False)  # released for the next question
    gen.lock.release()

"""The pipelines the product is compared with, built the way people build them.

* ``naive``: the top-4 papers' whole abstracts, the usual instruction to cite and to say when the
  sources do not answer, the model's citations trusted as written.
* ``llamaindex-citation``: llama-index's ``CitationQueryEngine`` with its default prompts over
  the same FAISS index and embedder, answered by the same local model (through an adapter of
  our ``Generator`` to llama-index's LLM interface): the peer a user would pick instead.

Both return ``rag.types.Answer`` records, so the eval scores them exactly like the product. An
answer is refused when every sentence it writes says the sources do not answer.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rag.citations import find_citations, split_answer
from rag.config import RagConfig
from rag.evidence import CachedEmbedder, select_evidence
from rag.llm import Generator, Message
from rag.retrieve import Retriever
from rag.store import RagIndex
from rag.text import sentence_spans
from rag.types import Answer, AnswerSentence, Citation, EvidenceSentence, RetrievedPaper, Source
from rag.verify import is_refusal

NAIVE_SYSTEM = (
    "You are a helpful research assistant. Answer the question using only the numbered sources. "
    "Cite the sources you use with their numbers in brackets, like [1]. "
    "If the sources do not contain the answer, say that they do not."
)
NAIVE_USER = "Sources:\n\n{sources}\n\nQuestion: {question}"
NAIVE_SOURCE = "[{n}] {title}\n{text}"


def naive_messages(question: str, sources: Sequence[Source]) -> list[Message]:
    text = "\n\n".join(NAIVE_SOURCE.format(n=s.n, title=s.title, text=s.text) for s in sources)
    return [
        {"role": "system", "content": NAIVE_SYSTEM},
        {"role": "user", "content": NAIVE_USER.format(sources=text, question=question)},
    ]


def trusted_answer(
    question: str,
    raw: str,
    sources: Sequence[Source],
    retrieved: Sequence[RetrievedPaper],
    *,
    model: str,
    timings: dict[str, float],
    prompt_tokens: int,
    completion_tokens: int,
) -> Answer:
    """An answer whose citations are trusted as the model wrote them (only numbers that name no
    source are dropped and counted); refused when every sentence says the sources do not answer."""
    by_n = {s.n: s for s in sources}
    parsed = split_answer(raw)
    sentences = tuple(
        AnswerSentence(text=body, citations=tuple(n for n in cited if n in by_n), supported=True)
        for body, cited in parsed
    )
    refused = not any(not is_refusal(s.text) for s in sentences)
    cited_all = find_citations(raw)
    valid = [n for n in cited_all if n in by_n]
    citations = tuple(
        Citation(
            n=n,
            paper_id=by_n[n].paper_id,
            title=by_n[n].title,
            files=by_n[n].files,
            evidence=(),
            score=by_n[n].retrieval_score,
            prompt_n=n,
        )
        for n in valid
    )
    return Answer(
        question=question,
        text=raw,
        raw_text=raw,
        citations=citations,
        sentences=sentences,
        refused=refused,
        retrieved=tuple(retrieved),
        sources=tuple(sources),
        timings=timings,
        model=model,
        refusal_reason="the model said the sources do not answer" if refused else None,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        invalid_citations=len(cited_all) - len(valid),
    )


def _drain(pieces: Iterable[str], start: float, timings: dict[str, float]) -> tuple[str, int]:
    """Read a stream of text pieces, recording first-token time and tokens/s; (text, pieces)."""
    out: list[str] = []
    first: float | None = None
    for piece in pieces:
        if first is None:
            first = time.perf_counter()
            timings["first_token"] = first - start
        out.append(piece)
    end = time.perf_counter()
    if first is not None and end > first and len(out) > 1:
        timings["tokens_per_s"] = (len(out) - 1) / (end - first)
    return "".join(out).strip(), len(out)


def _generate(
    generator: Generator, messages: list[Message], max_tokens: int, start: float, timings: dict[str, float]
) -> tuple[str, int]:
    t = time.perf_counter()
    with contextlib.closing(generator.stream(messages, max_tokens=max_tokens)) as stream:  # type: ignore[type-var]
        text, n = _drain(stream, start, timings)
    timings["generate"] = time.perf_counter() - t
    return text, n


class NaivePipeline:
    """Top-k whole abstracts, the usual prompt, citations trusted. Same retrieval and model."""

    def __init__(self, config: RagConfig, index: RagIndex, generator: Generator) -> None:
        self.config = config
        self.index = index
        self.generator = generator
        self.retriever = Retriever(index, candidates=config.candidates, rrf_k=config.rrf_k)
        self.embedder = CachedEmbedder(index.embedder)

    def ask(self, question: str) -> Answer:
        cfg = self.config
        start = time.perf_counter()
        timings: dict[str, float] = {}
        vector = self.index.query_vector(question)
        retrieved = self.retriever.search(question, cfg.top_k, cfg.retrieval_mode, vector=vector)
        timings["retrieve"] = time.perf_counter() - start
        sources = select_evidence(question, vector, retrieved, self.index.papers, self.embedder, whole_abstracts=True)
        timings["to_evidence"] = time.perf_counter() - start
        messages = naive_messages(question, sources)
        raw, completion = _generate(self.generator, messages, cfg.max_answer_tokens, start, timings)
        timings["total"] = time.perf_counter() - start
        return trusted_answer(
            question,
            raw,
            sources,
            retrieved,
            model=self.generator.name,
            timings=timings,
            prompt_tokens=self.generator.count_tokens(messages),
            completion_tokens=completion,
        )


def llm_adapter(generator: Generator, *, context_window: int, max_tokens: int) -> Any:
    """Our ``Generator`` as a llama-index completion LLM: a prompt becomes one user message, so
    the model's own chat template applies, as with llama-index's llama.cpp integration."""
    from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback
    from llama_index.core.llms.custom import CustomLLM
    from pydantic import PrivateAttr

    class GeneratorLLM(CustomLLM):
        _generator: Any = PrivateAttr()
        _max_tokens: int = PrivateAttr()
        _context_window: int = PrivateAttr()
        _prompts: list[str] = PrivateAttr(default_factory=list)

        def __init__(self) -> None:
            super().__init__()
            self._generator = generator
            self._max_tokens = max_tokens
            self._context_window = context_window
            self._prompts = []

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(
                context_window=self._context_window,
                num_output=self._max_tokens,
                is_chat_model=False,
                model_name=generator.name,
            )

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            text = "".join(self._stream(prompt))
            return CompletionResponse(text=text)

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            def gen() -> Any:
                text = ""
                for delta in self._stream(prompt):
                    text += delta
                    yield CompletionResponse(text=text, delta=delta)

            return gen()

        def _stream(self, prompt: str) -> Any:
            self._prompts.append(prompt)
            messages = [{"role": "user", "content": prompt}]
            with contextlib.closing(self._generator.stream(messages, max_tokens=self._max_tokens)) as stream:
                yield from stream

    return GeneratorLLM()


class CitationEnginePipeline:
    """llama-index's ``CitationQueryEngine`` with its default prompts and chunking, retrieving
    ``top_k`` chunks by dense similarity from the same index (llama-index's default is 2; we give
    it the same k the product and naive get)."""

    def __init__(self, config: RagConfig, index: RagIndex, generator: Generator) -> None:
        from llama_index.core.query_engine import CitationQueryEngine

        self.config = config
        self.index = index
        self.generator = generator
        self.llm = llm_adapter(generator, context_window=config.n_ctx, max_tokens=config.max_answer_tokens)
        self.engine = CitationQueryEngine.from_args(
            index.vector_index, llm=self.llm, similarity_top_k=config.top_k, streaming=True
        )
        self._lock = threading.Lock()

    def ask(self, question: str) -> Answer:
        with self._lock:  # the adapter remembers the prompts of the question being answered
            start = time.perf_counter()
            timings: dict[str, float] = {}
            self.llm._prompts.clear()
            response = self.engine.query(question)
            timings["to_evidence"] = time.perf_counter() - start
            raw, completion = _drain(response.response_gen, start, timings)
            timings["total"] = time.perf_counter() - start
            sources = self._sources(response.source_nodes)
            retrieved = self._retrieved(response.source_nodes)
            prompts = list(self.llm._prompts)
        prompt_tokens = sum(self.generator.count_tokens([{"role": "user", "content": p}]) for p in prompts)
        return trusted_answer(
            question,
            raw,
            sources,
            retrieved,
            model=self.generator.name,
            timings=timings,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
        )

    def _sources(self, nodes: Sequence[Any]) -> list[Source]:
        """Source n is the engine's "Source n:" chunk; its paper comes from the node metadata."""
        out = []
        for n, hit in enumerate(nodes, 1):
            meta = hit.node.metadata
            paper = self.index.papers[meta["paper_id"]]
            text = re.sub(r"^Source \d+:\n", "", hit.node.get_content()).strip()
            spans = sentence_spans(text) or [(0, len(text))]
            out.append(
                Source(
                    n=n,
                    paper_id=paper.paper_id,
                    title=paper.title,
                    sentences=tuple(EvidenceSentence(a, b, text[a:b], 0.0) for a, b in spans),
                    retrieval_score=float(hit.score or 0.0),
                    files=paper.source_files,
                )
            )
        return out

    def _retrieved(self, nodes: Sequence[Any]) -> list[RetrievedPaper]:
        out: dict[str, RetrievedPaper] = {}
        for hit in nodes:
            pid = hit.node.metadata["paper_id"]
            if pid not in out:
                score = float(hit.score or 0.0)
                out[pid] = RetrievedPaper(pid, self.index.papers[pid].title, score, score, dense_rank=len(out) + 1)
        return list(out.values())

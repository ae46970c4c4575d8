"""The Gradio chat app: streaming answers, an evidence panel, settings.

The evidence panel fills as soon as retrieval is done, before the model starts; the answer
then streams in, and is replaced by the verified version (citations checked and renumbered,
unsupported sentences marked) when the model finishes. Generation is one request at a time
(2 CPU cores): chat messages and HTTP API calls wait in one queue (``ui.gate.ModelQueue``), and
the status line shows each user their place in it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from rag.answer import Answerer, AnswerEvent, EvidenceEvent, QuestionError, TokenEvent
from rag.config import RETRIEVAL_MODES, RagConfig
from rag.errors import IndexCorruptError, IndexMismatchError, IndexNotFoundError, ModelError, RagError
from rag.llm import KNOWN_MODELS
from rag.store import RagIndex, open_index, read_manifest
from rag.types import Answer, Paper
from ui.format import answer_markdown, escape_md, evidence_html, plain_text, status_line, streaming_markdown
from ui.gate import ModelQueue, QueueFull, iterate_in_thread

logger = logging.getLogger(__name__)

EXAMPLES = [
    "How much do Equivariant Transformers improve the error rate of ResNet classifiers?",
    "How many frames does the 8-Calves dataset contain?",
    "Which papers use Siamese neural networks, and for which tasks?",
    "What is Matryoshka Representation Learning?",
]

CSS = """
.ev-panel { display: flex; flex-direction: column; gap: 8px; }
.ev-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px; }
.ev-card.ev-is-cited { border-color: #2f7d32; box-shadow: 0 0 0 1px #2f7d32 inset; }
.ev-head { display: flex; gap: 8px; align-items: center; font-size: 0.85em; }
.ev-label { font-weight: 600; }
.ev-cited { background: #2f7d32; color: white; border-radius: 4px; padding: 0 6px; }
.ev-score { margin-left: auto; opacity: 0.7; }
.ev-title { font-weight: 600; margin: 4px 0 2px; }
.ev-files { font-size: 0.75em; opacity: 0.6; }
.ev-ref { font-size: 0.8em; opacity: 0.8; }
.ev-sents { margin: 6px 0 0 16px; font-size: 0.9em; }
.ev-sent.ev-backs { background: rgba(47, 125, 50, 0.18); border-radius: 3px; }
.ev-empty { opacity: 0.7; font-style: italic; }
.ev-withheld { font-size: 0.8em; color: #b26a00; margin-top: 4px; }
"""

AnswererFactory = Callable[[str], Answerer]
TOP_K_MAX = 8


def friendly_error(exc: Exception) -> str:
    """What the user sees instead of a stack trace."""
    if isinstance(exc, QuestionError):
        return f"⚠️ {escape_md(str(exc))}"
    if isinstance(exc, IndexNotFoundError):
        return "⚠️ There is no index yet. Build it with `rag build` (or `make run`), then ask again."
    if isinstance(exc, (IndexMismatchError, IndexCorruptError)):
        return f"⚠️ The index cannot be used: {escape_md(str(exc))}"
    if isinstance(exc, ModelError):
        return f"⚠️ The language model is not available: {escape_md(str(exc))}. `rag models` lists the models and their status."
    if isinstance(exc, RagError):
        return f"⚠️ {escape_md(str(exc))}"
    return "⚠️ Something went wrong while answering. The details are in the server log."


def default_factory(config: RagConfig) -> AnswererFactory:
    """Answerers per model, sharing one index and embedder.

    Before each question the index's manifest is read again: when a build has replaced the index
    (another ``built_at``), the new one is opened once and every answerer moves to it before its
    next question, never in the middle of an answer.
    """
    cache: dict[str, Answerer] = {}
    newest: list[RagIndex] = []  # the newest index opened, shared by the answerers
    lock = threading.Lock()

    def refresh(answerer: Answerer) -> None:
        current = newest[0] if newest else answerer.loaded_index
        if current is None:  # nothing open yet: the first question opens the newest index
            return
        try:
            on_disk = read_manifest(Path(config.index_dir))
        except RagError as exc:  # keep answering from the index in memory
            logger.warning("cannot read the index manifest (%s); answering from the loaded index", exc)
            return
        if _build_of(on_disk) != _build_of(current.manifest):
            try:
                current = open_index(config.index_dir, answerer.embedder)
            except RagError as exc:
                logger.warning("the rebuilt index cannot be opened (%s); answering from the loaded one", exc)
                return
            logger.info("the index was rebuilt (%s); answering from the new one", on_disk.get("built_at"))
        newest[:] = [current]
        if answerer.loaded_index is not current and not answerer.use_index(current):
            logger.info("an answer is in progress; the rebuilt index is used from the next question on")

    def get(model: str) -> Answerer:
        with lock:
            if model not in cache:
                first = next(iter(cache.values()), None)
                if first is None:
                    cache[model] = Answerer(config.replace(model=model))
                else:
                    index = newest[0] if newest else first.index
                    cache[model] = Answerer(config.replace(model=model), index=index, embedder=first.embedder)
            refresh(cache[model])
            return cache[model]

    return get


def _build_of(manifest: Mapping[str, Any]) -> tuple[Any, Any]:
    return manifest.get("built_at"), manifest.get("corpus_hash")


def respond(
    factory: AnswererFactory,
    message: str,
    chat: list[dict[str, Any]],
    history: list[Answer],
    top_k: int,
    mode: str,
    strict: bool,
    model: str,
) -> Iterator[tuple[Any, ...]]:
    """The streaming handler: yields (chat, evidence, status, copy text, history, textbox)."""

    def snap() -> list[dict[str, Any]]:  # each yield gets its own copy of the messages
        return [dict(m) for m in chat]

    chat = list(chat or [])
    history = list(history or [])
    chat.append({"role": "user", "content": escape_md(message or "")})
    chat.append({"role": "assistant", "content": "_Searching the papers…_"})
    evidence = evidence_html((), ())
    yield snap(), evidence, "searching…", "", history, ""
    try:
        answerer = factory(model)
        raw = ""
        for event in answerer.stream(
            message or "", history or None, top_k=int(top_k), retrieval_mode=mode, strict=bool(strict)
        ):
            if isinstance(event, EvidenceEvent):
                papers = papers_of(answerer)
                evidence = evidence_html(event.sources, event.retrieved, papers=papers)
                took = event.timings.get("to_evidence", event.timings.get("retrieve", 0.0))
                phase = (
                    f"evidence ready in {took:.1f} s · the model is reading it…"
                    if event.sources
                    else "checking relevance…"
                )
                chat[-1]["content"] = "_Reading the evidence…_" if event.sources else "_Checking…_"
                yield snap(), evidence, phase, "", history, ""
            elif isinstance(event, TokenEvent):
                raw += event.text
                chat[-1]["content"] = streaming_markdown(raw)
                yield snap(), evidence, "writing… (unverified until finished)", "", history, ""
            elif isinstance(event, AnswerEvent):
                answer = event.answer
                history.append(answer)
                papers = papers_of(answerer)
                chat[-1]["content"] = answer_markdown(answer, papers)
                evidence = evidence_html(answer.sources, answer.retrieved, answer, papers)
                yield snap(), evidence, status_line(answer), plain_text(answer, papers), history, ""
    except Exception as exc:  # shown as a chat message; the log keeps the details
        if not isinstance(exc, RagError):
            logger.exception("answering failed")
        chat[-1]["content"] = friendly_error(exc)
        yield snap(), evidence, "error", "", history, ""


def papers_of(answerer: Answerer) -> Mapping[str, Paper]:
    """The papers of the answerer's index (already open once it has answered), for references;
    empty if there is none (the references then show titles and files, as before)."""
    try:
        return answerer.index.papers
    except Exception:  # a missing index is reported by the answer itself; never fail a reply here
        return {}


def request_problem(top_k: Any, mode: Any, model: Any, models: Sequence[str]) -> str | None:
    """What is wrong with a request's settings, or None.

    The API accepts any value, so the handler only allows what the page offers. Above all, a
    model is a name from the list, never a path from the request: that would let any client
    make the server open a file of its choosing.
    """
    try:
        k = float(top_k)
    except (TypeError, ValueError):
        k = float("nan")
    if not (1 <= k <= TOP_K_MAX and k == int(k)):
        return f"top-k must be a whole number from 1 to {TOP_K_MAX}, got {str(top_k)[:20]!r}"
    if mode not in RETRIEVAL_MODES:
        return f"unknown retrieval mode {str(mode)[:40]!r}; choose one of: {', '.join(RETRIEVAL_MODES)}"
    if model not in models:
        return f"unknown model {str(model)[:80]!r}; choose one of: {', '.join(models)}"
    return None


def waiting_view(message: str, chat: list[dict[str, Any]], history: list[Answer], ahead: int) -> tuple[Any, ...]:
    """What a user sees while their question waits for the model: their place in the queue."""
    others = "1 question" if ahead == 1 else f"{ahead} questions"
    messages = [
        *(chat or []),
        {"role": "user", "content": escape_md(message or "")},
        {"role": "assistant", "content": f"_Waiting for the model: {others} ahead of yours…_"},
    ]
    return messages, evidence_html((), ()), f"in the queue: {others} ahead", "", history, ""


def queue_full_message(full: QueueFull) -> str:
    return (
        f"The queue is full ({full.waiting} questions are waiting for the model); "
        f"please try again in about {full.retry_after_s} s."
    )


def build_app(
    config: RagConfig,
    factory: AnswererFactory | None = None,
    *,
    models: list[str] | None = None,
    queue: ModelQueue | None = None,
) -> gr.Blocks:
    """The Blocks app; ``factory`` maps a model name to an ``Answerer`` (tests pass fakes).

    ``queue`` is the line in front of the model; pass the HTTP API's so that chat messages and
    API calls wait in one queue (the default is a queue of this app's own, 32 places).
    """
    get_answerer = factory or default_factory(config)
    line = queue or ModelQueue()
    choices = models or list(dict.fromkeys([config.model, *KNOWN_MODELS]))
    # analytics_enabled=False: nothing phones home (air-gapped machines, private questions).
    with gr.Blocks(title="abstract-rag", analytics_enabled=False) as demo:
        gr.Markdown(
            "## abstract-rag\nAsk a question about the papers in the collection. Answers cite the papers behind "
            "each claim; every sentence is checked against the cited abstract, and the app says so when the "
            "collection does not answer."
        )
        history = gr.State([])
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Answers", height=520, elem_id="chat", buttons=["copy"], sanitize_html=True)
                with gr.Row():
                    box = gr.Textbox(
                        placeholder="Ask about the papers… (Enter to send)",
                        show_label=False,
                        scale=5,
                        elem_id="question",
                        max_length=5000,
                    )
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                    clear = gr.Button("New chat", scale=1, elem_id="clear")
                status = gr.Markdown("", elem_id="status")
                gr.Examples(EXAMPLES, inputs=box, label="Examples", cache_examples=False)
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    top_k = gr.Slider(
                        1,
                        TOP_K_MAX,
                        value=config.top_k,
                        step=1,
                        label="Papers given to the model (top-k)",
                        elem_id="topk",
                    )
                    mode = gr.Radio(
                        list(RETRIEVAL_MODES), value=config.retrieval_mode, label="Retrieval", elem_id="mode"
                    )
                    strict = gr.Checkbox(
                        value=config.strict, label="Strict: drop sentences no source supports", elem_id="strict"
                    )
                    model = gr.Dropdown(
                        choices,
                        value=config.model if config.model in choices else choices[0],
                        label="Model",
                        elem_id="model",
                    )
                with gr.Accordion("Copy answer with references", open=False, elem_id="copybox"):
                    copy = gr.Textbox(
                        show_label=False, lines=6, buttons=["copy"], interactive=False, elem_id="copytext"
                    )
            with gr.Column(scale=2):
                gr.Markdown("### Evidence")
                evidence = gr.HTML(evidence_html((), ()), elem_id="evidence")

        async def handler(
            message: str, chat_v: list[dict[str, Any]], hist: list[Answer], k: int, m: str, s: bool, mdl: str
        ) -> AsyncIterator[tuple[Any, ...]]:
            problem = request_problem(k, m, mdl, choices)
            if problem is not None:
                error = [*(chat_v or []), {"role": "assistant", "content": f"⚠️ {escape_md(problem)}"}]
                yield error, evidence_html((), ()), "error", "", hist, ""
                return
            try:
                turn = line.enter()
            except QueueFull as full:  # shown like Gradio's own "queue is full"; the question stays in the box
                raise gr.Error(queue_full_message(full)) from full
            try:
                shown = 0
                while not turn.granted:  # waiting holds no thread: the event loop wakes us
                    if turn.ahead != shown:
                        shown = turn.ahead
                        yield waiting_view(message, chat_v, hist, shown)
                    await turn.wait_async(timeout=1.0)
                steps = respond(get_answerer, message, chat_v, hist, int(float(k)), m, bool(s), mdl)
                async for out in iterate_in_thread(steps):
                    yield out
            finally:
                turn.release()

        outputs = [chat, evidence, status, copy, history, box]
        inputs = [box, chat, history, top_k, mode, strict, model]
        # One generation at a time, in the queue shared with the HTTP API (not Gradio's: API calls
        # must wait in the same line), so Gradio runs every chat event at once and each waits there.
        # show_progress="minimal": the chat and status line show progress themselves; Gradio's animated
        # overlay costs CPU that the model needs on a 2-core machine.
        events: dict[str, Any] = dict(concurrency_limit=None, show_progress="minimal")
        # One API endpoint, /ask (for scripts and the load test); the button is the same call.
        box.submit(handler, inputs, outputs, api_name="ask", **events)
        send.click(handler, inputs, outputs, api_visibility="private", **events)
        clear.click(
            lambda: ([], evidence_html((), ()), "", "", [], ""), None, outputs, queue=False, api_visibility="private"
        )
    demo.queue(max_size=32, default_concurrency_limit=1)
    return demo

"""The Gradio chat app: streaming answers, an evidence panel, settings.

The evidence panel fills as soon as retrieval is done, before the model starts; the answer
then streams in, and is replaced by the verified version (citations checked and renumbered,
unsupported sentences marked) when the model finishes. Generation is one request at a time
(2 CPU cores): chat messages and HTTP API calls wait in one queue (``ui.gate.ModelQueue``), and
the status line shows each user their place in it.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import gradio as gr

from rag.answer import (
    Answerer,
    AnswerEvent,
    EvidenceEvent,
    ProgressEvent,
    QuestionError,
    SentenceEvent,
    TokenEvent,
    clean_question,
)
from rag.config import RETRIEVAL_MODES, RagConfig
from rag.errors import (
    FilterError,
    IndexCorruptError,
    IndexMismatchError,
    IndexNotFoundError,
    LLMServerError,
    ModelError,
    RagError,
)
from rag.llm import KNOWN_MODELS
from rag.store import RagIndex, build_of, open_index, read_manifest
from rag.streaming import final_note
from rag.types import Answer, Citation, Paper
from ui.format import (
    answer_markdown,
    escape_md,
    evidence_html,
    plain_text,
    question_notes,
    status_line,
    streaming_markdown,
)
from ui.gate import ModelQueue, QueueFull, iterate_in_thread
from ui.library import UPLOAD_MAX_BYTES, UPLOAD_SUFFIXES, BuildStatus, Library, Upload, UploadError

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
.add-status progress { width: 100%; }
.add-counts, .add-problems { font-size: 0.85em; opacity: 0.8; }
.rag-tail { opacity: 0.45; }
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
    if isinstance(exc, LLMServerError):
        return f"⚠️ The language model server cannot answer: {escape_md(str(exc))}"
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
        if build_of(on_disk) != build_of(current.manifest):
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


def respond(
    factory: AnswererFactory,
    message: str,
    chat: list[dict[str, Any]],
    history: list[Answer],
    top_k: int,
    mode: str,
    strict: bool,
    model: str,
    filters: Mapping[str, Any] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """The streaming handler: yields (chat, evidence, status, copy text, history, textbox).
    ``filters`` (``rag.filters``) restrict the papers the answer may use."""

    def snap() -> list[dict[str, Any]]:  # each yield gets its own copy of the messages
        return [dict(m) for m in chat]

    chat = list(chat or [])
    history = list(history or [])
    turn = len(history) + 1  # this answer's anchors (#t2-ref-1) do not collide with earlier turns'
    chat.append({"role": "user", "content": escape_md(message or "")})
    chat.append({"role": "assistant", "content": "_Searching the papers…_"})
    evidence = evidence_html((), ())
    yield snap(), evidence, "searching…", "", history, ""
    try:
        answerer = factory(model)
        raw = ""
        head: list[str] = []
        sources: Sequence[Any] = ()
        retrieved: Sequence[Any] = ()
        shown: list[SentenceEvent] = []
        papers: Mapping[str, Paper] = {}

        def writing() -> str:
            return streaming_markdown(
                raw,
                [(s.sentence, s.reason, s.cited) for s in shown],
                raw_end=shown[-1].raw_end if shown else 0,
                papers=papers,
                turn=turn,
                head=head,
            )

        for event in answerer.stream(
            message or "",
            history or None,
            filters=filters or None,
            top_k=int(top_k),
            retrieval_mode=mode,
            strict=bool(strict),
        ):
            if isinstance(event, EvidenceEvent):
                papers = papers_of(answerer)
                sources, retrieved = event.sources, event.retrieved
                evidence = evidence_html(sources, retrieved, papers=papers, turn=turn)
                asked = clean_question(message or "", answerer.config.max_question_chars)[0]
                head = question_notes(event.question if history and event.question != asked else None, event.warnings)
                took = event.timings.get("to_evidence", event.timings.get("retrieve", 0.0))
                phase = (
                    f"evidence ready in {took:.1f} s · the model is reading it…"
                    if event.sources
                    else "checking relevance…"
                )
                chat[-1]["content"] = "\n".join([*head, "_Reading the evidence…_" if event.sources else "_Checking…_"])
                yield snap(), evidence, phase, "", history, ""
            elif isinstance(event, ProgressEvent):
                chat[-1]["content"] = "\n".join([*head, f"_{escape_md(event.text[0].upper() + event.text[1:])}…_"])
                yield snap(), evidence, f"{event.text}…", "", history, ""
            elif isinstance(event, SentenceEvent):
                shown.append(event)
                chat[-1]["content"] = writing()
                cited: dict[int, Citation] = {c.n: c for s in shown for c in s.cited}
                evidence = evidence_html(sources, retrieved, papers=papers, turn=turn, citations=list(cited.values()))
                yield snap(), evidence, writing_status(shown), "", history, ""
            elif isinstance(event, TokenEvent):
                raw += event.text
                chat[-1]["content"] = writing()
                yield snap(), evidence, writing_status(shown), "", history, ""
            elif isinstance(event, AnswerEvent):
                answer = event.answer
                history.append(answer)
                papers = papers_of(answerer)
                note = final_note([s.sentence for s in shown], answer)
                chat[-1]["content"] = answer_markdown(answer, papers, turn=turn, note=note)
                evidence = evidence_html(answer.sources, answer.retrieved, answer, papers, turn=turn)
                yield snap(), evidence, status_line(answer), plain_text(answer, papers), history, ""
    except Exception as exc:  # shown as a chat message; the log keeps the details
        if not isinstance(exc, RagError):
            logger.exception("answering failed")
        chat[-1]["content"] = friendly_error(exc)
        yield snap(), evidence, "error", "", history, ""


def writing_status(shown: Sequence[SentenceEvent]) -> str:
    """The status line while the model writes: how many sentences are verified so far."""
    if not shown:
        return "writing… (each sentence is checked as soon as it is complete)"
    flagged = sum(not s.supported for s in shown)
    done = f"{len(shown)} sentence{'s' if len(shown) != 1 else ''} checked"
    return f"writing… {done}" + (f", {flagged} not supported" if flagged else "")


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


def waiting_view(
    message: str, chat: list[dict[str, Any]], history: list[Answer], ahead: int, wait_s: float | None = None
) -> tuple[Any, ...]:
    """What a user sees while their question waits for the model: their place in the queue and,
    once answers have been timed, about how long that is."""
    others = "1 question" if ahead == 1 else f"{ahead} questions"
    if wait_s is not None:
        others += f", about {max(1, round(wait_s))} s"
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


def split_values(text: Any) -> list[str]:
    """Names typed in one box, separated by ';' or ',' ("Hinton; LeCun")."""
    return [v.strip() for v in re.split(r"[;,]", str(text or "")) if v.strip()]


def filters_from(year_from: Any, year_to: Any, author: Any, venue: Any, source: Any) -> dict[str, Any]:
    """The settings' filter boxes as ``rag.filters`` filters (empty boxes are no filter).

    Raises:
        FilterError: a year that is not a whole number.
    """
    years = []
    for value in (year_from, year_to):
        if value is None or str(value).strip() == "":
            years.append(None)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not number.is_integer():
            raise FilterError(f"a year must be a whole number, got {str(value)[:20]!r}")
        years.append(int(number))
    out: dict[str, Any] = {}
    if years != [None, None]:
        out["year"] = (years[0], years[1])
    for key, value in (("author", author), ("venue", venue), ("source", source)):
        if split_values(value):
            out[key] = split_values(value)
    return out


EXPORT_LABELS = {"BibTeX": "bib", "RIS": "ris", "CSL-JSON": "csl-json"}
_EXPORT_SUFFIX = {"bib": ".bib", "ris": ".ris", "csl-json": ".json"}


def references_file(history: Sequence[Answer], label: str) -> str | None:
    """A file with the references the last answer cites, in the chosen format (None when it cites
    nothing), for the download button."""
    last = history[-1] if history else None
    if last is None or not last.citations or not last.papers:
        return None
    fmt = EXPORT_LABELS.get(label, "bib")
    folder = Path(tempfile.mkdtemp(prefix="rag-refs-"))
    path = folder / f"references{_EXPORT_SUFFIX[fmt]}"
    path.write_text(last.references(fmt), encoding="utf-8")
    return str(path)


def status_html(status: BuildStatus) -> str:
    """The "Add papers" panel's progress bar, counts and problems per entry (all text escaped)."""
    if status.state == "idle":
        return '<div class="add-status" data-state="idle"></div>'
    percent = round(100 * status.fraction)
    counts = f"{status.papers_parsed} papers read"
    if status.chunks_to_embed:
        counts += f" · {status.chunks_embedded} of {status.chunks_to_embed} new chunks embedded"
    if status.seconds:
        counts += f" · {status.seconds:.1f} s"
    parts = [
        f'<div class="add-status" data-state="{html.escape(status.state)}" data-version="{status.version}">',
        f'<progress id="add-progress" max="100" value="{percent}"></progress>',
        f'<div class="add-message">{html.escape(status.message)}</div>',
        f'<div class="add-counts">{html.escape(counts)}</div>',
    ]
    if status.problems:
        shown = status.problems[:50]
        more = len(status.problems) - len(shown)
        items = "".join(f"<li>{html.escape(p)}</li>" for p in shown)
        tail = f"<li>… and {more} more</li>" if more else ""
        parts.append(
            f'<details class="add-problems" open><summary>{len(status.problems)} entries skipped or '
            f"changed</summary><ul>{items}{tail}</ul></details>"
        )
    parts.append("</div>")
    return "".join(parts)


def read_uploads(paths: Sequence[Any]) -> list[Upload]:
    """The uploaded files' names and bytes; gradio's temporary copies are deleted once read, so
    an upload is never served back. Raises ``UploadError`` for a file over the size limit."""
    uploads = []
    for item in paths or ():
        path = Path(getattr(item, "name", item))
        try:
            size = path.stat().st_size
            if size > UPLOAD_MAX_BYTES:
                raise UploadError(f"{path.name}: {size / 1e6:.1f} MB, over the {UPLOAD_MAX_BYTES / 1e6:.0f} MB limit")
            uploads.append(Upload(path.name, path.read_bytes()))
        finally:
            path.unlink(missing_ok=True)
    return uploads


def build_app(
    config: RagConfig,
    factory: AnswererFactory | None = None,
    *,
    models: list[str] | None = None,
    queue: ModelQueue | None = None,
    library: Library | None = None,
) -> gr.Blocks:
    """The Blocks app; ``factory`` maps a model name to an ``Answerer`` (tests pass fakes).

    ``queue`` is the line in front of the model; pass the HTTP API's so that chat messages and
    API calls wait in one queue (the default is a queue of this app's own, 32 places).
    ``library`` adds the "Add papers" panel (a ``factory`` that is a ``Library`` is used as
    one; without a factory the app makes one over ``config``); it is then the answerers' factory.
    """
    if library is None and isinstance(factory, Library):
        library = factory
    if library is None and factory is None:
        library = Library(config)
    get_answerer = library if library is not None else factory or default_factory(config)
    line = queue or ModelQueue()
    # Behind --llm-url the server decides which models exist: offer only the configured one.
    choices = models or ([config.model] if config.llm_url else list(dict.fromkeys([config.model, *KNOWN_MODELS])))
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
                    gr.Markdown("Only papers that match every filter given (empty: no filter):")
                    with gr.Row():
                        year_from = gr.Number(None, label="Year from", precision=0, elem_id="year-from")
                        year_to = gr.Number(None, label="Year to", precision=0, elem_id="year-to")
                    author = gr.Textbox(
                        label="Author (any of; separate with ;)", placeholder="Hinton; LeCun", elem_id="author"
                    )
                    venue = gr.Textbox(label="Venue contains", placeholder="NeurIPS", elem_id="venue")
                    source = gr.Textbox(label="Corpus file (a name or a glob)", placeholder="*.bib", elem_id="source")
                with gr.Accordion("Cited references", open=False, elem_id="refsbox"):
                    with gr.Row():
                        ref_format = gr.Radio(
                            list(EXPORT_LABELS), value="BibTeX", show_label=False, elem_id="ref-format", scale=2
                        )
                        download = gr.DownloadButton(
                            "Download the last answer's references",
                            value=None,
                            interactive=False,
                            elem_id="download-refs",
                            scale=1,
                        )
                with gr.Accordion("Copy answer with references", open=False, elem_id="copybox"):
                    copy = gr.Textbox(
                        show_label=False, lines=6, buttons=["copy"], interactive=False, elem_id="copytext"
                    )
            with gr.Column(scale=2):
                gr.Markdown("### Evidence")
                evidence = gr.HTML(evidence_html((), ()), elem_id="evidence")
                if library is not None:
                    with gr.Accordion("Add papers", open=False, elem_id="addpapers"):
                        gr.Markdown(
                            "Add your own papers: a BibTeX (.bib), RIS (.ris), CSL-JSON (.json), JSONL, CSV or "
                            f"listing (.txt) file, at most {UPLOAD_MAX_BYTES // 2**20} MB each. Entries need a "
                            "title and an abstract. The next question uses them; no restart needed."
                        )
                        upload = gr.File(
                            file_count="multiple",
                            file_types=list(UPLOAD_SUFFIXES),
                            type="filepath",
                            label="Files to add",
                            elem_id="upload",
                        )
                        add = gr.Button("Add to the collection", elem_id="add-papers")
                        add_status = gr.HTML(status_html(library.status()), elem_id="add-status")

        async def handler(
            message: str,
            chat_v: list[dict[str, Any]],
            hist: list[Answer],
            k: int,
            m: str,
            s: bool,
            mdl: str,
            y_from: Any = None,
            y_to: Any = None,
            who: Any = None,
            where: Any = None,
            src: Any = None,
        ) -> AsyncIterator[tuple[Any, ...]]:
            problem = request_problem(k, m, mdl, choices)
            filters: dict[str, Any] = {}
            if problem is None:
                try:
                    filters = filters_from(y_from, y_to, who, where, src)
                except FilterError as exc:
                    problem = str(exc)
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
                        yield waiting_view(message, chat_v, hist, shown, turn.wait_s)
                    await turn.wait_async(timeout=1.0)
                steps = respond(get_answerer, message, chat_v, hist, int(float(k)), m, bool(s), mdl, filters)
                async for out in iterate_in_thread(steps):
                    yield out
            finally:
                turn.release()

        outputs = [chat, evidence, status, copy, history, box]
        inputs = [box, chat, history, top_k, mode, strict, model, year_from, year_to, author, venue, source]
        # One generation at a time, in the queue shared with the HTTP API (not Gradio's: API calls
        # must wait in the same line), so Gradio runs every chat event at once and each waits there.
        # show_progress="minimal": the chat and status line show progress themselves; Gradio's animated
        # overlay costs CPU that the model needs on a 2-core machine.
        events: dict[str, Any] = dict(concurrency_limit=None, show_progress="minimal")

        # One API endpoint, /ask (for scripts and the load test); the button is the same call.
        def refs_button(hist: list[Answer], label: str) -> Any:
            path = references_file(hist or [], label)
            return gr.update(value=path, interactive=path is not None)

        refs_args: dict[str, Any] = dict(queue=False, api_visibility="private")
        box.submit(handler, inputs, outputs, api_name="ask", **events).then(
            refs_button, [history, ref_format], download, **refs_args
        )
        send.click(handler, inputs, outputs, api_visibility="private", **events).then(
            refs_button, [history, ref_format], download, **refs_args
        )
        ref_format.change(refs_button, [history, ref_format], download, **refs_args)
        if library is not None:
            lib = library

            async def add_papers(files: list[Any] | None, mdl: str) -> AsyncIterator[tuple[str, Any]]:
                try:
                    uploads = await anyio.to_thread.run_sync(read_uploads, files or [])
                    status = lib.add(uploads, model=mdl if mdl in choices else None)
                except RagError as exc:  # a wrong file, or a build already running
                    yield f'<div class="add-status" data-state="refused">⚠️ {html.escape(str(exc))}</div>', None
                    return
                yield status_html(status), None
                while status.running:
                    await asyncio.sleep(0.5)
                    status = lib.status()
                    yield status_html(status), gr.update()

            # Not in the model's queue: a build runs beside the answers, and a second upload is refused at once.
            add.click(
                add_papers,
                [upload, model],
                [add_status, upload],
                concurrency_limit=None,
                show_progress="minimal",
                api_visibility="private",
            )
        clear.click(
            lambda: ([], evidence_html((), ()), "", "", [], ""), None, outputs, queue=False, api_visibility="private"
        )
    demo.queue(max_size=32, default_concurrency_limit=1)
    return demo

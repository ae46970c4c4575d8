"""The HTTP API: ask, stream, search and papers as JSON, beside the chat app.

It runs in the chat app's process, on the same ``Answerer`` (one index, one model) and in the same
queue in front of the model (``ui.gate.ModelQueue``): an API call waits behind chat messages
and the other way round. Every route is mounted under ``/api`` by ``ui.server.create_app``.

Errors are JSON ``{"detail": ...}``: 400 for a question the pipeline cannot ask (the message the
CLI prints), 404 for an unknown paper, 422 for a malformed request (FastAPI names the field),
429 with ``Retry-After`` when the queue is full, 503 with what to run when the index or the
model cannot be used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from rag.answer import Answerer, AnswerEvent, EvidenceEvent, QuestionError, TokenEvent, clean_question
from rag.config import RagConfig
from rag.errors import (
    ConfigError,
    ContextOverflowError,
    FilterError,
    IndexCorruptError,
    IndexMismatchError,
    IndexNotFoundError,
    LLMServerError,
    ModelError,
    RagError,
)
from rag.filters import PaperFilter
from rag.retrieve import Retriever
from rag.types import RetrievedPaper
from ui.gate import ModelQueue, QueueFull, Turn, iterate_in_thread
from ui.schemas import (
    SEARCH_K_MAX,
    AnswerOut,
    AskRequest,
    ErrorOut,
    Filters,
    HealthOut,
    IndexHealth,
    Mode,
    ModelHealth,
    PaperOut,
    QueueFullOut,
    QueueHealth,
    SearchOut,
)

logger = logging.getLogger(__name__)

AnswererFactory = Callable[[str], Answerer]
# A request body of the API is a question, a short conversation and a few settings.
MAX_BODY_BYTES = 64 * 1024
NO_INDEX = "there is no index yet: run `rag build` on the server, then try again"
BAD_INDEX = "the index cannot be used (details in the server log): run `rag build --force` on the server"
NO_MODEL = (
    "the language model is not available (details in the server log): "
    "`rag models` on the server lists the models and their status"
)
NO_LLM_SERVER = "the language model server cannot answer (details in this server's log): check --llm-url / $RAG_LLM_URL"
INTERNAL = "something went wrong while answering; the details are in the server log"
# Every paper both retrievers put among their candidates, for filtering before the top k.
_ALL_CANDIDATES = 1_000_000


def error_of(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and client message for an error of the pipeline.

    Messages about the index or the model name no server path: the log has the details.
    """
    if isinstance(exc, QuestionError):
        return 400, str(exc)  # what `rag ask` prints after "error: "
    if isinstance(exc, IndexNotFoundError):
        return 503, NO_INDEX
    if isinstance(exc, (IndexMismatchError, IndexCorruptError)):
        return 503, BAD_INDEX
    if isinstance(exc, LLMServerError):
        return 503, NO_LLM_SERVER
    if isinstance(exc, ModelError):
        return 503, NO_MODEL
    if isinstance(exc, (ConfigError, FilterError, ContextOverflowError)):
        return 400, str(exc)  # says which setting, filter or what to shorten; names no path
    return 500, INTERNAL


def _log_error(exc: BaseException) -> None:
    if isinstance(exc, QuestionError):
        return
    if isinstance(exc, RagError):
        logger.warning("API request failed: %s", exc)
    else:
        logger.error("API request failed", exc_info=exc)


# -- filters ---------------------------------------------------------------------------------------------
class _FilteredRetriever:
    """A view of a ``Retriever`` that keeps only the papers ``allow`` accepts, best first."""

    def __init__(self, base: Retriever, allow: Callable[[str], bool]) -> None:
        self._base = base
        self._allow = allow

    def search(self, query: str, top_k: int, mode: str = "hybrid", **kwargs: Any) -> list[RetrievedPaper]:
        found = self._base.search(query, _ALL_CANDIDATES, mode, **kwargs)
        return [p for p in found if self._allow(p.paper_id)][:top_k]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


class _FilteredAnswerer(Answerer):
    """An ``Answerer`` that shares everything ``base`` has loaded but retrieves only allowed papers.

    The pipeline reads its retriever through the public ``retriever`` property; this overrides
    just that (``tests/test_api.py`` checks that filters do restrict the sources).
    """

    def __init__(self, base: Answerer, allow: Callable[[str], bool]) -> None:
        super().__init__(base.config, index=base.index, embedder=base.embedder, generator=base.generator)
        self._base = base
        self._view = _FilteredRetriever(base.retriever, allow)

    @property
    def retriever(self) -> Retriever:
        return self._view  # type: ignore[return-value]

    @property
    def sentence_embedder(self) -> Any:
        return self._base.sentence_embedder


def _allow(filters: Filters) -> Callable[[str], bool]:
    ids = set(filters.paper_ids or ())
    return lambda paper_id: paper_id in ids


# -- the service -------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """A checked request, ready to wait for its turn."""

    answerer: Answerer
    question: str
    history: list[tuple[str, str]] | None
    overrides: dict[str, Any]


class ApiService:
    """What the routes share: the config, the answerer of the server's model, the queue, and
    the model's state for ``/api/health``."""

    def __init__(self, config: RagConfig, factory: AnswererFactory, queue: ModelQueue) -> None:
        self.config = config
        self.factory = factory
        self.queue = queue
        self.model = config.model
        self._state_lock = threading.Lock()
        self._model_status = "not loaded yet (loads with the first question)"
        self._model_ok = True

    def answerer(self) -> Answerer:
        return self.factory(self.model)

    # model state ---------------------------------------------------------------------------------------
    def set_model_status(self, status: str, ok: bool) -> None:
        with self._state_lock:
            self._model_status, self._model_ok = status, ok

    def model_health(self) -> ModelHealth:
        with self._state_lock:
            return ModelHealth(ok=self._model_ok, name=self.model, status=self._model_status)

    def note_failure(self, exc: BaseException) -> None:
        if isinstance(exc, ModelError):
            self.set_model_status(
                f"unavailable: {NO_LLM_SERVER if isinstance(exc, LLMServerError) else NO_MODEL}", ok=False
            )

    def warm_up(self) -> None:
        """Load the index, the embedder and the model now, so that the first question is fast."""
        self.set_model_status("loading", ok=True)
        try:
            self.answerer().warm_up()
        except Exception as exc:  # the first question reports it too
            logger.warning("warm-up failed: %s", exc)
            if isinstance(exc, ModelError):
                self.note_failure(exc)
            else:
                self.set_model_status("not loaded yet (warm-up failed; see the server log)", ok=True)
            return
        self.set_model_status("ready", ok=True)
        logger.info("models loaded")

    # requests ------------------------------------------------------------------------------------------
    def prepare(self, body: AskRequest) -> Prepared:
        """Check a request before it waits in the queue (blocking: run it in a worker thread).

        Raises the pipeline's errors for a bad question or an unusable index or model, and
        ``RequestValidationError`` for filter ids the index does not have.
        """
        clean_question(body.question, self.config.max_question_chars)
        answerer = self.answerer()
        try:
            index = answerer.index
            answerer.generator  # noqa: B018 - resolves (and checks) the model file now, not mid-answer
        except ModelError as exc:
            self.note_failure(exc)
            raise
        if body.filters is not None and not body.filters.empty:
            unknown = [
                {
                    "type": "value_error",
                    "loc": ("body", "filters", "paper_ids", i),
                    "msg": f"no paper with id {pid[:80]!r} in the index",
                    "input": pid,
                }
                for i, pid in enumerate(body.filters.paper_ids or ())
                if pid not in index.papers
            ]
            if unknown:
                raise RequestValidationError(unknown)
            if body.filters.paper_ids is not None:
                answerer = _FilteredAnswerer(answerer, _allow(body.filters))
        overrides: dict[str, Any] = {"top_k": body.top_k, "retrieval_mode": body.mode, "strict": body.strict}
        if body.filters is not None and body.filters.metadata():
            overrides["filters"] = PaperFilter.from_dict(body.filters.metadata())  # a bad one is a 400 now
        history = [(t.question, t.answer) for t in body.history] or None
        return Prepared(answerer, body.question, history, {k: v for k, v in overrides.items() if v is not None})

    def run(self, prepared: Prepared) -> dict[str, Any]:
        """Answer a prepared request (blocking; call it during the request's turn)."""
        try:
            answer = prepared.answerer.ask(prepared.question, prepared.history, **prepared.overrides)
        except Exception as exc:
            self.note_failure(exc)
            raise
        if answer.sources:  # the model ran
            self.set_model_status("ready", ok=True)
        return answer.to_dict()

    async def events(self, turn: Turn, prepared: Prepared) -> AsyncIterator[str]:
        """The server-sent events of one streamed answer (the caller releases ``turn``)."""
        count = 0

        def sse(kind: str, data: Any) -> str:
            nonlocal count
            count += 1
            body = json.dumps(data, ensure_ascii=False, default=str)  # one line: JSON escapes newlines
            return f"event: {kind}\nid: {count}\ndata: {body}\n\n"

        shown = 0
        while not turn.granted:
            if turn.ahead != shown:
                shown = turn.ahead
                wait = turn.wait_s
                yield sse("queued", {"ahead": shown, "wait_s": None if wait is None else round(wait, 1)})
            elif not await turn.wait_async(timeout=10.0):
                yield ": waiting\n\n"  # keeps proxies from closing the connection; a gone client is noticed
        stream = prepared.answerer.stream(prepared.question, prepared.history, **prepared.overrides)
        try:
            async for event in iterate_in_thread(stream):
                kind, data = event_payload(event)
                yield sse(kind, data)
                if kind == "answer" and data.get("sources"):
                    self.set_model_status("ready", ok=True)
        except Exception as exc:  # after the first byte, the status line is sent: report it as an event
            _log_error(exc)
            self.note_failure(exc)
            status, detail = error_of(exc)
            yield sse("error", {"status": status, "detail": detail})

    def index_health(self) -> IndexHealth:
        try:
            manifest = self.answerer().index.manifest
        except RagError as exc:
            logger.warning("health: %s", exc)
            return IndexHealth(ok=False, detail=error_of(exc)[1])
        embedding = manifest.get("embedding") or {}
        counts = manifest.get("counts") or {}
        return IndexHealth(
            ok=True,
            papers=counts.get("papers"),
            chunks=counts.get("chunks"),
            embedding_model=embedding.get("name"),
            embedding_dimension=embedding.get("dimension"),
            index_type=(manifest.get("faiss") or {}).get("type"),
            corpus_hash=manifest.get("corpus_hash"),
            built_at=manifest.get("built_at"),
            format_version=manifest.get("format_version"),
        )


def event_payload(event: Any) -> tuple[str, Any]:
    """(event type, JSON data) of a pipeline event.

    Event types are the events' own ``kind`` (``progress`` and ``sentence`` events send their
    ``to_dict()``); one the API does not know yet is sent with its ``to_dict()`` or fields.
    """
    kind = str(getattr(event, "kind", type(event).__name__.lower()))
    if isinstance(event, EvidenceEvent):
        return kind, {
            "question": event.question,
            "retrieved": [r.to_dict() for r in event.retrieved],
            "sources": [s.to_dict() for s in event.sources],
            "timings": {k: round(v, 4) for k, v in event.timings.items()},
            "warnings": list(event.warnings),
        }
    if isinstance(event, TokenEvent):
        return kind, {"text": event.text}
    if isinstance(event, AnswerEvent):
        return kind, event.answer.to_dict()
    if hasattr(event, "to_dict"):
        return kind, event.to_dict()
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        return kind, dataclasses.asdict(event)
    return kind, {"value": str(event)}


class _TurnResponse(StreamingResponse):
    """A stream that ends the request's turn when it ends, however it ends (finished, failed,
    or cut by a client that went away), and even if it never started."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], turn: Turn) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._turn = turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()  # runs the generator's cleanup (the model's stream closed) first
            self._turn.release()


# -- routes -------------------------------------------------------------------------------------------------
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the question has no words (the message `rag ask` gives)"},
    429: {
        "model": QueueFullOut,
        "description": "the queue in front of the model is full; retry after `Retry-After` seconds",
    },
    503: {"model": ErrorOut, "description": "the index or the model cannot be used; the message says what to run"},
}
# The stream's own errors come before the stream starts: JSON, like /api/ask's.
_STREAM_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": spec["description"],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{spec['model'].__name__}"}}},
    }
    for code, spec in _ERRORS.items()
}
_STREAM_DOC = """Server-sent events (`text/event-stream`), in this order:

- `queued` (0 or more): `{"ahead": n}` while the request waits for the model;
- `evidence` (1): the retrieved papers and the sentences the model will read, before it starts;
- `progress` (1, when the model runs): `{"prompt_tokens": 450, "estimate_s": 4.1, "text": "reading 450
  tokens of evidence, about 4 s", ...}` while the model reads the prompt;
- `token` (0 or more): `{"text": ...}` pieces of the model's raw, unverified text;
- `sentence` (0 or more, among the tokens): each sentence verified as soon as it is complete, in its
  final form: `{"index", "text", "citations", "cited", "verdict", "supported", "reason", "raw_end"}`;
  it comes before the token that started the next sentence (clients must ignore event types they
  do not know);
- `answer` (1, last): the verified answer, as `POST /api/ask` returns it;
- `error` (instead of the rest): `{"status": ..., "detail": ...}` when the request fails after
  the stream has started.

Each event has an `id` counting from 1; its `data` is one line of JSON. Errors found before the
stream starts are plain HTTP errors (400, 422, 429, 503) as for `POST /api/ask`."""
_STREAM_EXAMPLE = (
    'event: evidence\nid: 1\ndata: {"question": "...", "retrieved": [...], "sources": [...], "timings": {...}}\n\n'
    'event: progress\nid: 2\ndata: {"prompt_tokens": 450, "estimate_s": 4.1, "text": "reading 450 tokens ..."}\n\n'
    'event: token\nid: 3\ndata: {"text": "Matryoshka "}\n\n'
    'event: sentence\nid: 8\ndata: {"index": 0, "text": "... [1].", "verdict": "supported", "reason": null, ...}\n\n'
    'event: answer\nid: 9\ndata: {"question": "...", "text": "... [1].", "citations": [...], ...}\n\n'
)
_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": _STREAM_DOC, "content": {"text/event-stream": {"example": _STREAM_EXAMPLE}}},
    **_STREAM_ERRORS,
}


def build_router(service: ApiService, *, dependencies: Sequence[Any] = ()) -> APIRouter:
    """The API's routes (to be included under ``/api``)."""
    router = APIRouter(tags=["abstract-rag"], dependencies=list(dependencies), max_body_size=MAX_BODY_BYTES)

    async def prepared(body: AskRequest) -> Prepared:
        return await anyio.to_thread.run_sync(service.prepare, body)

    @router.post("/ask", response_model=AnswerOut, responses=_ERRORS, summary="Answer a question with citations")
    async def ask(body: AskRequest, request: Request) -> Any:
        """Retrieve, generate and verify: the answer with its citations, sentence verdicts, refusal
        and timings (`Answer.to_dict()`). Waits for the model in the queue it shares with the chat."""
        ready = await prepared(body)
        turn = service.queue.enter()
        try:
            while not await turn.wait_async(timeout=1.0):
                if await request.is_disconnected():  # nobody waits for this answer any more
                    return JSONResponse({"detail": "the client went away"}, status_code=503)
            return await anyio.to_thread.run_sync(service.run, ready)
        finally:
            turn.release()

    @router.post(
        "/ask/stream",
        response_class=_TurnResponse,
        status_code=200,
        responses=_STREAM_RESPONSES,
        summary="Answer a question, streaming events as they happen",
    )
    async def ask_stream(body: AskRequest) -> Response:
        """The same answer as `POST /api/ask`, streamed: evidence first, then the model's tokens,
        then the verified answer."""
        ready = await prepared(body)
        turn = service.queue.enter()
        return _TurnResponse(service.events(turn, ready), turn)

    @router.get("/search", response_model=SearchOut, responses={400: _ERRORS[400], 503: _ERRORS[503]})
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=1000, description="what to look for")],
        k: Annotated[int, Query(ge=1, le=SEARCH_K_MAX, description="how many papers")] = 5,
        mode: Annotated[Mode, Query(description="retrieval mode")] = "hybrid",
        year: Annotated[
            str | None, Query(max_length=20, description="only these years: 2021, 2019-2023, 2019-")
        ] = None,
        author: Annotated[list[str] | None, Query(max_length=20, description="only papers by this author")] = None,
        venue: Annotated[
            list[str] | None, Query(max_length=20, description="only papers whose venue contains this")
        ] = None,
        source: Annotated[
            list[str] | None, Query(max_length=20, description="only papers read from this corpus file")
        ] = None,
    ) -> Any:
        """The papers that best match a query, best first, with their scores (no model involved).
        A malformed filter, or one that no paper matches, is a 400 that says which."""
        filters = {k: v for k, v in {"year": year, "author": author, "venue": venue, "source": source}.items() if v}

        def run() -> SearchOut:
            text, _ = clean_question(q, service.config.max_question_chars)
            retriever = service.answerer().retriever
            start = time.perf_counter()
            found = retriever.search(text, k, mode, filters=filters or None)
            seconds = round(time.perf_counter() - start, 4)
            return SearchOut.model_validate(
                {"query": text, "mode": mode, "k": k, "results": [r.to_dict() for r in found], "seconds": seconds}
            )

        return await anyio.to_thread.run_sync(run)

    @router.get(
        "/papers/{paper_id:path}",
        response_model=PaperOut,
        responses={404: {"model": ErrorOut, "description": "no such paper"}, 503: _ERRORS[503]},
    )
    async def paper(paper_id: Annotated[str, Path(max_length=300, description="a paper id")]) -> Any:
        """A paper with its metadata and abstract."""
        index = await anyio.to_thread.run_sync(lambda: service.answerer().index)
        found = index.papers.get(paper_id)
        if found is None:
            return JSONResponse({"detail": f"no paper with id {paper_id[:80]!r}"}, status_code=404)
        return found.to_dict()

    @router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
    async def health(response: Response) -> HealthOut:
        """The index (a manifest summary), the model and the queue; 503 when either cannot be used."""
        index = await anyio.to_thread.run_sync(service.index_health)
        model = service.model_health()
        ok = index.ok and model.ok
        if not ok:
            response.status_code = 503
        return HealthOut(
            status="ok" if ok else "unavailable",
            index=index,
            model=model,
            queue=QueueHealth(**service.queue.snapshot()),
        )

    return router


def install_error_handlers(app: FastAPI, service: ApiService) -> None:
    """Map the pipeline's errors and a full queue to JSON responses."""

    async def rag_error(request: Request, exc: Exception) -> JSONResponse:
        _log_error(exc)
        status, detail = error_of(exc)
        return JSONResponse({"detail": detail}, status_code=status)

    async def queue_full(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, QueueFull)
        return JSONResponse(
            {"detail": str(exc), "retry_after_s": exc.retry_after_s},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this response, so the server logs it.
        return JSONResponse({"detail": INTERNAL}, status_code=500)

    app.add_exception_handler(RagError, rag_error)
    app.add_exception_handler(QueueFull, queue_full)
    app.add_exception_handler(Exception, unexpected)

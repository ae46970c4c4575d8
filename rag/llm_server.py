"""A ``Generator`` behind any OpenAI-compatible chat-completions server.

llama.cpp's ``llama-server``, llama-cpp-python's ``python -m llama_cpp.server``, vLLM and Ollama
all serve ``/v1/chat/completions``; the maintained ``openai`` client speaks to each of them. This
is how a group shares one model server among several app processes (README, "Scaling out").

Decoding is greedy (temperature 0, top-k 1, no repetition penalty), as in process, so the same
model gives the same answer either way. Token counts come from the server's ``usage`` when it
reports one (``stream_options.include_usage``: llama-server, vLLM, Ollama); the bundled Python
server does not, and then ``count_tokens`` falls back to a tokenizer-free estimate (the server's
tokenizer is not at hand here, and the count is only reported, never used to cut the prompt).

Every failure is a ``LLMServerError`` (a ``ModelError``) whose message a user can act on; a reply
that stops after its first piece raises ``LLMStreamError``, which the ``Answerer`` turns into an
answer verified as far as it got and marked incomplete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from rag.errors import LLMServerError, LLMStreamError, ModelError
from rag.evidence import approx_tokens

logger = logging.getLogger(__name__)

Message = dict[str, str]
# Per-message overhead of a chat template (role markers, separators) in the token estimate.
_TEMPLATE_TOKENS = 4


def _key(messages: Sequence[Message]) -> str:
    return hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode()).hexdigest()


class OpenAIGenerator:
    """Streams chat replies from an OpenAI-compatible server.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8080/v1``.
        model: the model name the server knows (``--alias`` / ``--model_alias`` /
            ``--served-model-name``). Checked against ``/v1/models`` on first use.
        api_key: sent as a bearer token; ``None`` for servers without authentication.
        timeout: seconds to wait for a connection, and for each next piece of a reply.
        adopt_single: when ``model`` is not listed but the server serves exactly one model, use
            that one (for the default model name, which a user did not choose).
        seed: sent with each request; greedy decoding does not need it, samplers that ignore
            temperature 0 do.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        adopt_single: bool = False,
        seed: int = 0,
        max_retries: int = 1,
    ) -> None:
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ModelError("the openai client is not installed: pip install openai") from exc
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.adopt_single = adopt_single
        self.seed = seed
        # The key goes to the client only; it is never logged nor kept in anything reported.
        self._client = openai.OpenAI(
            base_url=self.url, api_key=api_key or "no-key", timeout=timeout, max_retries=max_retries
        )
        self._openai = openai
        self._checked = False
        self._lock = threading.Lock()
        self._usage: OrderedDict[str, tuple[int, int]] = OrderedDict()

    @property
    def name(self) -> str:
        return f"{self.model} via {self.url}"

    # -- errors ----------------------------------------------------------------------------------
    def error(self, exc: BaseException) -> LLMServerError:
        """The ``LLMServerError`` that says what went wrong with a request, in words a user can act on."""
        openai = self._openai
        where = f"the LLM server at {self.url}"
        if isinstance(exc, LLMServerError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return LLMServerError(
                f"{where} did not answer within {self.timeout:g} s (llm_timeout); it may be overloaded "
                "or still loading its model"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return LLMServerError(
                f"cannot reach {where} ({cause}); is it running, and is the URL right (it usually ends in /v1)?"
            )
        if isinstance(exc, openai.APIStatusError):
            message = _server_message(exc)
            if exc.status_code == 404 and "model" in message.lower():
                return LLMServerError(f"{where} does not serve the model {self.model!r}: {message}")
            if exc.status_code in (401, 403):
                return LLMServerError(
                    f"{where} refused the request (HTTP {exc.status_code}: {message}); set its API key in $RAG_LLM_API_KEY"
                )
            return LLMServerError(f"{where} answered HTTP {exc.status_code}: {message}")
        if isinstance(exc, openai.OpenAIError):
            return LLMServerError(f"{where} failed: {exc}")
        return LLMServerError(f"{where} failed: {type(exc).__name__}: {exc}")

    # -- the model check -------------------------------------------------------------------------
    def check(self) -> None:
        """Check once that the server answers and serves ``model`` (raises ``LLMServerError``).

        A server whose ``/v1/models`` is missing (404) is not checked here: the first request
        reports a wrong name. llama.cpp's servers answer any name with their one model, so the
        name is checked against the list rather than left to the request.
        """
        with self._lock:
            if self._checked:
                return
            try:
                served = [m.id for m in self._client.models.list()]
            except self._openai.NotFoundError:
                logger.info("%s has no /models endpoint; the model name is not checked", self.url)
                served = []
            except Exception as exc:  # noqa: BLE001 - every failure becomes a clear LLMServerError
                raise self.error(exc) from exc
            if served and self.model not in served:
                if self.adopt_single and len(served) == 1:
                    logger.warning(
                        "the LLM server at %s does not list %r; using the one model it serves, %r",
                        self.url,
                        self.model,
                        served[0],
                    )
                    self.model = served[0]
                else:
                    raise LLMServerError(
                        f"the LLM server at {self.url} does not serve the model {self.model!r}; it serves "
                        f"{', '.join(repr(s) for s in served)} (pass one with --model)"
                    )
            self._checked = True

    # -- the Generator protocol ------------------------------------------------------------------
    def stream(self, messages: Sequence[Message], *, max_tokens: int) -> Iterator[str]:
        """Yield the reply's pieces as the server sends them; raise ``LLMStreamError`` if the reply
        stops after its first piece, ``LLMServerError`` for any failure before it."""
        self.check()
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=list(messages),  # type: ignore[arg-type]
                stream=True,
                max_tokens=max_tokens,
                temperature=0.0,
                top_p=1.0,
                seed=self.seed,
                stream_options={"include_usage": True},
                # llama.cpp's samplers: greedy, and no repetition penalty (llama_cpp.server's
                # default is 1.1, which pushes the model away from quoting its sources).
                extra_body={"top_k": 1, "repeat_penalty": 1.0},
            )
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc) from exc
        pieces = 0
        finished = False
        usage: tuple[int, int] | None = None
        try:
            for chunk in response:
                if getattr(chunk, "usage", None) is not None:
                    usage = (int(chunk.usage.prompt_tokens or 0), int(chunk.usage.completion_tokens or 0))
                for choice in chunk.choices:
                    if choice.finish_reason:
                        finished = True
                    delta = choice.delta.content if choice.delta is not None else None
                    if delta:
                        pieces += 1
                        yield delta
        except GeneratorExit:
            raise
        except Exception as exc:  # noqa: BLE001
            if pieces:
                raise LLMStreamError(
                    f"the LLM server at {self.url} stopped sending mid-answer ({self.error(exc)})"
                ) from exc
            raise self.error(exc) from exc
        finally:
            response.close()
        if not finished:
            raise LLMStreamError(f"the LLM server at {self.url} ended its reply without finishing it")
        if usage is not None:
            with self._lock:
                self._usage[_key(messages)] = usage
                while len(self._usage) > 64:
                    self._usage.popitem(last=False)

    def usage(self, messages: Sequence[Message]) -> tuple[int, int] | None:
        """(prompt, completion) tokens the server reported for the last reply to ``messages``."""
        with self._lock:
            return self._usage.get(_key(messages))

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """The server's prompt token count for a reply to these messages when it reported one;
        otherwise a tokenizer-free estimate (about 1.3 tokens a word, plus the template's markers)."""
        reported = self.usage(messages)
        if reported is not None:
            return reported[0]
        return sum(approx_tokens(m["content"]) + _TEMPLATE_TOKENS for m in messages)


def _server_message(exc: Any) -> str:
    """The server's own error message from an error response (OpenAI's, llama.cpp's or FastAPI's form)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            if msg:
                return str(msg)[:500]
        elif isinstance(err, str):
            return err[:500]
        if body.get("detail"):
            return str(body["detail"])[:500]
    return str(getattr(exc, "message", exc))[:500]

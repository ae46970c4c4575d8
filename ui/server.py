"""One server for the chat app and the HTTP API: one process, one model, one queue.

``create_app`` builds a FastAPI app with the API under ``/api``, its OpenAPI page at ``/docs``
(served from local files: no CDN, so it works offline) and, unless asked otherwise, the Gradio
chat app mounted at ``/``. Both sides share one ``Answerer`` per model and one ``ModelQueue``.

Safety is one set of rules for both: the server binds 127.0.0.1 unless told otherwise; beyond
loopback it requires credentials (``--auth USER:PASSWORD`` or ``RAG_UI_AUTH``: the chat's login
page, HTTP Basic for the API) unless ``--no-auth`` says plainly to serve it open; bodies are
capped in size; on loopback, requests must name a loopback host (a web page cannot reach the
server through a DNS name rebound to 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from rag.config import RagConfig
from rag.errors import ConfigError
from ui.api import AnswererFactory, ApiService, build_router, install_error_handlers
from ui.gate import ModelQueue
from ui.library import UPLOAD_MAX_BYTES

logger = logging.getLogger(__name__)

AUTH_ENV = "RAG_UI_AUTH"
# Every request, the chat's included; a chat request carries the conversation so far, which
# stays far below this even after hundreds of turns.
MAX_REQUEST_BYTES = 1024 * 1024
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
REALM = "abstract-rag"


@dataclass(frozen=True, slots=True)
class Credentials:
    """The one user name and password of the chat app and the API."""

    user: str
    password: str

    @classmethod
    def parse(cls, text: str, where: str = "--auth") -> Credentials:
        user, sep, password = text.partition(":")
        if not sep or not user or not password:
            raise ConfigError(f"{where} must be USER:PASSWORD (both non-empty), got {_mask(text)!r}")
        return cls(user, password)

    def matches(self, user: str, password: str) -> bool:
        # Both compared in constant time, and both always compared: no early exit to time.
        ok_user = secrets.compare_digest(user.encode(), self.user.encode())
        ok_password = secrets.compare_digest(password.encode(), self.password.encode())
        return ok_user and ok_password


def _mask(text: str) -> str:
    user, sep, _ = text.partition(":")
    return f"{user}:***" if sep else "***"


def credentials_from(auth: str | None, environ: dict[str, str] | None = None) -> Credentials | None:
    """Credentials from ``--auth`` or, when it is not given, from ``RAG_UI_AUTH``."""
    if auth:
        return Credentials.parse(auth)
    env = (environ if environ is not None else os.environ).get(AUTH_ENV)
    return Credentials.parse(env, AUTH_ENV) if env else None


def is_loopback(host: str) -> bool:
    if host.strip("[]") in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_bind(host: str, credentials: Credentials | None, no_auth: bool) -> None:
    """Refuse to serve beyond this machine without credentials, unless told to plainly.

    Raises:
        ConfigError: a non-loopback ``host`` without credentials and without ``no_auth``, or
            credentials and ``no_auth`` together.
    """
    if credentials is not None and no_auth:
        raise ConfigError(f"--no-auth contradicts --auth / {AUTH_ENV}: give one of them")
    if is_loopback(host) or credentials is not None:
        return
    if not no_auth:
        raise ConfigError(
            f"refusing to serve on {host} without authentication: anyone who can reach it could use the "
            f"model and read the collection. Pass --auth USER:PASSWORD (or set {AUTH_ENV}), or --no-auth to "
            "serve it open on purpose"
        )
    logger.warning("serving on %s WITHOUT authentication (--no-auth)", host)


def basic_auth(credentials: Credentials) -> Any:
    """A dependency that requires HTTP Basic with ``credentials`` (declared in the OpenAPI page)."""
    scheme = HTTPBasic(realm=REALM, auto_error=False, description="the server's --auth USER:PASSWORD")

    # A default, not Annotated[...]: annotations are strings here, and `scheme` is not a global.
    def require(given: HTTPBasicCredentials | None = Depends(scheme)) -> None:  # noqa: B008
        if given is None or not credentials.matches(given.username, given.password):
            raise HTTPException(
                status_code=401,
                detail="authentication required: HTTP Basic with the server's user and password",
                headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )

    return require


def _add_docs(app: FastAPI, dependencies: list[Any]) -> None:
    """``/openapi.json`` and ``/docs`` (Swagger UI from the fastapi-offline package's files)."""
    static = files("fastapi_offline") / "static"
    app.mount("/docs/static", StaticFiles(directory=str(static)), name="docs-static")

    @app.get("/openapi.json", include_in_schema=False, dependencies=dependencies)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=dependencies)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title="abstract-rag API",
            swagger_js_url=f"{root}/docs/static/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/static/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/static/favicon.png",
            # No call to the public spec validator: the page works offline and tells no one.
            swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True},
        )


def create_app(
    config: RagConfig,
    factory: AnswererFactory | None = None,
    *,
    chat: bool = True,
    credentials: Credentials | None = None,
    queue: ModelQueue | None = None,
    host: str | None = "127.0.0.1",
    models: list[str] | None = None,
) -> FastAPI:
    """The server's ASGI app: ``/api/*``, ``/docs`` and (``chat=True``) the chat app at ``/``.

    Args:
        config: the pipeline settings; ``config.model`` is the model the API uses.
        factory: maps a model name to an ``Answerer``, shared by the chat and the API (tests
            pass fakes); default: one ``Answerer`` per model over one index and embedder.
        credentials: required on every route when given (chat login page, API HTTP Basic).
        queue: the line in front of the model (default: 32 waiting places).
        host: the address the server binds; on loopback, only loopback Host headers are
            accepted. ``None`` accepts any Host (tests).
        models: the models the chat page offers (default: the configured and bundled ones).
    """
    from ui.library import Library

    # The default factory is a Library: the chat app's "Add papers" swaps its index for both sides.
    factory = factory or Library(config)
    queue = queue or ModelQueue()
    service = ApiService(config, factory, queue)
    app = FastAPI(
        title="abstract-rag API",
        version="1",
        description=(
            "Questions over the paper abstracts of the collection, answered by a local model with "
            "verified citations. Generation is one request at a time, in one queue shared with the chat app."
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # The chat's uploads ("Add papers") are the largest requests; the API routes keep their own,
        # much lower limit.
        max_body_size=max(MAX_REQUEST_BYTES, UPLOAD_MAX_BYTES + 64 * 1024) if chat else MAX_REQUEST_BYTES,
        # No OpenTelemetry exporter even if the environment configures one: nothing leaves the machine.
        telemetry={"auto_configure": False},
    )
    dependencies = [Depends(basic_auth(credentials))] if credentials else []
    app.include_router(build_router(service, dependencies=dependencies), prefix="/api")
    install_error_handlers(app, service)
    _add_docs(app, dependencies)
    if host is not None and is_loopback(host):
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_NAMES))
    if chat:
        import gradio as gr

        from ui.app import CSS, build_app

        demo = build_app(config, factory, models=models, queue=queue)
        gr.mount_gradio_app(
            app,
            demo,
            path="/",
            auth=(credentials.user, credentials.password) if credentials else None,
            css=CSS,
            show_error=False,
            max_file_size=UPLOAD_MAX_BYTES,
            # Runs are kept only in the page; nothing offers to upload them anywhere.
            run_history=False,
            mcp_server=False,
        )
    app.state.service = service
    return app


def run_server(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` until interrupted. Access logs (URLs hold search queries) only with ``-vv``."""
    import uvicorn

    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info" if debug else "warning",
        access_log=debug,
        server_header=False,
    )

"""``rag ui``: the chat app and the HTTP API on this machine; ``rag serve``: the HTTP API alone."""

from __future__ import annotations

import argparse
import logging
import threading

from rag.cli import add_index_argument, add_llm_arguments, config_from_args

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Both commands live here so that one entry point (`ui`) registers them.
    p = sub.add_parser("ui", help="start the chat app and the HTTP API (http://127.0.0.1:7860, API docs at /docs)")
    _add_server_arguments(p)
    p.set_defaults(func=run, chat=True)
    p = sub.add_parser("serve", help="start the HTTP API alone, without the chat app (docs at /docs)")
    _add_server_arguments(p)
    p.set_defaults(func=run, chat=False)


def _add_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    add_llm_arguments(
        p,
        model_help="the model to serve (a bundled name or a .gguf path; with --llm-url, the name the server serves)",
    )
    p.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        default=None,
        help="require this login for the chat and HTTP Basic for the API (default: $RAG_UI_AUTH; "
        "prefer the variable: a command line is visible to other users of the machine)",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="serve beyond this machine without authentication (refused otherwise)",
    )
    add_index_argument(p)


def run(args: argparse.Namespace) -> int:
    from rag.store import read_manifest
    from ui.library import Library
    from ui.server import check_bind, create_app, credentials_from, run_server

    credentials = credentials_from(args.auth)
    check_bind(args.host, credentials, args.no_auth)
    cfg = config_from_args(args, index_dir="index", model="model", llm_url="llm_url")
    read_manifest(cfg.index_dir)  # a missing index is reported now, with how to build it
    # A Library: the answerers of the chat and the API, over an index the chat can add papers to.
    app = create_app(cfg, Library(cfg), chat=args.chat, credentials=credentials, host=args.host)
    # Load index, embedder and model while the page opens; /api/health shows the progress.
    threading.Thread(target=app.state.service.warm_up, daemon=True).start()
    shown = f"[{args.host}]" if ":" in args.host else args.host
    what = "chat and API" if args.chat else "API"
    login = " (login required)" if credentials else ""
    print(f"abstract-rag {what} on http://{shown}:{args.port}{login}  API docs: /docs  (Ctrl-C to stop)")
    run_server(app, args.host, args.port)
    return 0

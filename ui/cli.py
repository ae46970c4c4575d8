"""``rag ui``: start the chat app on this machine."""

from __future__ import annotations

import argparse
import logging
import threading

from rag.cli import add_index_argument, config_from_args

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ui", help="start the chat app in the browser (http://127.0.0.1:7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--model", default=None, help="the default model (a bundled name or a .gguf path)")
    add_index_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rag.store import read_manifest
    from ui.app import CSS, build_app, default_factory

    cfg = config_from_args(args, index_dir="index", model="model")
    read_manifest(cfg.index_dir)  # a missing index is reported now, with how to build it
    factory = default_factory(cfg)

    def warm_up() -> None:  # load index, embedder and model while the page opens
        try:
            factory(cfg.model).warm_up()
            logger.info("models loaded")
        except Exception as exc:  # the first question will report it to the user
            logger.warning("warm-up failed: %s", exc)

    threading.Thread(target=warm_up, daemon=True).start()
    app = build_app(cfg, factory)
    print(f"abstract-rag chat on http://{args.host}:{args.port}  (Ctrl-C to stop)")
    app.launch(server_name=args.host, server_port=args.port, share=False, css=CSS, show_error=False, quiet=True)
    return 0

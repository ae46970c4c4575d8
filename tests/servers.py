"""Helpers for tests that serve the chat app and the API on localhost (browser, load, API and safety tests)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from bench.llm_server import free_port
from rag.llm import FakeGenerator, Message


class SlowFake(FakeGenerator):
    """Streams word by word with a delay per word, like a model on a slow CPU."""

    def __init__(self, reply: Any, delay_s: float = 0.05, name: str = "fake-llm") -> None:
        super().__init__(reply, name=name)
        self.delay_s = delay_s

    def stream(self, messages: Sequence[Message], *, max_tokens: int):  # type: ignore[no-untyped-def]
        for piece in super().stream(messages, max_tokens=max_tokens):
            time.sleep(self.delay_s)
            yield piece


def serve(app: Any) -> tuple[str, Any]:
    """Launch a Gradio app on a free loopback port; returns (url, app)."""
    from ui.app import CSS

    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, css=CSS, quiet=True)
    return f"http://127.0.0.1:{port}/", app


def serve_asgi(app: Any) -> tuple[str, Any]:
    """Serve an ASGI app (the chat + API server) with uvicorn on a free loopback port, in a
    thread; returns (url, stop)."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.perf_counter() + 60
    while not server.started:
        if not thread.is_alive() or time.perf_counter() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(15)

    return f"http://127.0.0.1:{port}/", stop

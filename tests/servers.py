"""Helpers for tests that serve the chat app on localhost (browser, load and safety tests)."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

from rag.llm import FakeGenerator, Message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

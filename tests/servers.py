"""Helpers for tests that serve the chat app and the API on localhost (browser, load, API and safety tests)."""

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


class LlamaServer:
    """``python -m llama_cpp.server`` (llama-cpp-python's OpenAI-compatible server) on a free
    loopback port, serving one GGUF model under ``alias``; ``stop()`` ends it."""

    def __init__(
        self, model: str, alias: str, *, n_threads: int = 2, n_ctx: int = 2048, timeout_s: float = 120
    ) -> None:
        import os
        import subprocess
        import sys
        import tempfile
        import urllib.request

        from rag.llm import resolve_model

        _, path = resolve_model(model)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.alias = alias
        self.log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(path), "--model_alias", alias,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads), "--n_ctx", str(n_ctx),
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.perf_counter() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited ({self.proc.returncode}); log: {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"llama_cpp.server did not start in {timeout_s:.0f} s; log: {self.log.name}")
            time.sleep(0.1)

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait(10)

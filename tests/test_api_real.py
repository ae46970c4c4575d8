"""Slow: the HTTP API over a real loopback socket, with the real model on the real bundled index."""

from __future__ import annotations

import json

import httpx
import pytest
from servers import serve_asgi

from rag.answer import Answerer
from rag.llm import load_generator
from ui.server import create_app

pytestmark = pytest.mark.slow

QUESTION = "How many frames does the 8-Calves dataset contain?"


def test_api_answers_over_a_socket_with_the_real_model(real_index) -> None:  # type: ignore[no-untyped-def]
    answerer = Answerer(
        {"index_dir": real_index.index_dir},
        index=real_index,
        generator=load_generator("qwen2.5-coder-1.5b", n_threads=2),
    )
    url, stop = serve_asgi(create_app(answerer.config, lambda model: answerer, host="127.0.0.1"))
    try:
        with httpx.Client(base_url=url, timeout=300) as http:
            assert http.get("api/health").json()["index"]["papers"] == 591
            answer = http.post("api/ask", json={"question": QUESTION}).json()
            assert not answer["refused"], answer["raw_text"]
            assert answer["citations"][0]["title"] == "8-Calves Image dataset" and "67,760" in answer["text"]
            assert answer["model"] == "qwen2.5-coder-1.5b"

            kinds, final = [], None
            with http.stream("POST", "api/ask/stream", json={"question": QUESTION}) as response:
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        kinds.append(line[7:])
                    elif line.startswith("data: ") and kinds[-1] == "answer":
                        final = json.loads(line[6:])
            assert kinds[0] == "evidence" and kinds[-1] == "answer" and "token" in kinds, kinds
            assert final is not None and final["citations"][0]["title"] == "8-Calves Image dataset"

            hits = http.get("api/search", params={"q": "8-Calves dataset frames", "k": 3}).json()["results"]
            hit = next(h for h in hits if h["title"] == "8-Calves Image dataset")
            paper = http.get(f"api/papers/{hit['paper_id']}").json()
            assert "67,760" in paper["abstract"]
            assert http.get("docs").status_code == 200
    finally:
        stop()

"""Shared fixtures: no network, tiny data, a fake embedder, and one real embedder per session."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from rag.models import HashEmbedder, enforce_offline

DATA = Path(__file__).parent / "data"
enforce_offline()

# Property tests draw the same examples on every run, so CI cannot turn red by chance; run
# `HYPOTHESIS_PROFILE=explore pytest tests/test_properties.py` to search with fresh random ones.
settings.register_profile("default", derandomize=True, deadline=None, database=None)
settings.register_profile("explore", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _is_local(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX paths
        return True
    if isinstance(address, tuple) and address:
        host = address[0]
        if host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return False


@pytest.fixture(autouse=True)
def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to reach beyond this machine (loopback stays allowed)."""
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> object:
        if not _is_local(address):
            raise RuntimeError(f"network access attempted in a test: {address!r}")
        return real_connect(self, address)  # type: ignore[arg-type]

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not _is_local((name,)):
            raise RuntimeError(f"DNS lookup attempted in a test: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def fake_embedder() -> HashEmbedder:
    return HashEmbedder(dimension=64, max_tokens=256)


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """A copy of the tiny listing files, so a test may add or change files."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("listing_plain.txt", "listing_furniture.txt"):
        (corpus / name).write_bytes((DATA / name).read_bytes())
    return corpus


@pytest.fixture
def fake_index(small_corpus: Path, tmp_path: Path, fake_embedder: HashEmbedder):  # type: ignore[no-untyped-def]
    """The tiny corpus built with the fake embedder, opened for search."""
    from index_build.build import build_index
    from rag.store import open_index

    index_dir = tmp_path / "index"
    build_index({"corpus": [small_corpus], "index_dir": index_dir, "progress": False}, embedder=fake_embedder)
    return open_index(index_dir, fake_embedder)


@pytest.fixture(scope="session")
def real_index(tmp_path_factory: pytest.TempPathFactory, real_embedder):  # type: ignore[no-untyped-def]
    """The bundled corpus built with the packaged MiniLM, once per test session."""
    from index_build.build import build_index
    from rag.config import BUNDLED_CORPUS
    from rag.store import open_index

    index_dir = tmp_path_factory.mktemp("real") / "index"
    result = build_index(
        {"corpus": [BUNDLED_CORPUS], "index_dir": index_dir, "progress": False}, embedder=real_embedder
    )
    assert result.papers == 591
    return open_index(index_dir, real_embedder)


@pytest.fixture(scope="session")
def real_embedder() -> Iterator[object]:
    """The packaged MiniLM, loaded once for every slow test."""
    from rag.models import SentenceTransformerEmbedder

    yield SentenceTransformerEmbedder()

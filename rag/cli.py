"""The ``rag`` command.

The core registers its own subcommands here; the outer packages (``index_build``, ``ui``,
``eval``, ``bench``) register theirs through the ``abstract_rag.commands`` entry-point group,
so the core never imports them. Each entry point names a ``register(subparsers)`` function
that adds a subparser whose ``func(args) -> int`` runs the command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TextIO

from rag.config import RagConfig
from rag.errors import ConfigError, RagError
from rag.types import Answer, Paper

logger = logging.getLogger(__name__)

COMMAND_GROUP = "abstract_rag.commands"
# Export formats of references; "csl" is short for "csl-json".
EXPORT_CHOICES = ("bib", "ris", "csl-json", "csl")
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def add_index_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--index DIR`` option every index-using command shares."""
    parser.add_argument(
        "--index", type=Path, default=None, help="index directory (default: .rag/index or $RAG_INDEX_DIR)"
    )


def config_from_args(args: argparse.Namespace, **fields: str) -> RagConfig:
    """The config with the CLI options that were given: ``fields`` maps config field -> option."""
    from rag.config import get_config

    given = {name: getattr(args, attr, None) for name, attr in fields.items()}
    return get_config({k: v for k, v in given.items() if v is not None and v is not False})


def add_llm_arguments(parser: argparse.ArgumentParser, *, model_help: str | None = None) -> None:
    """``--model`` and ``--llm-url``, shared by every command that runs the language model."""
    parser.add_argument(
        "--model",
        default=None,
        help=model_help
        or "a bundled model name (see `rag models`) or a path to a .gguf file; with --llm-url, the name the server serves",
    )
    parser.add_argument(
        "--llm-url",
        default=None,
        metavar="URL",
        help="answer with an OpenAI-compatible server (llama-server, llama_cpp.server, vLLM, Ollama) at this URL, "
        "e.g. http://127.0.0.1:8080/v1, instead of in this process (default: $RAG_LLM_URL; API key: $RAG_LLM_API_KEY)",
    )


def _register_search(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "search",
        help="show the papers that best match a query (no language model), optionally filtered or exported",
    )
    p.add_argument("query", help="what to look for")
    p.add_argument("-k", "--top-k", type=int, default=5, help="how many papers to show (default 5)")
    p.add_argument(
        "--mode", choices=("hybrid", "dense", "bm25"), default="hybrid", help="retrieval mode (default hybrid)"
    )
    add_filter_arguments(p)
    p.add_argument(
        "--export",
        choices=EXPORT_CHOICES,
        default=None,
        help="print the found papers as BibTeX, RIS or CSL-JSON instead of the list",
    )
    p.add_argument("-o", "--output", type=Path, default=None, help="write the export to this file")
    add_index_argument(p)
    p.set_defaults(func=_run_search)


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """``--year``, ``--author``, ``--venue``, ``--source``: the metadata filters (``rag.filters``)."""
    parser.add_argument("--year", default=None, help="only papers of these years: 2021, 2019-2023, 2019- or -2023")
    parser.add_argument("--author", action="append", default=None, help="only papers by this author (repeatable: any)")
    parser.add_argument(
        "--venue", action="append", default=None, help="only papers whose venue contains this text (repeatable)"
    )
    parser.add_argument(
        "--source", action="append", default=None, help="only papers read from this corpus file (a name or a glob)"
    )


def search_filters(args: argparse.Namespace) -> dict[str, object]:
    """The retrieval filters given on the command line (``--year``, ``--author``, ...)."""
    given = {"year": args.year, "author": args.author, "venue": args.venue, "source": args.source}
    return {k: v for k, v in given.items() if v}


def _run_search(args: argparse.Namespace) -> int:
    from rag.models import load_embedder
    from rag.references import export_references, reference_link, reference_text
    from rag.retrieve import Retriever
    from rag.store import open_index

    cfg = config_from_args(args, index_dir="index")
    index = open_index(cfg.index_dir, load_embedder(cfg.embed_model, batch_size=cfg.embed_batch_size))
    retriever = Retriever(index, candidates=max(cfg.candidates, args.top_k), rrf_k=cfg.rrf_k)
    hits = retriever.search(args.query, args.top_k, args.mode, filters=search_filters(args))
    if args.export:
        text = export_references([index.papers[h.paper_id] for h in hits], args.export)
        if args.output is not None:
            args.output.write_text(text, encoding="utf-8")
            print(f"wrote {len(hits)} reference(s) to {args.output}", file=sys.stderr)
        else:
            print(text, end="")
        return 0
    if not hits:
        print("no results")
        return 0
    for rank, hit in enumerate(hits, 1):
        paper = index.papers[hit.paper_id]
        snippet = paper.abstract if len(paper.abstract) <= 160 else paper.abstract[:157] + "..."
        print(f"{rank}. [{hit.dense_score:.3f}] {paper.title}  ({paper.paper_id})")
        link = reference_link(paper)
        print(f"   {reference_text(paper)}" + (f"  {link}" if link else ""))
        print(f"   {snippet}")
    return 0


def _register_ask(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ask", help="answer a question from the papers, with verified citations")
    p.add_argument("question", help="the question, in plain words")
    p.add_argument("-k", "--top-k", type=int, default=None, help="papers given to the model as sources (default 4)")
    add_llm_arguments(p)
    p.add_argument("--mode", choices=("hybrid", "dense", "bm25"), default=None, help="retrieval mode (default hybrid)")
    p.add_argument("--strict", action="store_true", help="drop answer sentences that no source supports")
    p.add_argument("--json", action="store_true", help="print the whole Answer as JSON (no streaming)")
    add_filter_arguments(p)
    p.add_argument(
        "--export",
        choices=EXPORT_CHOICES,
        default=None,
        help="the references the answer cites as BibTeX, RIS or CSL-JSON: on stdout (the answer then goes "
        "to stderr), or into the file given with -o",
    )
    p.add_argument("-o", "--output", type=Path, default=None, help="write the --export references to this file")
    add_index_argument(p)
    p.set_defaults(func=_run_ask)


def _run_ask(args: argparse.Namespace) -> int:
    from rag.answer import Answerer, AnswerEvent, EvidenceEvent, ProgressEvent, SentenceEvent
    from rag.references import answer_to_dict
    from rag.streaming import final_note

    answerer = Answerer(
        config_from_args(
            args,
            index_dir="index",
            model="model",
            llm_url="llm_url",
            retrieval_mode="mode",
            top_k="top_k",
            strict="strict",
        )
    )
    filters = search_filters(args)
    if args.output is not None and not args.export:
        raise ConfigError("-o/--output writes the --export references: give --export bib|ris|csl-json too")
    # Exported references on stdout: the answer itself goes to stderr, so `> refs.bib` holds only them.
    out = sys.stderr if args.export and args.output is None else sys.stdout
    if args.json:
        answer = answerer.ask(args.question, filters=filters)
        print(json.dumps(answer_to_dict(answer, answerer.index.papers), indent=2, ensure_ascii=False), file=out)
        return _export(answer, args)
    answer = None
    shown: list[SentenceEvent] = []
    for event in answerer.stream(args.question, filters=filters):
        if isinstance(event, EvidenceEvent):
            for warning in event.warnings:  # what happened to the question, before the answer
                print(f"warning: {warning}", file=sys.stderr)
            if event.sources:
                print("Sources:", file=out)
                for src in event.sources:
                    print(f"  [{src.n}] {src.title}", file=out)
                print(file=out)
        elif isinstance(event, ProgressEvent):
            print(f"({event.text}…)", file=sys.stderr, flush=True)
        elif isinstance(event, SentenceEvent):  # each verified sentence as soon as it is complete
            if not shown:
                print("Answer (each sentence checked as it is written):", file=out)
            shown.append(event)
            print(f"  {event.text}", file=out, flush=True)
            if event.reason:
                print(f"      [?] not supported: {event.reason}", file=out, flush=True)
        elif isinstance(event, AnswerEvent):
            answer = event.answer
            note = final_note([s.sentence for s in shown], answer)
            if shown:
                print(file=out)
            if note:
                print(f"Note: {note}.", file=out)
            _print_answer(answer, out, answerer.index.papers, shown=bool(shown) and note is None)
    return _export(answer, args) if answer is not None else 0


def _export(answer: Answer, args: argparse.Namespace) -> int:
    """Write the answer's cited references in the ``--export`` format (nothing without it)."""
    if not args.export:
        return 0
    if not answer.citations:
        print("the answer cites no paper: no references to export", file=sys.stderr)
        return 0
    text = answer.references(args.export)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {len(answer.citations)} reference(s) to {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def _print_answer(
    answer: Answer, out: TextIO, papers: Mapping[str, Paper] | None = None, *, shown: bool = False
) -> None:
    """The final answer, its references and timings; ``shown``: its sentences were already
    printed as they were verified (only the references and timings follow)."""
    from rag.citations import strip_citations
    from rag.references import has_metadata, reference_link, reference_text
    from rag.streaming import reason_words

    papers = papers or {}

    changed = strip_citations(answer.raw_text) != strip_citations(answer.text)
    label = "Verified answer" if changed and not answer.refused else "Answer"
    if answer.incomplete:  # the reply was cut off: never presented as a complete answer
        label = "INCOMPLETE answer (the model's reply was cut off; verified as far as it got)"
        if shown:
            print(f"{label}.", file=out)
    if not shown and answer.form == "list" and not answer.refused:
        print(f"{label}:", file=out)
        for sentence in answer.sentences:
            print(f"  - {sentence.shown}", file=out)
    elif not shown:
        print(f"{label}: {answer.text}", file=out)
    if answer.refused and answer.refusal_reason:
        print(f"  (refused: {answer.refusal_reason})", file=out)
    unsupported = [s for s in answer.sentences if not s.supported]
    if unsupported and not answer.refused and not shown:
        print("  [?] marks a sentence that no source supports:", file=out)
        by_n = {src.n: src for src in answer.sources}
        for s in unsupported:
            print(f"      \u201c{s.text}\u201d: {reason_words(s, by_n)}", file=out)
    if answer.citations:
        print("\nReferences:", file=out)
        for c in answer.citations:
            paper = papers.get(c.paper_id)
            if paper is not None and has_metadata(paper):
                link = reference_link(paper)
                print(f"  [{c.n}] {reference_text(paper)}" + (f"  {link}" if link else ""), file=out)
            else:
                print(f"  [{c.n}] {c.title}  ({', '.join(c.files)})", file=out)
            for sentence in c.evidence:
                print(f"      \u201c{sentence}\u201d", file=out)
    t = answer.timings
    parts = [
        f"{k.replace('_', ' ')} {t[k]:.1f} s" for k in ("retrieve", "first_token", "first_sentence", "total") if k in t
    ]
    if "tokens_per_s" in t:
        parts.append(f"{t['tokens_per_s']:.1f} tokens/s")
    if answer.prompt_tokens:
        parts.append(f"prompt {answer.prompt_tokens} tokens")
    print(f"\n({'; '.join(parts)}; model {answer.model})", file=out)


def _register_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list the language models, their files, sizes and hash checks")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from rag.config import get_config
    from rag.llm import KNOWN_MODELS, model_cache_dir, model_status

    default = get_config().model
    rows = [model_status(spec) for spec in KNOWN_MODELS.values()]
    if args.json:
        print(json.dumps([{**r.to_dict(), "default": r.name == default} for r in rows], indent=2))
        return 0
    print(f"models (cache: {model_cache_dir()}; any other .gguf file works with --model PATH)")
    for r in rows:
        size = f"{r.size / 1e6:,.0f} MB" if r.size else "-"
        mark = "*" if r.name == default else " "
        print(f"{mark} {r.name:<20} {size:>9}  {r.status}")
        print(f"  {'':<20} {r.description}; {r.path or ''}")
    return 0


CORE_COMMANDS: tuple[Register, ...] = (_register_ask, _register_search, _register_models)


def _plugin_commands() -> list[tuple[str, Register]]:
    found = []
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        try:
            found.append((ep.name, ep.load()))
        except Exception as exc:  # one broken plugin must not take the whole CLI down
            logger.warning("command %r could not be loaded: %s", ep.name, exc)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag",
        description="Question answering over a collection of paper abstracts, offline, with verified citations.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in CORE_COMMANDS:
        register(sub)
    for _name, register in _plugin_commands():
        register(sub)
    return parser


class _QuietBelow(logging.Filter):
    """Drops records of one logger (and its children) below a level."""

    def __init__(self, name: str, level: int) -> None:
        super().__init__()
        self.prefix, self.level = name, level

    def filter(self, record: logging.LogRecord) -> bool:
        named = record.name == self.prefix or record.name.startswith(self.prefix + ".")
        return not named or record.levelno >= self.level


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rag`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in (
        "bm25s",
        "httpx",
        "httpx2",
        "openai",
        "sentence_transformers",
        "transformers",
    ):  # chatty at INFO/DEBUG
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # bibtexparser logs each broken block with 0-based lines; the build reports it, 1-based.
    logging.getLogger("bibtexparser").setLevel(max(level, logging.ERROR))
    # bm25s sets its own logger to DEBUG when it is imported (lazily, after this), which undoes
    # the level above; a filter on the handlers keeps its chatter out of `rag search` / `rag ask`.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietBelow("bm25s", max(level, logging.WARNING)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

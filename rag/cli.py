"""The ``rag`` command.

The core registers its own subcommands here; the outer packages (``index_build``, ``ui``,
``eval``, ``bench``) register theirs through the ``abstract_rag.commands`` entry-point group,
so the core never imports them. Each entry point names a ``register(subparsers)`` function
that adds a subparser whose ``func(args) -> int`` runs the command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

from rag.errors import RagError

logger = logging.getLogger(__name__)

COMMAND_GROUP = "abstract_rag.commands"
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def add_index_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--index DIR`` option every index-using command shares."""
    parser.add_argument("--index", type=Path, default=None, help="index directory (default: .rag/index or $RAG_INDEX_DIR)")


def _register_search(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("search", help="show the papers whose chunks best match a query (dense retrieval)")
    p.add_argument("query", help="what to look for")
    p.add_argument("-k", "--top-k", type=int, default=5, help="how many chunks to show (default 5)")
    add_index_argument(p)
    p.set_defaults(func=_run_search)


def _run_search(args: argparse.Namespace) -> int:
    from rag.config import get_config
    from rag.models import load_embedder
    from rag.store import open_index

    overrides = {"index_dir": args.index} if args.index else {}
    cfg = get_config(overrides)
    index = open_index(cfg.index_dir, load_embedder(cfg.embed_model, batch_size=cfg.embed_batch_size))
    hits = index.dense_search(args.query, args.top_k)
    if not hits:
        print("no results")
        return 0
    for rank, hit in enumerate(hits, 1):
        chunk = hit.chunk
        snippet = chunk.text if len(chunk.text) <= 160 else chunk.text[:157] + "..."
        print(f"{rank}. [{hit.score:.3f}] {chunk.title}  ({chunk.paper_id})")
        print(f"   {snippet}")
    return 0


CORE_COMMANDS: tuple[Register, ...] = (_register_search,)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rag`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
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

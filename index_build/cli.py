"""``rag build``: read the corpus, chunk, embed and write the index, then print a summary."""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

from rag.cli import add_index_argument, config_from_args

MAX_PROBLEMS_SHOWN = 20


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build or refresh the index from corpus files")
    p.add_argument(
        "--corpus",
        type=Path,
        action="append",
        default=None,
        help="corpus file or directory (.txt listing dumps, .jsonl, .csv, .bib, .ris, CSL-JSON .json, "
        "arXiv metadata .json/.jsonl); repeatable; default: the bundled corpus",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="read at most N usable entries from each corpus file (the arXiv snapshot is read only that far)",
    )
    p.add_argument(
        "--arxiv-category",
        action="append",
        default=None,
        metavar="CAT",
        help="keep only arXiv metadata records in this category (cs.LG; 'cs' takes every cs.*); repeatable",
    )
    add_index_argument(p)
    p.add_argument("--force", action="store_true", help="rebuild and re-embed everything even if up to date")
    p.add_argument(
        "--index-type",
        choices=("auto", "flat", "hnsw", "ivf"),
        default=None,
        help="FAISS index: auto (default: exact up to 50k chunks, HNSW to 500k, then IVF), flat, hnsw or ivf",
    )
    p.add_argument(
        "--store",
        choices=("faiss", "milvus"),
        default=None,
        help="where vectors and BM25 live: faiss (default: files in the index directory) or milvus",
    )
    p.add_argument(
        "--milvus-uri",
        default=None,
        metavar="URI",
        help="with --store milvus: a local path (milvus-lite; default <index>.milvus.db or $RAG_MILVUS_URI) "
        "or http(s)://host:19530 for a Milvus server; the token goes in $RAG_MILVUS_TOKEN",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace) -> int:
    from index_build.build import build_index

    cfg = config_from_args(
        args, corpus="corpus", index_dir="index", index_type="index_type", store="store", milvus_uri="milvus_uri"
    )
    if args.no_progress:
        cfg = cfg.replace(progress=False)
    result = build_index(cfg, force=args.force, limit=args.limit, arxiv_categories=args.arxiv_category or ())
    if args.json:
        print(json.dumps({**result.to_dict(), "peak_rss_mb": round(peak_rss_mb(), 1)}, indent=2))
        return 0
    report = result.corpus
    warned = f", {len(report.warnings)} with a field ignored" if report.warnings else ""
    print(
        f"corpus: {len(report.files)} file(s), {report.entries} entries read, "
        f"{report.duplicates} merged as duplicates, {len(result.problems)} skipped{warned}"
    )
    for problem in result.problems[:MAX_PROBLEMS_SHOWN]:
        print(f"  skipped {problem}")
    if len(result.problems) > MAX_PROBLEMS_SHOWN:
        print(f"  ... and {len(result.problems) - MAX_PROBLEMS_SHOWN} more (run with -v to log all)")
    for warning in report.warnings[:MAX_PROBLEMS_SHOWN]:
        print(f"  kept {warning}")
    if len(report.warnings) > MAX_PROBLEMS_SHOWN:
        print(f"  ... and {len(report.warnings) - MAX_PROBLEMS_SHOWN} more (run with -v to log all)")
    if result.status == "up-to-date":
        print(
            f"index {result.index_dir} is up to date: {result.papers} papers, {result.chunks} chunks "
            f"({result.seconds:.1f} s; use --force to rebuild)"
        )
        return 0
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.stage_seconds.items())
    store = "" if result.store == "faiss" else f" in Milvus ({result.upserted} upserted, {result.deleted} deleted)"
    print(
        f"built {result.index_dir}: {result.papers} papers, {result.chunks} chunks, {result.index_type} index{store} "
        f"({result.embedded} embedded, {result.reused} reused from cache)"
    )
    print(
        f"time {result.seconds:.1f} s ({stages}); index size {result.size_bytes / 1e6:.1f} MB; "
        f"peak memory {peak_rss_mb():.0f} MB"
    )
    return 0

"""Parse speed and memory of the arXiv-metadata importer on a synthetic snapshot.

    python -m bench.arxiv_import generate /tmp/arxiv100k.jsonl --records 100000
    /usr/bin/time -v python -m bench.arxiv_import parse /tmp/arxiv100k.jsonl [--category cs.LG] [--limit N] [--trace]

The records have the shape of the OAI snapshot (id, submitter, authors, title, comments,
journal-ref, doi, categories, abstract, versions, update_date, authors_parsed); ~1,000-character
abstracts, about half of the records with LaTeX ($\\alpha$, M\\"uller, \\mathcal{O}(n \\log n)).
``parse`` prints one JSON line: seconds, entries, entries/s, peak RSS (and the Python heap's
peak with ``--trace``, which makes parsing several times slower).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

_WORDS = (
    "model network learning data training neural graph optimal sparse robust efficient representation inference "
    "bayesian kernel stochastic gradient attention transformer quantum lattice spectral convex estimator "
    "regression manifold diffusion policy reward"
).split()
_CATEGORIES = [
    "cs.LG",
    "cs.CV",
    "cs.CL",
    "stat.ML",
    "math.PR",
    "math.ST",
    "quant-ph",
    "hep-th",
    "cond-mat.stat-mech",
    "astro-ph.GA",
]
_LATEX = [
    " with $\\mathcal{O}(n \\log n)$ cost",
    " for $\\alpha$-stable noise",
    ' of M\\"uller type',
    " via $L^2$ bounds",
    " at $\\sim 10\\%$ error",
]


def generate(path: Path, records: int, seed: int = 14) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(records):
            title = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 12))).capitalize()
            sentences = []
            for _ in range(rng.randint(5, 9)):
                sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(12, 24))).capitalize()
                if rng.random() < 0.1:
                    sentence += rng.choice(_LATEX)
                sentences.append(sentence + ".")
            abstract = "  " + "\n".join(" ".join(sentences[j : j + 2]) for j in range(0, len(sentences), 2)) + "\n"
            if rng.random() < 0.15:
                title += rng.choice(_LATEX)
            parsed = [
                [f"Family{rng.randint(1, 5000)}", f"Given{rng.randint(1, 900)}", ""] for _ in range(rng.randint(1, 6))
            ]
            yymm = f"{rng.randint(7, 24):02d}{rng.randint(1, 12):02d}"
            record = {
                "id": f"{yymm}.{i % 100000:05d}",
                "submitter": f"{parsed[0][1]} {parsed[0][0]}",
                "authors": ", ".join(f"{g} {f}" for f, g, _ in parsed),
                "title": title,
                "comments": "12 pages, 3 figures",
                "journal-ref": None if rng.random() < 0.7 else "J. Synth. Res. 12 (2020) 1-10",
                "doi": None if rng.random() < 0.6 else f"10.5555/synth.{i}",
                "report-no": None,
                "categories": " ".join(rng.sample(_CATEGORIES, rng.randint(1, 3))),
                "license": None,
                "abstract": abstract,
                "versions": [{"version": "v1", "created": f"Mon, 2 Apr 20{yymm[:2]} 19:18:42 GMT"}],
                "update_date": f"20{yymm[:2]}-{yymm[2:]}-15",
                "authors_parsed": parsed,
            }
            fh.write(json.dumps(record) + "\n")


def parse(path: Path, categories: Sequence[str], limit: int | None, trace: bool) -> dict[str, object]:
    from index_build.corpus import read_corpus

    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    papers, report = read_corpus([path], limit=limit, arxiv_categories=categories)
    seconds = time.perf_counter() - started
    result: dict[str, object] = {
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "categories": list(categories),
        "limit": limit,
        "seconds": round(seconds, 2),
        "entries": report.entries,
        "papers": len(papers),
        "entries_per_s": round(report.entries / seconds),
        "problems": len(report.problems),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if trace:
        result["python_heap_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.arxiv_import", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write a synthetic arXiv metadata snapshot")
    g.add_argument("path", type=Path)
    g.add_argument("--records", type=int, default=100_000)
    p = sub.add_parser("parse", help="read it with the importer and print speed and memory as JSON")
    p.add_argument("path", type=Path)
    p.add_argument("--category", action="append", default=[])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--trace", action="store_true", help="also measure the Python heap peak (slow)")
    args = parser.parse_args(argv)
    if args.command == "generate":
        generate(args.path, args.records)
    else:
        print(json.dumps(parse(args.path, args.category, args.limit, args.trace)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

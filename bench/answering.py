"""Answer-speed benchmark: the product pipeline against the naive one, same model, same run.

Naive = what a plain llama-index pipeline does: the top-4 papers as whole abstracts, the model's
citations trusted, no relevance threshold. Questions alternate between the configurations so
that machine noise hits both alike; figures are medians, and the comparison is a ratio.

Run: ``python -m bench.answering [--model NAME] [--limit N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from rag.answer import Answerer
from rag.config import get_config
from rag.store import open_index

QUESTIONS = Path(__file__).parent / "data" / "questions.jsonl"
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "naive": {"select_evidence": False, "verify": False, "min_relevance": -1.0},
}
METRICS = ("prompt_tokens", "to_evidence", "first_token", "total", "tokens_per_s")


def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def run(
    model: str, questions: Sequence[dict[str, Any]], index_dir: Path | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Answer every question with every configuration; returns per-question rows per config."""
    base = get_config({"model": model, **({"index_dir": index_dir} if index_dir else {})})
    first = Answerer(base)
    index = open_index(base.index_dir, first.embedder)
    answerers = {
        name: Answerer(base.replace(**cfg), index=index, embedder=first.embedder, generator=first.generator)
        for name, cfg in CONFIGS.items()
    }
    answerers["default"].ask("warm-up: what is a neural network?")  # load the model outside the timings
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    for q in questions:
        for name, answerer in answerers.items():
            ans = answerer.ask(q["question"])
            gold = q.get("gold_title")
            cited = [c.title for c in ans.citations]
            rows[name].append(
                {
                    "question": q["question"],
                    "answerable": gold is not None,
                    "refused": ans.refused,
                    "gold_cited": bool(gold) and gold in cited,
                    "cited": cited,
                    "text": ans.text,
                    "raw_text": ans.raw_text,
                    "prompt_tokens": ans.prompt_tokens,
                    **{k: ans.timings.get(k) for k in ("to_evidence", "first_token", "total", "tokens_per_s")},
                }
            )
            print(
                f"[{name:7}] {ans.timings.get('total', 0):5.1f}s refused={ans.refused!s:5} {q['question'][:60]}",
                file=sys.stderr,
            )
    return rows


def median(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Medians over the questions the model was asked (answered ones for the timings)."""
    out: dict[str, dict[str, Any]] = {}
    for name, rs in rows.items():
        asked = [r for r in rs if r["prompt_tokens"]]
        answerable = [r for r in rs if r["answerable"]]
        unanswerable = [r for r in rs if not r["answerable"]]
        out[name] = {
            **{k: median(asked, k) for k in METRICS},
            "questions": len(rs),
            "gold_cited": sum(r["gold_cited"] for r in answerable),
            "answerable": len(answerable),
            "false_refusals": sum(r["refused"] for r in answerable),
            "invented": sum(not r["refused"] for r in unanswerable),
            "unanswerable": len(unanswerable),
        }
    return out


def markdown(summary: dict[str, dict[str, Any]], model: str) -> str:
    d, n = summary["default"], summary["naive"]
    lines = [
        f"Model {model}; medians over the questions the model answered; ratio = naive / default.",
        "",
        "| metric | default | naive | ratio |",
        "|---|---|---|---|",
    ]
    for k in METRICS:
        dv, nv = d[k], n[k]
        ratio = f"{nv / dv:.2f}x" if dv and nv else "-"
        lines.append(
            f"| {k} | {dv:.1f} | {nv:.1f} | {ratio} |"
            if dv is not None and nv is not None
            else f"| {k} | {dv} | {nv} | - |"
        )
    lines.append(f"| gold paper cited | {d['gold_cited']}/{d['answerable']} | {n['gold_cited']}/{n['answerable']} | |")
    lines.append(
        f"| false refusals | {d['false_refusals']}/{d['answerable']} | {n['false_refusals']}/{n['answerable']} | |"
    )
    lines.append(f"| invented answers | {d['invented']}/{d['unanswerable']} | {n['invented']}/{n['unanswerable']} | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.answering", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=get_config().model)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--index", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    questions = load_questions()[: args.limit]
    rows = run(args.model, questions, args.index)
    summary = summarize(rows)
    table = markdown(summary, args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"answering-{date.today().isoformat()}-{args.model.replace('/', '_')}"
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (args.out / f"{stem}.json").write_text(
        json.dumps({"model": args.model, "summary": summary, "peak_rss_mb": peak_rss_mb, "rows": rows}, indent=2) + "\n"
    )
    (args.out / f"{stem}.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

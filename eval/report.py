"""Summaries of eval records and the report files: Markdown, JSON, JSONL and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eval import metrics as m
from eval.judgments import Judgment, join, judged_metrics

# (key, label, higher is better) in report order.
RETRIEVAL_METRICS = [
    ("recall@k_model", "recall@k (k = papers the model sees)", True),
    ("rcap@k_model", "capped recall R_cap@k (k the model sees)", True),
    ("rcap@10", "capped recall R_cap@10", True),
    ("hit@1", "hit@1", True),
    ("recall@1", "recall@1", True),
    ("recall@3", "recall@3", True),
    ("recall@5", "recall@5", True),
    ("recall@10", "recall@10", True),
    ("mrr", "MRR", True),
    ("ndcg@10", "nDCG@10", True),
]
ANSWER_METRICS = [
    ("must_include", "must-include accuracy (answerable)", True),
    ("f1", "token F1 (refusal-aware)", True),
    (
        "judged_faithfulness",
        "judged faithfulness (presented sentences citing a paper that a reader finds supported)",
        True,
    ),
    (
        "judged_faithfulness_strict",
        "judged faithfulness, strict (a sentence citing nothing counts as unsupported)",
        True,
    ),
    ("judged_coverage", "judged coverage (presented sentences with a judgment)", True),
    ("sentence_citation_precision", "citation precision, sentence level (judged)", True),
    ("presented_sentences", "sentences presented as the answer", True),
    ("judged_unsupported", "judged unsupported (count)", False),
    ("judged_no_answer", "judged no-answer: restatements (count)", False),
    ("judged_garbled", "judged garbled: holes, fragments (count)", False),
    ("judged_uncited", "presented without a citation (count)", False),
    ("citation_precision", "citation precision, paper level (cites a gold paper)", True),
    ("citation_recall", "citation recall, paper level", True),
    ("supported_rate", "the product's own verifier: share it grades supported (not judged)", True),
    ("citations_outside_prompt", "citations outside the prompt (count)", False),
    ("refusal_precision", "refusal precision", True),
    ("refusal_recall", "refusal recall", True),
    ("refusal_f1", "refusal F1", True),
    ("false_refusal_rate", "false refusals (share of answerable)", False),
]
LATENCY_METRICS = [
    ("retrieval_p50_ms", "retrieval p50 (ms)", False),
    ("retrieval_p90_ms", "retrieval p90 (ms)", False),
    ("evidence_p50_s", "first evidence p50 (s)", False),
    ("first_token_p50_s", "first token p50 (s)", False),
    ("first_token_p90_s", "first token p90 (s)", False),
    ("total_p50_s", "total p50 (s)", False),
    ("total_p90_s", "total p90 (s)", False),
    ("tokens_per_s_p50", "tokens/s p50", True),
    ("prompt_tokens_p50", "prompt tokens p50", False),
]


def summarize(records: Sequence[dict[str, Any]], pool: Mapping[Any, Judgment] | None = None) -> dict[str, Any]:
    """All metrics over a set of per-question records (one configuration); ``pool``: the judgments."""
    answerable = [r for r in records if r["answerable"]]
    out: dict[str, Any] = {"questions": len(records), "answerable": len(answerable)}
    if answerable:
        gold = [set(r["gold_paper_ids"]) for r in answerable]
        ranks = [r["ranking"] for r in answerable]
        ks = [int(r.get("top_k") or 4) for r in answerable]
        out["recall@k_model"] = m.mean(m.recall_at_k(x, g, k) for x, g, k in zip(ranks, gold, ks, strict=True))
        out["rcap@k_model"] = m.mean(m.capped_recall_at_k(x, g, k) for x, g, k in zip(ranks, gold, ks, strict=True))
        out["rcap@10"] = m.mean(m.capped_recall_at_k(x, g, 10) for x, g in zip(ranks, gold, strict=True))
        out["hit@1"] = m.mean(m.hit_at_1(x, g) for x, g in zip(ranks, gold, strict=True))
        for k in (1, 3, 5, 10):
            out[f"recall@{k}"] = m.mean(m.recall_at_k(x, g, k) for x, g in zip(ranks, gold, strict=True))
        out["mrr"] = m.mean(m.reciprocal_rank(x, g) for x, g in zip(ranks, gold, strict=True))
        out["ndcg@10"] = m.mean(m.ndcg_at_k(x, g, 10) for x, g in zip(ranks, gold, strict=True))
    out["retrieval_p50_ms"] = _scale(m.median(r["retrieval_s"] for r in records), 1000)
    out["retrieval_p90_ms"] = _scale(m.percentile((r["retrieval_s"] for r in records), 90), 1000)
    answered = [r for r in records if "refused" in r]
    if not answered:
        return out
    out["must_include"] = m.mean(float(r["must_include_ok"]) for r in answered if r.get("must_include_ok") is not None)
    out["f1"] = m.mean(r["f1"] for r in answered)
    ans = [r for r in answered if r["answerable"]]
    out["citation_precision"] = m.mean(
        m.citation_precision(r["cited_ids"], set(r["gold_paper_ids"])) for r in ans if not r["refused"]
    )
    out["citation_recall"] = (
        m.mean(m.citation_recall(r["cited_ids"], set(r["gold_paper_ids"])) for r in ans) if ans else None
    )
    total_sentences = sum(r["sentences"] for r in answered)
    out["supported_rate"] = (
        sum(r["sentences_supported"] for r in answered) / total_sentences if total_sentences else None
    )
    out["citations_outside_prompt"] = sum(r["citations_outside_prompt"] for r in answered)
    out.update(m.refusal_scores([r["refused"] for r in answered], [r["answerable"] for r in answered]))
    out["false_refusals"] = sum(r["refused"] and r["answerable"] for r in answered)
    out.update(judged_metrics(join(answered, pool or {})))
    asked = [r for r in answered if r.get("prompt_tokens")]
    out["evidence_p50_s"] = m.median(r.get("evidence_s") for r in asked)
    out["first_token_p50_s"] = m.median(r["first_token_s"] for r in asked)
    out["first_token_p90_s"] = m.percentile((r["first_token_s"] for r in asked), 90)
    out["total_p50_s"] = m.median(r["total_s"] for r in answered)
    out["total_p90_s"] = m.percentile((r["total_s"] for r in answered), 90)
    out["tokens_per_s_p50"] = m.median(r["tokens_per_s"] for r in asked)
    out["prompt_tokens_p50"] = m.median(r["prompt_tokens"] for r in asked)
    out["refused"] = sum(r["refused"] for r in answered)
    return out


def summarize_by_type(
    records: Sequence[dict[str, Any]], pool: Mapping[Any, Judgment] | None = None
) -> dict[str, dict[str, Any]]:
    types = sorted({r["type"] for r in records})
    return {t: summarize([r for r in records if r["type"] == t], pool) for t in types}


def _scale(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def comparison(summary: dict[str, dict[str, Any]], base: str, other: str) -> list[str]:
    """Lines stating ``base``'s gains over ``other`` as differences and ratios."""
    lines = [f"| metric | {base} | {other} | difference | ratio |", "|---|---|---|---|---|"]
    for key, label, _ in RETRIEVAL_METRICS + ANSWER_METRICS + LATENCY_METRICS:
        a, b = summary[base].get(key), summary[other].get(key)
        if a is None or b is None:
            continue
        diff = a - b
        ratio = f"{a / b:.2f}x" if b else "-"
        lines.append(f"| {label} | {fmt(a)} | {fmt(b)} | {diff:+.3f} | {ratio} |")
    return lines


def _split_sections(split: str, runs: dict[str, dict[str, Any]], names: list[str], note: str) -> list[str]:
    """The tables of one split: retrieval, answers, latency, the product against each other
    configuration (differences and ratios), and each configuration by question type."""
    summary = {n: runs[n]["splits"][split]["overall"] for n in names}
    questions = summary[names[0]]["questions"]
    lines = [f"## Split `{split}` ({questions} questions)", "", note, ""]
    sections = [
        ("Retrieval (paper level, answerable questions)", RETRIEVAL_METRICS),
        ("Answers", ANSWER_METRICS),
        ("Latency", LATENCY_METRICS),
    ]
    for title, rows in sections:
        present = [(k, label) for k, label, _ in rows if any(summary[n].get(k) is not None for n in names)]
        if not present:
            continue
        lines += [f"### {title} ({split})", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for key, label in present:
            lines.append(f"| {label} | " + " | ".join(fmt(summary[n].get(key)) for n in names) + " |")
        lines.append("")
    if "default" in names:
        for other in names:
            if other != "default" and summary[other].get("f1") is not None and summary["default"].get("f1") is not None:
                lines += [f"### The product against {other} ({split})", "", *comparison(summary, "default", other), ""]
    keys = [
        ("recall@k_model", "recall@k"),
        ("rcap@k_model", "R_cap@k"),
        ("must_include", "must-include"),
        ("judged_faithfulness", "judged faithful"),
        ("judged_coverage", "judged cov."),
        ("citation_precision", "cit. precision"),
        ("f1", "F1"),
        ("refused", "refused"),
    ]
    for n in names:
        by_type = runs[n]["splits"][split]["by_type"]
        lines += [
            f"### {n} by question type ({split})",
            "",
            "| type | n | " + " | ".join(lab for _, lab in keys) + " |",
            "|---|---|" + "---|" * len(keys),
        ]
        for t, st in by_type.items():
            lines.append(f"| {t} | {st['questions']} | " + " | ".join(fmt(st.get(k)) for k, _ in keys) + " |")
        lines.append("")
    return lines


SPLIT_NOTES = {
    "test": "Held out: written before the pipeline changes it measures and never tuned on. These are the numbers to trust.",
    "dev": "Tuned on: settings, prompts and rules were chosen by looking at these questions; read with that in mind.",
}


def write_report(
    out_dir: Path, runs: dict[str, dict[str, Any]], meta: dict[str, Any], records: dict[str, list[dict[str, Any]]]
) -> dict[str, Path]:
    """Write report.md, report.json, answers.jsonl and the plots; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(runs)
    summary = {n: runs[n]["overall"] for n in names}
    lines = [f"# Eval report ({meta['date']})", ""]
    lines.append(
        f"Gold: {meta['gold']} ({meta['questions']} questions; {meta['types']}). "
        f"Index: {meta['papers']} papers, corpus hash `{meta['corpus_hash'][:12]}`. Machine: {meta['machine']}."
    )
    if meta.get("judgments"):
        lines.append(
            f"Judgments: `{meta['judgments']}` ({meta.get('judgments_count', 0)} labels written by reading the cited "
            "abstracts, never by the product's code); sentences still without one are listed in `unjudged.jsonl`."
        )
    if meta.get("replay"):
        lines.append(
            f"Replay: the model's replies are the ones stored in {meta['replay']}, answered again with the "
            "current code (no model ran, so latency and token counts are not measured); every changed "
            "answer is in `replay.jsonl`."
        )
    lines.append("")
    for n in names:
        lines.append(
            f"- **{n}**: {runs[n]['description']} (`{json.dumps(runs[n]['overrides'])}`; model {runs[n]['model']}; "
            f"{runs[n]['computed']} answers computed in this run, {runs[n]['cached']} reused from the cache)"
        )
    lines.append("")
    for split in sorted(next(iter(runs.values()))["splits"], key=lambda x: (x != "test", x)):
        lines += _split_sections(split, runs, names, SPLIT_NOTES.get(split, ""))
    paths = {
        "report.md": out_dir / "report.md",
        "report.json": out_dir / "report.json",
        "answers.jsonl": out_dir / "answers.jsonl",
    }
    paths["report.md"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths["report.json"].write_text(
        json.dumps({"meta": meta, "configs": runs}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    with paths["answers.jsonl"].open("w", encoding="utf-8") as fh:
        for n in names:
            for r in records[n]:
                fh.write(json.dumps({"config": n, **r}, ensure_ascii=False) + "\n")
    main_split = "test" if "test" in next(iter(runs.values()))["splits"] else None
    plotted = {n: runs[n]["splits"][main_split]["overall"] for n in names} if main_split else summary
    paths.update(plot(out_dir, plotted, records))
    return paths


def plot(
    out_dir: Path, summary: dict[str, dict[str, Any]], records: dict[str, list[dict[str, Any]]]
) -> dict[str, Path]:
    """metrics.png (quality per configuration) and latency.png (answer time distribution)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    keys = [
        ("recall@5", "recall@5"),
        ("must_include", "must-include"),
        ("citation_precision", "cit. precision"),
        ("citation_recall", "cit. recall"),
        ("judged_faithfulness", "judged faithful"),
        ("refusal_f1", "refusal F1"),
    ]
    keys = [(k, lab) for k, lab in keys if any(summary[n].get(k) is not None for n in names)]
    out: dict[str, Path] = {}
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys)), 4))
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        xs = [j + i * width for j in range(len(keys))]
        ax.bar(xs, [summary[n].get(k) or 0.0 for k, _ in keys], width, label=n)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(keys))], [lab for _, lab in keys])
    ax.set_ylim(0, 1.05)
    ax.set_title("Quality by configuration")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out["metrics.png"] = out_dir / "metrics.png"
    fig.savefig(out["metrics.png"], dpi=110)
    plt.close(fig)

    series = {
        n: [r["total_s"] for r in records[n] if r.get("total_s") is not None and r.get("prompt_tokens")] for n in names
    }
    series = {n: v for n, v in series.items() if v}
    if series:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.boxplot(list(series.values()), showmeans=True)
        ax.set_xticks(range(1, len(series) + 1), list(series))
        ax.set_ylabel("seconds per answered question")
        ax.set_title("Answer latency (questions that reached the model)")
        fig.tight_layout()
        out["latency.png"] = out_dir / "latency.png"
        fig.savefig(out["latency.png"], dpi=110)
        plt.close(fig)
    return out

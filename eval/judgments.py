"""Faithfulness judged by reading: a pool of human-written labels, joined with answers.

The product's verifier grades its own homework; a reader checking the cited abstract does not.
``eval/judgments.jsonl`` holds one label per (question id, sentence as shown, cited paper id),
written by reading that paper's abstract (see ``shared/JUDGING.md``). ``rag eval`` joins every
answer sentence a configuration presents with the pool, reports judged faithfulness and how much
of it the pool covers, and lists what still needs a label in ``unjudged.jsonl``, so the pool grows
run by run the way TREC pools relevance judgments. No code here decides a label.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import RagError
from rag.types import Paper

DEFAULT_JUDGMENTS = Path(__file__).parent / "judgments.jsonl"
LABELS = ("supported", "unsupported", "no-answer", "garbled")


class JudgmentError(RagError):
    """The judgments file cannot be used; the message names the file and line."""


def sentence_key(text: str) -> str:
    """The text of a shown sentence as a key: whitespace folded, nothing else changed (a sentence
    whose words change is a new sentence and needs a new judgment)."""
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class Judgment:
    """A reader's label for one shown sentence against one paper it cites."""

    question_id: str
    sentence: str
    paper_id: str
    label: str
    reason: str = ""
    judged_at: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.question_id, sentence_key(self.sentence), self.paper_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question_id": self.question_id,
            "sentence": self.sentence,
            "paper_id": self.paper_id,
            "label": self.label,
            "reason": self.reason,
            "judged_at": self.judged_at,
        }


def load_judgments(path: str | Path) -> dict[tuple[str, str, str], Judgment]:
    """Read the pool; a missing file is an empty pool. Two different labels for the same key is
    an error naming both lines (a pool must be consistent), the same label twice is fine."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[tuple[str, str, str], Judgment] = {}
    lines_of: dict[tuple[str, str, str], int] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise JudgmentError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(rec, dict):
            raise JudgmentError(f"{where}: expected a JSON object")
        for field in ("question_id", "sentence", "paper_id", "label"):
            if not isinstance(rec.get(field), str) or not rec[field].strip():
                raise JudgmentError(f"{where}: field {field!r} is missing or empty")
        if rec["label"] not in LABELS:
            raise JudgmentError(f"{where}: label {rec['label']!r} is not one of {', '.join(LABELS)}")
        judgment = Judgment(
            question_id=rec["question_id"],
            sentence=rec["sentence"],
            paper_id=rec["paper_id"],
            label=rec["label"],
            reason=str(rec.get("reason", "")),
            judged_at=str(rec.get("judged_at", "")),
        )
        old = out.get(judgment.key)
        if old is not None and old.label != judgment.label:
            raise JudgmentError(
                f"{where}: label {judgment.label!r} contradicts {old.label!r} at line {lines_of[judgment.key]} "
                "for the same question, sentence and paper"
            )
        out[judgment.key] = judgment
        lines_of.setdefault(judgment.key, number)
    return out


@dataclass(frozen=True, slots=True)
class SentenceVerdict:
    """One presented sentence joined with the pool."""

    question_id: str
    sentence: str
    paper_ids: tuple[str, ...]
    labels: tuple[str | None, ...]  # per cited paper; None = not judged yet

    @property
    def uncited(self) -> bool:
        return not self.paper_ids

    @property
    def judged(self) -> bool:
        return self.uncited or all(label is not None for label in self.labels)

    @property
    def supported(self) -> bool:
        """Every paper it cites supports it (a claim nobody cites is supported by nobody)."""
        return not self.uncited and all(label == "supported" for label in self.labels)

    @property
    def label(self) -> str | None:
        """The sentence's worst label: garbled > no-answer > unsupported > supported; "uncited"."""
        if self.uncited:
            return "uncited"
        if not self.judged:
            return None
        for label in ("garbled", "no-answer", "unsupported"):
            if label in self.labels:
                return label
        return "supported"


def presented(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The sentences a configuration presents as its answer: for a verified configuration those
    shown as verified, for an unverified one every sentence but its "the sources do not say"
    ones. A refused answer presents none."""
    if record.get("refused", True):
        return []
    return [s for s in record.get("shown", []) if s.get("verified") and not s.get("refusal")]


def join(records: Iterable[Mapping[str, Any]], pool: Mapping[tuple[str, str, str], Judgment]) -> list[SentenceVerdict]:
    """Every presented sentence of ``records`` with its labels from ``pool``."""
    out = []
    for record in records:
        for s in presented(record):
            pids = tuple(dict.fromkeys(s.get("paper_ids", [])))
            key_text = sentence_key(s["text"])
            labels = tuple(
                (pool.get((record["id"], key_text, pid)).label if (record["id"], key_text, pid) in pool else None)
                for pid in pids
            )
            out.append(SentenceVerdict(record["id"], s["text"], pids, labels))
    return out


def judged_metrics(verdicts: Sequence[SentenceVerdict]) -> dict[str, Any]:
    """Judged faithfulness, coverage, sentence-level citation precision and the error classes."""
    judged = [v for v in verdicts if v.judged]
    cited = [v for v in judged if not v.uncited]
    pairs = [label for v in cited for label in v.labels]
    counts = {label: sum(v.label == label for v in judged) for label in (*LABELS, "uncited")}
    return {
        "presented_sentences": len(verdicts),
        "judged_sentences": len(judged),
        "judged_coverage": len(judged) / len(verdicts) if verdicts else None,
        # Over the sentences that cite a paper; a sentence that cites none is counted apart
        # (judged_uncited), and the strict share below counts it as unsupported.
        "judged_faithfulness": sum(v.supported for v in cited) / len(cited) if cited else None,
        "judged_faithfulness_strict": sum(v.supported for v in judged) / len(judged) if judged else None,
        "sentence_citation_precision": sum(label == "supported" for label in pairs) / len(pairs) if pairs else None,
        **{f"judged_{label.replace('-', '_')}": n for label, n in counts.items()},
    }


def unjudged(
    records_by_config: Mapping[str, Sequence[Mapping[str, Any]]],
    pool: Mapping[tuple[str, str, str], Judgment],
    papers: Mapping[str, Paper],
) -> list[dict[str, Any]]:
    """What still needs a label, once per (question, sentence, paper), with what a reader needs:
    the question, the sentence as shown, the cited paper's title and abstract."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for config, records in records_by_config.items():
        for record in records:
            for s in presented(record):
                for pid in dict.fromkeys(s.get("paper_ids", [])):
                    key = (record["id"], sentence_key(s["text"]), pid)
                    if key in pool:
                        continue
                    if key in out:
                        out[key]["configs"].append(config)
                        continue
                    paper = papers.get(pid)
                    out[key] = {
                        "question_id": record["id"],
                        "question": record.get("question", ""),
                        "sentence": s["text"],
                        "answer": record.get("text", ""),
                        "paper_id": pid,
                        "title": paper.title if paper else "",
                        "abstract": paper.abstract if paper else "",
                        "configs": [config],
                    }
    return list(out.values())

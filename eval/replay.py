"""Replay stored model outputs through the current code: ``rag eval --replay answers.jsonl``.

Generation is the slow, fixed part of an answer; verification, answer forms and refusal are what
most changes touch. A replay answers every question again with the current code, but the model's
reply is the one a previous run stored (``raw_text`` in its ``answers.jsonl``), so a verifier change
is measured on hundreds of questions in seconds, and the only differences are the code's.

A replay is exact only while the prompt is unchanged: when the current code puts other papers in the
prompt than the stored run did, the stored reply answers a prompt the model never saw. Such
questions are counted and flagged (``replay_prompt_changed``). Replayed answers have no latency or
token counts of their own (they are left empty), and they never enter the run cache of real answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.gold import GoldItem
from rag.errors import RagError
from rag.llm import FakeGenerator, Message


class ReplayError(RagError):
    """The stored answers cannot be replayed; the message names the file, line or question."""


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """One answer of a previous run, as its ``answers.jsonl`` holds it."""

    config: str
    id: str
    question: str
    raw_text: str
    text: str
    refused: bool
    must_include_ok: bool | None
    prompt_ids: tuple[str, ...]
    source: str  # "file:line"

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "id": self.id,
            "question": self.question,
            "raw_text": self.raw_text,
            "text": self.text,
            "refused": self.refused,
            "must_include_ok": self.must_include_ok,
            "prompt_ids": list(self.prompt_ids),
            "source": self.source,
        }


def load_stored(paths: Iterable[str | Path]) -> dict[str, dict[str, StoredAnswer]]:
    """The stored answers of every file, by configuration name and question id.

    Raises:
        ReplayError: an unreadable file, a line that is not a JSON object, a record without its
            configuration, id, question or model output, or one question stored twice.
    """
    out: dict[str, dict[str, StoredAnswer]] = {}
    for path in map(Path, paths):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ReplayError(f"{path}: cannot read the stored answers ({exc})") from exc
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ReplayError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(rec, dict):
                raise ReplayError(f"{where}: expected a JSON object")
            for field in ("config", "id", "question"):
                if not isinstance(rec.get(field), str) or not rec[field].strip():
                    raise ReplayError(f"{where}: field {field!r} is missing or empty")
            if "raw_text" not in rec:
                if "refused" not in rec:  # a retrieval-only run asked no model
                    raise ReplayError(f"{where}: no model output to replay (a retrieval-only run?)")
                raise ReplayError(f"{where}: field 'raw_text' is missing (written before answers kept it?)")
            stored = StoredAnswer(
                config=rec["config"],
                id=rec["id"],
                question=rec["question"],
                raw_text=rec["raw_text"] or "",
                text=rec.get("text") or "",
                refused=bool(rec.get("refused")),
                must_include_ok=rec.get("must_include_ok"),
                prompt_ids=tuple(rec.get("prompt_ids") or ()),
                source=where,
            )
            by_id = out.setdefault(stored.config, {})
            if stored.id in by_id:
                raise ReplayError(f"{where}: question {stored.id!r} of {stored.config!r} is stored twice "
                                  f"(first at {by_id[stored.id].source})")
            by_id[stored.id] = stored
    return out


def replay_digest(paths: Sequence[str | Path]) -> str:
    """Short hash of the stored answers (names the replay's own cache)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:12]


def stored_for(
    stored: Mapping[str, Mapping[str, StoredAnswer]], config: str, items: Sequence[GoldItem]
) -> dict[str, StoredAnswer]:
    """The stored answers of ``config`` for exactly these questions.

    Raises:
        ReplayError: the configuration or some questions are not stored, or a stored question's
            text is not the gold item's (the gold file was edited since the run).
    """
    if config not in stored:
        raise ReplayError(
            f"no stored answers of configuration {config!r} (the files hold {', '.join(sorted(stored)) or 'none'})"
        )
    by_id = stored[config]
    missing = [i.id for i in items if i.id not in by_id]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ReplayError(f"no stored answer of {config!r} for {', '.join(missing[:5])}{more}")
    for item in items:
        if by_id[item.id].question != item.question:
            raise ReplayError(
                f"{by_id[item.id].source}: question {item.id!r} reads differently in the gold file now"
            )
    return {i.id: by_id[i.id] for i in items}


class ReplayGenerator(FakeGenerator):
    """A ``Generator`` that answers each prompt with the reply stored for its question.

    The question is found in the prompt's last message (the longest stored question it contains,
    so that a question that is part of another one cannot take its reply). Token counts are the
    fake word counts of ``FakeGenerator``: a replay measures no speed.
    """

    def __init__(self, replies: Mapping[str, str], name: str = "replay") -> None:
        super().__init__(self.reply_for, name=name)
        self.replies = dict(replies)
        self._by_length = sorted(self.replies, key=len, reverse=True)

    def reply_for(self, messages: Sequence[Message]) -> str:
        last = messages[-1]["content"] if messages else ""
        for question in self._by_length:
            if question in last:
                return self.replies[question]
        if "warm-up" in last:  # Answerer.warm_up's one-token request
            return ""
        raise ReplayError(f"no stored reply for this prompt: {last[-200:]!r}")


# Fields a replayed record cannot measure: the model did not run.
UNMEASURED = ("prompt_tokens", "completion_tokens", "first_token_s", "total_s", "tokens_per_s")


def replayed_record(record: dict[str, Any], stored: StoredAnswer) -> dict[str, Any]:
    """``record`` with what a replay cannot measure emptied, and whether the prompt changed."""
    out = {**record, **{k: None for k in UNMEASURED}}
    out["replay_prompt_changed"] = (
        bool(stored.prompt_ids) and "prompt_ids" in record and sorted(stored.prompt_ids) != record["prompt_ids"]
    )
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """One question whose shown answer differs between the stored run and the replay."""

    config: str
    id: str
    split: str
    type: str
    old_text: str
    new_text: str
    old_refused: bool
    new_refused: bool
    old_ok: bool | None
    new_ok: bool | None
    prompt_changed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "id": self.id,
            "split": self.split,
            "type": self.type,
            "old_text": self.old_text,
            "new_text": self.new_text,
            "old_refused": self.old_refused,
            "new_refused": self.new_refused,
            "old_must_include_ok": self.old_ok,
            "new_must_include_ok": self.new_ok,
            "prompt_changed": self.prompt_changed,
        }


def compare(config: str, records: Sequence[dict[str, Any]], stored: Mapping[str, StoredAnswer]) -> dict[str, Any]:
    """The replay beside the stored run: answers changed, must-include and refusals before and after.

    The stored verdicts are scored again against today's gold (a corrected must-include string
    counts for both sides), from the stored text.
    """
    from eval.metrics import must_include

    changes: list[Change] = []
    counts = {"replayed": len(records), "changed": 0, "prompt_changed": 0}
    for side in ("old", "new"):
        counts[f"{side}_must_include"] = 0
        counts[f"{side}_refused_answerable"] = 0
        counts[f"{side}_refused_unanswerable"] = 0
    counts["answerable_scored"] = 0
    counts["unanswerable"] = sum(not r["answerable"] for r in records)
    for r in records:
        old = stored[r["id"]]
        scored = bool(r["answerable"] and r.get("must_include"))
        old_ok = must_include(old.text, r["must_include"]) and not old.refused if scored else None
        new_ok = r.get("must_include_ok")
        counts["answerable_scored"] += scored
        counts["old_must_include"] += bool(old_ok)
        counts["new_must_include"] += bool(new_ok)
        kind = "answerable" if r["answerable"] else "unanswerable"
        counts[f"old_refused_{kind}"] += old.refused
        counts[f"new_refused_{kind}"] += bool(r["refused"])
        counts["prompt_changed"] += bool(r.get("replay_prompt_changed"))
        if old.text != r["text"] or old.refused != r["refused"]:
            counts["changed"] += 1
            changes.append(
                Change(config, r["id"], r["split"], r["type"], old.text, r["text"], old.refused, bool(r["refused"]),
                       old_ok, new_ok, bool(r.get("replay_prompt_changed")))
            )
    return {"counts": counts, "changes": [c.to_dict() for c in changes]}


def summary_line(config: str, counts: Mapping[str, int]) -> str:
    """One line a developer reads after a replay."""
    c = counts
    line = (
        f"{config}: {c['changed']} of {c['replayed']} answers changed; must-include {c['old_must_include']} -> "
        f"{c['new_must_include']} of {c['answerable_scored']}; answerable refused {c['old_refused_answerable']} -> "
        f"{c['new_refused_answerable']}; unanswerable refused {c['old_refused_unanswerable']} -> "
        f"{c['new_refused_unanswerable']} of {c['unanswerable']}"
    )
    if c["prompt_changed"]:
        line += f"; {c['prompt_changed']} prompts hold other papers than the stored run's (replay not exact there)"
    return line

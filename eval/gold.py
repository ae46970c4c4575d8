"""Load and validate a gold QA file (JSONL), resolving gold titles to paper ids.

Each line: ``id``, ``question``, ``answer`` (reference), ``must_include`` (list of strings),
``gold_titles`` or ``gold_paper_ids`` (empty = unanswerable), ``type`` (any label). Every
problem names its line; a title that matches no paper is an error, not a silent zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import RagError
from rag.text import normalize_title
from rag.types import Paper

DATA_DIR = Path(__file__).parent / "data"
# dev: written and tuned on (the first gold set). test: written before the pipeline changes that
# it measures, and never tuned on; run it at the start and at the end of a piece of work.
# test2: written (by readers of the abstracts, from papers no other split uses) once test had been
# read while fixing the failures it showed.
# test3: written the same way (from papers test2 left unused) once test2 had been read; the held-out
# split for the work after it.
# test4: written the same way (from papers no earlier split asks about) once test3 had been read.
# test5: written the same way once test4 had been read.
# test6: written the same way once test5 had been read.
# test7: written the same way once test6 had been read.
# test8: written the same way once test7 had been read.
# test9: written the same way once test8 had been read; only 13 papers were left that no earlier
# split asks about, so its questions also use papers asked about once before (new questions).
# test10: written the same way once test9 had been read; no paper is left that no split asks about,
# so it asks new questions about papers asked exactly once before (none of them test9's).
# test11: written the same way once test10 had been read, from papers asked exactly once before
# (none of them test9's or test10's); more absent topics (7), phrased near the collection's subjects.
# test12: written the same way once test11 had been run blind, from papers asked exactly once before
# (none of them test9's, test10's or test11's); no absent topic asked before is asked again.
SPLITS: dict[str, Path] = {
    "dev": DATA_DIR / "dev.jsonl",
    "test": DATA_DIR / "test.jsonl",
    "test2": DATA_DIR / "test2.jsonl",
    "test3": DATA_DIR / "test3.jsonl",
    "test4": DATA_DIR / "test4.jsonl",
    "test5": DATA_DIR / "test5.jsonl",
    "test6": DATA_DIR / "test6.jsonl",
    "test7": DATA_DIR / "test7.jsonl",
    "test8": DATA_DIR / "test8.jsonl",
    "test9": DATA_DIR / "test9.jsonl",
    "test10": DATA_DIR / "test10.jsonl",
    "test11": DATA_DIR / "test11.jsonl",
    "test12": DATA_DIR / "test12.jsonl",
}
DEFAULT_GOLD = SPLITS["dev"]


class GoldError(RagError):
    """The gold file cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class GoldItem:
    id: str
    question: str
    answer: str
    must_include: tuple[str, ...]
    gold_ids: tuple[str, ...]
    type: str
    line: int
    # The split the item comes from ("dev", "test", or the gold file's name for other files).
    split: str = ""
    # A finer label some types carry (unanswerable: "near-miss" or "absent").
    subtype: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.gold_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "must_include": list(self.must_include),
            "gold_paper_ids": list(self.gold_ids),
            "type": self.type,
            "subtype": self.subtype,
            "split": self.split,
        }


def _strings(value: Any, field: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise GoldError(f"{where}: field {field!r} must be a list of non-empty strings")
    return tuple(v.strip() for v in value)


def load_split(split: str, papers: Mapping[str, Paper]) -> list[GoldItem]:
    """The bundled items of ``split`` ("dev", "test", "test2" ... "test9" or "all": every split in that order)."""
    if split == "all":
        return [item for name in SPLITS for item in load_split(name, papers)]
    if split not in SPLITS:
        raise GoldError(f"unknown split {split!r}: use one of {', '.join(SPLITS)} or all")
    return load_gold(SPLITS[split], papers, split=split)


def load_gold(path: str | Path, papers: Mapping[str, Paper], *, split: str | None = None) -> list[GoldItem]:
    """Read and validate a gold file against the papers of an index.

    Raises:
        GoldError: unreadable file, bad JSON, a missing or mistyped field, a duplicate id,
            or a gold title / id that matches no paper.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldError(f"{path}: cannot read the gold file ({exc})") from exc
    by_title = {normalize_title(p.title): pid for pid, p in papers.items()}
    items: list[GoldItem] = []
    seen: set[str] = set()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise GoldError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(rec, dict):
            raise GoldError(f"{where}: expected a JSON object")
        for field in ("id", "question"):
            if not isinstance(rec.get(field), str) or not rec[field].strip():
                raise GoldError(f"{where}: field {field!r} is missing or empty")
        qid = rec["id"].strip()
        if qid in seen:
            raise GoldError(f"{where}: duplicate id {qid!r}")
        seen.add(qid)
        if "gold_titles" in rec and "gold_paper_ids" in rec:
            raise GoldError(f"{where}: give gold_titles or gold_paper_ids, not both")
        if "gold_paper_ids" in rec:
            ids = _strings(rec["gold_paper_ids"], "gold_paper_ids", where)
            unknown = [i for i in ids if i not in papers]
            if unknown:
                raise GoldError(f"{where}: gold paper id(s) not in the index: {', '.join(unknown)}")
        else:
            titles = _strings(rec.get("gold_titles", []), "gold_titles", where)
            unknown = [t for t in titles if normalize_title(t) not in by_title]
            if unknown:
                raise GoldError(f"{where}: gold title(s) match no paper in the index: {'; '.join(unknown)}")
            ids = tuple(by_title[normalize_title(t)] for t in titles)
        answer = rec.get("answer", "")
        if not isinstance(answer, str):
            raise GoldError(f"{where}: field 'answer' must be a string")
        qtype = rec.get("type") or ("unanswerable" if not ids else "answerable")
        if not isinstance(qtype, str):
            raise GoldError(f"{where}: field 'type' must be a string")
        subtype = rec.get("subtype") or ""
        if not isinstance(subtype, str):
            raise GoldError(f"{where}: field 'subtype' must be a string")
        items.append(
            GoldItem(
                id=qid,
                question=rec["question"].strip(),
                answer=answer.strip(),
                must_include=_strings(rec.get("must_include", []), "must_include", where),
                gold_ids=tuple(dict.fromkeys(ids)),
                type=qtype,
                line=number,
                split=split or path.stem,
                subtype=subtype,
            )
        )
    if not items:
        raise GoldError(f"{path}: no questions in the gold file")
    return items

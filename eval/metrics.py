"""Pure metric functions for retrieval, answers, citations, refusal and latency.

Each takes plain values (ids, strings, numbers) so that it can be tested on hand-computed cases.
"""

from __future__ import annotations

import math
import re
import statistics
import string
from collections import Counter
from collections.abc import Iterable, Sequence


# -- retrieval (paper level) ---------------------------------------------------------------------
def hit_at_1(ranking: Sequence[str], gold: set[str]) -> float:
    return float(bool(ranking) and ranking[0] in gold)


def recall_at_k(ranking: Sequence[str], gold: set[str], k: int) -> float:
    """Share of the gold papers found in the top ``k``."""
    if not gold:
        raise ValueError("recall needs at least one gold paper")
    return len(gold & set(ranking[:k])) / len(gold)


def capped_recall_at_k(ranking: Sequence[str], gold: set[str], k: int) -> float:
    """BEIR's R_cap@k: gold papers in the top ``k`` over min(k, |gold|), so a list question with
    more gold papers than ``k`` can still reach 1."""
    if not gold:
        raise ValueError("recall needs at least one gold paper")
    return len(gold & set(ranking[:k])) / min(k, len(gold))


def reciprocal_rank(ranking: Sequence[str], gold: set[str]) -> float:
    for rank, item in enumerate(ranking, 1):
        if item in gold:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranking: Sequence[str], gold: set[str], k: int = 10) -> float:
    """Binary-relevance nDCG: DCG = sum over relevant ranks r of 1/log2(r + 1), over the ideal."""
    dcg = sum(1.0 / math.log2(r + 1) for r, item in enumerate(ranking[:k], 1) if item in gold)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(gold), k) + 1))
    return dcg / ideal if ideal else 0.0


# -- answers ---------------------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces; [n] markers removed."""
    text = re.sub(r"\[(?:\d+(?:\s*[,\-–]\s*\d+)*|\?)\]", " ", text.lower())
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_token(text: str, required: str) -> bool:
    """``required`` occurs in ``text`` as whole tokens: case-insensitive, spacing folded, and not
    inside a longer word or number ("24" is not in "2024" nor in "0.24"; "15%" is in "15%.")."""
    folded = " ".join(text.lower().split())
    needle = " ".join(required.lower().split())
    if not needle:
        return True
    pattern = r"(?<!\w)(?<!\d[.,])" + re.escape(needle) + r"(?!\w)(?![.,]\d)"
    if not needle[0].isalnum():
        pattern = pattern.replace(r"(?<!\w)(?<!\d[.,])", "", 1)
    if not needle[-1].isalnum():
        pattern = pattern.replace(r"(?!\w)(?![.,]\d)", "", 1)
    return re.search(pattern, folded) is not None


def must_include(answer: str, required: Sequence[str]) -> bool:
    """Every required string occurs in the answer as whole tokens (see ``contains_token``)."""
    return all(contains_token(answer, r) for r in required)


def answer_f1(answer: str, reference: str, refused: bool, answerable: bool) -> float:
    """Token F1 with exact refusal handling: refusing an unanswerable question scores 1, any
    answer to it 0; refusing an answerable one scores 0."""
    if not answerable:
        return float(refused)
    return 0.0 if refused else token_f1(answer, reference)


# -- citations -------------------------------------------------------------------------------------
def citation_precision(cited: Sequence[str], gold: set[str]) -> float | None:
    """Share of the cited papers that are gold; None when nothing is cited."""
    unique = set(cited)
    return len(unique & gold) / len(unique) if unique else None


def citation_recall(cited: Sequence[str], gold: set[str]) -> float:
    if not gold:
        raise ValueError("citation recall needs at least one gold paper")
    return len(set(cited) & gold) / len(gold)


# -- refusal ---------------------------------------------------------------------------------------
def refusal_scores(refused: Sequence[bool], answerable: Sequence[bool]) -> dict[str, float]:
    """Precision, recall and F1 of refusing, with unanswerable questions as the positive class,
    and the rate of false refusals on answerable ones."""
    tp = sum(r and not a for r, a in zip(refused, answerable, strict=True))
    fp = sum(r and a for r, a in zip(refused, answerable, strict=True))
    fn = sum((not r) and (not a) for r, a in zip(refused, answerable, strict=True))
    n_answerable = sum(answerable)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "refusal_precision": precision,
        "refusal_recall": recall,
        "refusal_f1": f1,
        "false_refusal_rate": fp / n_answerable if n_answerable else 0.0,
    }


# -- aggregation -----------------------------------------------------------------------------------
def mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def percentile(values: Iterable[float | None], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    kept = sorted(v for v in values if v is not None)
    if not kept:
        return None
    if len(kept) == 1:
        return kept[0]
    pos = (len(kept) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return kept[lo] + (kept[hi] - kept[lo]) * (pos - lo)


def median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None

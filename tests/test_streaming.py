"""Sentence-by-sentence verification while the answer streams (``rag.streaming``, ``Answerer.stream``)."""

from __future__ import annotations

import pytest

from rag.answer import (
    Answerer,
    EvidenceEvent,
    ProgressEvent,
    SentenceEvent,
    TokenEvent,
)
from rag.llm import FakeGenerator
from rag.streaming import completed_prefix, final_note, reason_words
from rag.types import AnswerSentence, Source

OWL_Q = "How many thermal images of animals at night are in OwlSet?"
SUPPORTED = "OwlSet has 12,000 thermal images of animals at night [1]."
UNSUPPORTED = "Tiny Owl runs at 95 frames per second on a phone [1]."
CONFIG = {"min_relevance": 0.05, "top_k": 3}


def events_of(index, reply: str, **config):  # type: ignore[no-untyped-def]
    answerer = Answerer({**CONFIG, **config}, index=index, generator=FakeGenerator(reply))
    return answerer, list(answerer.stream(OWL_Q))


@pytest.mark.parametrize(
    ("raw", "done"),
    [
        ("OwlSet has 12", ""),
        ("OwlSet has 12.", ""),  # "12." may go on as "12.5": not complete until a sentence starts
        ("OwlSet has 12. [1", ""),  # a marker being written does not start a sentence
        ("OwlSet has 12 [1]. The", "OwlSet has 12 [1]. "),
        ("A claim. [2] Next", "A claim. [2] "),  # the marker closes the sentence before it
        ("Fig. 3 shows e.g. a dog.", ""),  # abbreviations do not end a sentence
        ("A dog [1].\n- B", "A dog [1].\n- "),
        ("A dog [1].\n", ""),
        ("It is \u201cWords are all you need? Language", ""),  # a quoted title is not over at its "?"
        ("It is \u201cAll you need? Words\u201d [1]. Next", "It is \u201cAll you need? Words\u201d [1]. "),
    ],
)
def test_a_sentence_is_complete_when_the_next_one_starts(raw: str, done: str) -> None:
    assert raw[: completed_prefix(raw)] == done


def test_sentences_are_verified_before_the_token_that_completes_them(fake_index) -> None:  # type: ignore[no-untyped-def]
    _, events = events_of(fake_index, f"{SUPPORTED} {UNSUPPORTED}")
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["evidence", "progress"] and kinds[-1] == "answer"
    sentences = [e for e in events if isinstance(e, SentenceEvent)]
    assert [s.index for s in sentences] == [0, 1]
    first, second = sentences
    # The first sentence lands while the model is still writing: tokens follow it.
    assert any(isinstance(e, TokenEvent) for e in events[events.index(first) + 1 :])
    # Everything the reader had before it, plus the token right after it, holds the whole first
    # sentence and only the start of the second: the verified part ends where the tail begins.
    raw = "".join(e.text for e in events[: events.index(first) + 2] if isinstance(e, TokenEvent))
    assert raw[: first.raw_end].strip() == SUPPORTED and "95" not in raw
    assert first.supported and first.verdict == "supported" and first.citations == (1,) and first.reason is None
    assert first.text == SUPPORTED and first.cited[0].title.startswith("Tiny Owls")
    assert not second.supported and second.text.endswith("[?].") and second.citations == ()
    assert second.reason is not None and "95" in second.reason and "Tiny Owls" in second.reason
    answer = events[-1].answer
    # The final answer confirms what was shown: same sentences, same marks.
    assert [s.shown for s in answer.sentences] == [s.text for s in sentences]
    assert final_note([s.sentence for s in sentences], answer) is None
    assert 0 < answer.timings["first_sentence"] <= answer.timings["total"]


def test_progress_says_how_much_the_model_reads_and_how_long_once_measured(fake_index) -> None:  # type: ignore[no-untyped-def]
    answerer, events = events_of(fake_index, SUPPORTED)
    first = next(e for e in events if isinstance(e, ProgressEvent))
    answer = events[-1].answer
    assert first.prompt_tokens == answer.prompt_tokens > 0
    assert first.estimate_s is None and first.text == f"reading {answer.prompt_tokens} tokens of evidence"
    assert answerer.prefill_tokens_per_s is not None and answerer.prefill_tokens_per_s > 0
    second = next(e for e in answerer.stream(OWL_Q) if isinstance(e, ProgressEvent))
    assert second.estimate_s == pytest.approx(second.prompt_tokens / answerer.prefill_tokens_per_s)
    assert second.text.startswith(f"reading {second.prompt_tokens} tokens of evidence, about ")


def test_unverified_mode_streams_no_sentences(fake_index) -> None:  # type: ignore[no-untyped-def]
    _, events = events_of(fake_index, SUPPORTED, verify=False)
    assert not any(isinstance(e, SentenceEvent) for e in events)


def test_a_refusal_after_checking_is_said_over_the_shown_sentences(fake_index) -> None:  # type: ignore[no-untyped-def]
    _, events = events_of(fake_index, UNSUPPORTED, extractive_fallback=False)
    shown = [e.sentence for e in events if isinstance(e, SentenceEvent)]
    answer = events[-1].answer
    assert shown and not shown[0].supported and answer.refused
    note = final_note(shown, answer)
    assert note is not None and note.startswith("refused after checking: ")


def test_the_long_question_warning_comes_with_the_evidence(fake_index) -> None:  # type: ignore[no-untyped-def]
    answerer = Answerer({**CONFIG, "max_question_chars": 40}, index=fake_index, generator=FakeGenerator(SUPPORTED))
    evidence = next(iter(answerer.stream(OWL_Q)))
    assert isinstance(evidence, EvidenceEvent)
    assert evidence.warnings and "only the first 40" in evidence.warnings[0]


def source(n: int, title: str) -> Source:
    return Source(n=n, paper_id=f"p{n}", title=title, sentences=(), retrieval_score=0.5, files=("x.txt",))


@pytest.mark.parametrize(
    ("verdict", "issues", "expected"),
    [
        ("unsupported", ("[2] does not contain 95",), "the number 95 is not in “Tiny Owls”"),
        ("unsupported", ("[2] does not contain 5, 95",), "the numbers 5, 95 are not in “Tiny Owls”"),
        (
            "unsupported",
            ("[2] does not mention owlnet, zebranet",),
            "“owlnet”, “zebranet” are not named in “Tiny Owls”",
        ),
        ("unsupported", ("[2] does not mention owlnet",), "“owlnet” is not named in “Tiny Owls”"),
        (
            "unsupported",
            ("[2] does not back it (similarity 0.20, 10% of its new words found there)",),
            "“Tiny Owls” does not back it",
        ),
        ("unsupported", ("[7] is not a source",), "it cites [7], which is not one of the sources"),
        (
            "unsupported",
            ("[2] gives 2.53 to NORB, not to what the sentence says",),
            "“Tiny Owls” gives 2.53 to NORB, not to what it says",
        ),
        (
            "unsupported",
            ("[2] is named, but another source fits the question better",),
            "it names “Tiny Owls”, but another source fits the question better",
        ),
        ("no-answer", ("restates the question: it adds nothing the question did not say",), "restates the question"),
        ("unsupported", (), "no source backs it"),
    ],
)
def test_reasons_are_plain_words(verdict: str, issues: tuple[str, ...], expected: str) -> None:
    sentence = AnswerSentence("A claim.", (), False, issues=issues, verdict=verdict)
    reason = reason_words(sentence, {2: source(2, "Tiny Owls: Nocturnal Object Detection with Thermal Cameras")})
    assert reason is not None and reason.startswith(expected)
    assert reason_words(AnswerSentence("A claim.", (1,), True, verdict="supported"), {}) is None


def test_a_which_paper_answer_names_the_paper_as_it_streams(fake_index) -> None:  # type: ignore[no-untyped-def]
    answerer = Answerer(
        CONFIG, index=fake_index, generator=FakeGenerator("It collects 12,000 thermal images of animals at night [1].")
    )
    events = list(answerer.stream("Which paper detects animals at night with thermal cameras?"))
    shown = [e for e in events if isinstance(e, SentenceEvent)]
    answer = events[-1].answer
    # the model's sentence adds nothing to the system's, which names the paper in its own words
    assert answer.form == "which-paper" and [s.verdict for s in shown] == ["system"]
    assert shown[0].text.startswith(
        "The paper is “Tiny Owls: Nocturnal Object Detection with Thermal Cameras”: “We collect OwlSet, 12,000"
    )
    assert [s.text for s in shown] == [s.shown for s in answer.sentences]  # the final answer only confirms
    assert final_note([s.sentence for s in shown], answer) is None

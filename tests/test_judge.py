"""The model's second check of each claim the rules accept (rag.judge)."""

from __future__ import annotations

from rag.answer import Answerer, AnswerEvent, SentenceEvent
from rag.judge import FakeJudge, ModelJudge, bare_claim
from rag.llm import FakeGenerator
from rag.prompts import answer_messages, is_judge_request, judge_messages
from rag.refusal import NOTHING_VERIFIED
from rag.streaming import final_note, reason_words
from rag.types import EvidenceSentence, Source

OWL_Q = "How many thermal images of animals at night are in OwlSet?"
OWL_FACT = "OwlSet has 12,000 thermal images of animals at night [1]."
CONFIG = {"min_relevance": 0.05, "top_k": 3, "extractive_fallback": False, "judge_claims": True}


def source(n: int, text: str) -> Source:
    sentence = EvidenceSentence(start=0, end=len(text), text=text, score=1.0)
    return Source(n=n, paper_id=f"p{n}", title=f"Paper {n}", sentences=(sentence,), retrieval_score=1.0)


def test_the_judge_reads_only_the_cited_abstracts_under_its_own_prompt() -> None:
    sources = [source(1, "OwlSet has 12,000 images."), source(2, "Bats fly.")]
    judged = judge_messages("OwlSet has 12,000 images.", [("Paper 1", "OwlSet has 12,000 images.")])
    assert judged[0]["role"] == "system" and judged[0]["content"] != answer_messages(OWL_Q, sources)[0]["content"]
    assert judged[1]["content"] == (
        'Abstract of "Paper 1":\nOwlSet has 12,000 images.\n\nClaim: OwlSet has 12,000 images.\n\n'
        "Does the abstract state this claim? Answer yes or no."
    )
    both = judge_messages("x", [("Paper 1", "a"), ("Paper 2", "b")])[1]["content"]
    assert 'Abstract of "Paper 2":\nb' in both and "Does each abstract state" in both
    assert is_judge_request(judged) and not is_judge_request(answer_messages(OWL_Q, sources))
    assert bare_claim("OwlSet has 12,000 images [1][2] .") == "OwlSet has 12,000 images."
    # the whole abstract of a cited paper when known, else what the prompt showed of it
    gen = FakeGenerator("unused")
    ModelJudge(gen, {"p2": "Bats fly at night, the whole abstract."}).holds("Bats fly.", [2], sources)
    assert "the whole abstract" in gen.judged[0][1]["content"] and "OwlSet" not in gen.judged[0][1]["content"]
    ModelJudge(gen).holds("Bats fly.", [2], sources)
    assert 'Abstract of "Paper 2":\nBats fly.' in gen.judged[1][1]["content"]


def test_model_judge_keeps_a_claim_unless_the_model_says_no() -> None:
    sources = [source(1, "OwlSet has 12,000 images.")]
    for verdict, holds in (("No.", False), ("no", False), ("Yes.", True), ("", True), ("Maybe", True)):
        gen = FakeGenerator("unused", verdict=verdict)
        assert ModelJudge(gen).holds("OwlSet has 12,000 images.", [1], sources) is holds
        assert len(gen.judged) == 1 and gen.calls == []


def test_a_claim_the_judge_rejects_is_not_shown_as_verified(fake_index) -> None:  # type: ignore[no-untyped-def]
    judge = FakeJudge(lambda claim: "12,000" in claim)
    gen = FakeGenerator(OWL_FACT)
    ans = Answerer(CONFIG, index=fake_index, generator=gen, judge=judge).ask(OWL_Q)
    assert judge.calls == [("OwlSet has 12,000 thermal images of animals at night.", (1,))]
    assert ans.refused and ans.refusal_code == NOTHING_VERIFIED
    assert not ans.sentences[0].supported
    assert "does not state it (the model's check)" in ans.sentences[0].issues[-1]
    # the same answer, judged stated, is verified as before
    kept = Answerer(CONFIG, index=fake_index, generator=FakeGenerator(OWL_FACT), judge=FakeJudge()).ask(OWL_Q)
    assert not kept.refused and kept.sentences[0].supported


def test_the_judge_is_the_answering_model_once_it_has_written(fake_index) -> None:  # type: ignore[no-untyped-def]
    gen = FakeGenerator(OWL_FACT, verdict="No.")
    events = list(Answerer(CONFIG, index=fake_index, generator=gen).stream(OWL_Q))
    # sentences stream as the rules verify them; the model judges once it is free, before the answer
    streamed = [e for e in events if isinstance(e, SentenceEvent)]
    assert streamed and streamed[0].supported
    answer = next(e for e in events if isinstance(e, AnswerEvent)).answer
    assert len(gen.calls) == 1 and len(gen.judged) == 1 and answer.refused
    assert final_note([e.sentence for e in streamed], answer).startswith("refused after checking")
    by_n = {s.n: s for s in answer.sources}
    assert reason_words(answer.sentences[0], by_n) == (
        "asked again, the model does not find it stated in \u201cTiny Owls\u201d"
    )
    # off (the default): no judging, the rules decide
    off = FakeGenerator(OWL_FACT, verdict="No.")
    ans = Answerer({**CONFIG, "judge_claims": False}, index=fake_index, generator=off).ask(OWL_Q)
    assert off.judged == [] and not ans.refused
    assert not Answerer({}, index=fake_index).config.judge_claims

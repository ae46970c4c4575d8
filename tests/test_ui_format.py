from __future__ import annotations

from rag.answer import Answerer
from rag.errors import IndexNotFoundError, ModelError
from rag.llm import FakeGenerator
from rag.types import Answer, AnswerSentence, Citation, EvidenceSentence, RetrievedPaper, Source
from ui.app import friendly_error, respond
from ui.format import answer_markdown, escape_md, evidence_html, plain_text, status_line

EVIL_TITLE = "<script>alert(1)</script> [click](http://evil.example) ![img](http://evil.example/x.png)"


def make_answer(refused: bool = False) -> Answer:
    src = Source(1, "p1", EVIL_TITLE, (EvidenceSentence(0, 10, "It has <b>37</b> prototypes.", 0.9),), 0.5, ("a.txt",))
    ret = RetrievedPaper("p1", EVIL_TITLE, 0.03, 0.71, 2.0, 1, 1, ("a.txt",))
    return Answer(
        question="q",
        text="It has 37 prototypes [1]. It is green [?].",
        raw_text="It has 37 prototypes [1]. It is green.",
        citations=(Citation(1, "p1", EVIL_TITLE, ("a.txt",), ("It has <b>37</b> prototypes.",), 0.5, 1),),
        sentences=(AnswerSentence("It has 37 prototypes.", (1,), True), AnswerSentence("It is green.", (), False)),
        refused=refused,
        retrieved=(ret,),
        sources=(src,),
        timings={"retrieve": 0.05, "to_evidence": 0.4, "first_token": 8.0, "total": 10.0, "tokens_per_s": 9.5},
        model="qwen",
        refusal_reason="no sentence of the answer is supported by the sources" if refused else None,
        prompt_tokens=420,
    )


def test_escape_md_neutralises_html_and_markdown() -> None:
    out = escape_md(EVIL_TITLE)
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "](" not in out and "\\[click\\]" in out and "!\\[img\\]" in out


def test_answer_markdown_links_citations_and_marks_unsupported() -> None:
    md = answer_markdown(make_answer())
    assert "It has 37 prototypes\\. **[\\[1\\]](#t1-ref-1)**" in md
    assert "⚠️ _It is green\\._ **[not supported: no source backs it]**" in md
    assert '1. <a id="t1-ref-1"></a>**' in md and "“It has &lt;b&gt;37&lt;/b&gt; prototypes\\.”" in md
    assert "<script>" not in md and "](http" not in md


def test_refused_answer_lists_closest_papers() -> None:
    md = answer_markdown(make_answer(refused=True))
    assert md.startswith("**") and "Closest papers in the collection:" in md
    assert "Why: no sentence of the answer is supported" in md and "<script>" not in md


def test_evidence_panel_escapes_and_highlights() -> None:
    answer = make_answer()
    before = evidence_html(answer.sources, answer.retrieved)
    after = evidence_html(answer.sources, answer.retrieved, answer)
    for html in (before, after):
        assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;37" in html
    assert "cited as [1]" not in before and "Source 1" in before
    assert 'id="ev-1-1"' in after and "cited as [1]" in after and "ev-sent ev-backs" in after
    assert "No evidence yet" in evidence_html((), ())


def test_plain_text_and_status() -> None:
    answer = make_answer()
    text = plain_text(answer)
    assert text.startswith("It has 37 prototypes [1].") and "[1] " in text and "(a.txt)" in text
    status = status_line(answer)
    assert "1/2 sentences verified" in status and "first token 8.0 s" in status and "prompt 420 tokens" in status


def test_friendly_errors_have_no_traceback() -> None:
    assert "rag build" in friendly_error(IndexNotFoundError("no index at x"))
    assert "rag models" in friendly_error(ModelError("missing"))
    assert "server log" in friendly_error(ValueError("boom"))


def test_respond_streams_evidence_then_text_then_verified_answer(fake_index) -> None:  # type: ignore[no-untyped-def]
    gen = FakeGenerator("OwlSet has 12,000 thermal images of animals at night [2].")
    answerer = Answerer({"min_relevance": 0.05}, index=fake_index, generator=gen)
    steps = list(
        respond(lambda m: answerer, "How many thermal images are in OwlSet?", [], [], 3, "hybrid", False, "fake")
    )
    chats = [s[0] for s in steps]
    assert chats[0][-1]["content"] == "_Searching the papers…_"
    evidence_step = next(i for i, s in enumerate(steps) if "Source 1" in s[1])
    first_token_step = next(i for i, c in enumerate(chats) if "▍" in c[-1]["content"])
    assert evidence_step < first_token_step
    final_chat, final_evidence, status, copy, history, box = steps[-1]
    assert "**[\\[1\\]](#t1-ref-1)**" in final_chat[-1]["content"] and "Tiny Owls" in final_chat[-1]["content"]
    assert "cited as [1]" in final_evidence and "sentences verified" in status
    assert copy.startswith("OwlSet has 12,000") and len(history) == 1 and box == ""


def test_respond_turns_errors_into_messages(tmp_path) -> None:  # type: ignore[no-untyped-def]
    answerer = Answerer(
        {"index_dir": tmp_path / "none"},
        embedder=__import__("rag.models").models.HashEmbedder(),
        generator=FakeGenerator("x"),
    )
    steps = list(respond(lambda m: answerer, "anything?", [], [], 4, "hybrid", False, "fake"))
    assert "There is no index yet" in steps[-1][0][-1]["content"] and steps[-1][2] == "error"
    empty = list(respond(lambda m: answerer, "   ", [], [], 4, "hybrid", False, "fake"))
    assert "empty" in empty[-1][0][-1]["content"]


def test_follow_up_in_the_chat_uses_the_conversation(fake_index) -> None:  # type: ignore[no-untyped-def]
    from rag.prompts import REWRITE_SYSTEM

    def reply(messages):  # type: ignore[no-untyped-def]
        if messages[0]["content"] == REWRITE_SYSTEM:
            return "How fast does the Tiny Owl detector run on a laptop CPU?"
        if "fast" in messages[-1]["content"].split("Question:")[-1]:
            return "Tiny Owl runs at 30 frames per second on a laptop CPU [1]."
        return "OwlSet has 12,000 thermal images of animals at night [1]."

    answerer = Answerer({"min_relevance": 0.05}, index=fake_index, generator=FakeGenerator(reply))
    first = list(
        respond(lambda m: answerer, "How many thermal images are in OwlSet?", [], [], 3, "hybrid", False, "fake")
    )[-1]
    chat, history = first[0], first[4]
    second = list(respond(lambda m: answerer, "How fast does it run?", chat, history, 3, "hybrid", False, "fake"))[-1]
    assert (
        len(second[4]) == 2
        and second[4][1].standalone_question == "How fast does the Tiny Owl detector run on a laptop CPU?"
    )
    assert "30 frames per second" in second[0][-1]["content"] and len(second[0]) == 4


def test_list_answers_render_as_lists_and_flags_carry_their_reason() -> None:
    from dataclasses import replace

    answer = make_answer()
    listed = replace(
        answer,
        form="list",
        sentences=(
            AnswerSentence("“A”: It has 37 prototypes.", (1,), True, verdict="quote"),
            AnswerSentence("“B”: It is green.", (2,), True, verdict="quote"),
        ),
    )
    md = answer_markdown(listed)
    assert md.startswith("- “A”: It has 37 prototypes\\.") and "\n- “B”: It is green\\." in md
    flagged = replace(
        answer,
        sentences=(
            AnswerSentence("It has 37 prototypes.", (1,), True),
            AnswerSentence("It is green.", (), False, issues=("[1] does not mention green",), verdict="unsupported"),
        ),
    )
    assert "not supported: “green” is not named in “" in answer_markdown(flagged)


def test_streaming_view_shows_verified_sentences_then_a_dimmed_escaped_tail() -> None:
    from ui.format import streaming_markdown

    answer = make_answer()
    done = (answer.sentences[0], None, answer.citations)
    flagged = (AnswerSentence("It is green.", (), False), "the number 5 is not in “A”", ())
    raw = "It has 37 prototypes [1]. It is green [1]. <b>Next</b> [click](http://evil.example)"
    md = streaming_markdown(raw, [done, flagged], raw_end=raw.index("<b>"), turn=3)
    assert md.startswith("It has 37 prototypes\\. **[\\[1\\]](#t3-ref-1)** ⚠️ _It is green\\._")
    assert "**[not supported: the number 5 is not in “A”]**" in md
    assert '<span class="rag-tail">&lt;b&gt;Next&lt;/b&gt; \\[click\\]\\(http://evil\\.example\\)</span> ▍' in md
    assert '1. <a id="t3-ref-1"></a>' in md and "<b>" not in md and "](http" not in md


def test_chat_shows_the_rewritten_question_a_cut_warning_and_a_late_refusal(fake_index) -> None:  # type: ignore[no-untyped-def]
    from rag.prompts import REWRITE_SYSTEM

    def reply(messages):  # type: ignore[no-untyped-def]
        if messages[0]["content"] == REWRITE_SYSTEM:
            return "How fast does the Tiny Owl detector run on a laptop CPU?"
        return "Tiny Owl runs at 95 frames per second on a phone [1]."

    answerer = Answerer(
        {"min_relevance": 0.05, "max_question_chars": 60, "extractive_fallback": False},
        index=fake_index,
        generator=FakeGenerator(reply),
    )
    first = list(respond(lambda m: answerer, "How many thermal images are in OwlSet?", [], [], 3, "hybrid", False, "x"))
    steps = list(
        respond(lambda m: answerer, "How fast does it run?", first[-1][0], first[-1][4], 3, "hybrid", False, "x")
    )
    searched = "Searched as: “How fast does the Tiny Owl detector run on a laptop CPU?”"
    evidence_step = next(s for s in steps if "Source 1" in s[1])
    assert searched in evidence_step[0][-1]["content"].replace("\\", "")  # shown before the model writes
    # The unsupported sentence was shown with its reason; the refusal says it came after checking.
    assert any("not supported: the number 95" in s[0][-1]["content"] for s in steps[:-1])
    final = steps[-1][0][-1]["content"]
    assert "Refused after checking" in final and searched in final.replace("\\", "")
    long = "How many thermal images of animals at night are in OwlSet " + "really " * 20 + "?"
    cut = list(respond(lambda m: answerer, long, [], [], 3, "hybrid", False, "x"))
    assert (
        "only the first 60 were used" in cut[1][0][-1]["content"] and "only the first 60" in cut[-1][0][-1]["content"]
    )

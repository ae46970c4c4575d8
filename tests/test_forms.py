"""Answer forms, names for citations used as nouns, restatements, and the one refusal policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from rag.answer import Answerer
from rag.evidence import CachedEmbedder
from rag.forms import (
    compare_aspect,
    list_topic,
    name_lost_subject,
    name_noun_citations,
    question_form,
    short_title,
)
from rag.llm import FakeGenerator
from rag.models import HashEmbedder
from rag.refusal import (
    MODEL_SAYS_NOT_ANSWERED,
    NO_RELEVANT_PAPER,
    NOTHING_VERIFIED,
    QUESTION_NAME_ABSENT,
    RefusalPolicy,
    absent_question_names,
)
from rag.text import sentence_spans
from rag.types import AnswerSentence, EvidenceSentence, Paper, RetrievedPaper, Source
from rag.verify import Verifier

CONFIG = {"min_relevance": 0.05, "top_k": 3}


@pytest.mark.parametrize(
    ("question", "form"),
    [
        ("Which papers in the collection study pruning?", "list"),
        ("What works address night-time detection?", "list"),
        ("Which paper prunes networks by watering weights?", "which-paper"),
        ("Is there a paper that detects owls at night?", "which-paper"),
        ("How do quantum widgets and gradient gardening differ in what they remove?", "compare"),
        ("How many thermal images are in OwlSet?", "fact"),
        ("Among the five classifiers compared for owl logs, which one was the most accurate?", "fact"),
        ("How does OwlNet compare to gradient gardening on night images?", "compare"),
        ("Does Tiny Owl run on a laptop?", "fact"),
    ],
)
def test_question_forms(question: str, form: str) -> None:
    assert question_form(question) == form


def test_short_titles() -> None:
    assert short_title("Tiny Owls: Nocturnal Object Detection with Thermal Cameras") == "Tiny Owls"
    assert (
        short_title("Deep Residual Learning for Image Recognition")
        == "\u201cDeep Residual Learning for Image Recognition\u201d"
    )


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("[1] collects thermal images.", "Tiny Owls [1] collects thermal images."),
        ("The detector is described in [1].", "The detector is described in Tiny Owls [1]."),
        ("The papers [1] and [2] build tools.", "The papers Tiny Owls [1] and Gradient Gardening [2] build tools."),
        ("It reaches 61.3 mAP [1].", "It reaches 61.3 mAP [1]."),  # a marker that ends a claim stays as it is
        ("It runs fast [1], and it prunes [2].", "It runs fast [1], and it prunes [2]."),
        ("Tiny Owls [1] runs at 30 frames per second.", "Tiny Owls [1] runs at 30 frames per second."),
        # a marker after a sentence's full stop closes that sentence, even after "models"
        ("It regularises the models. [2]", "It regularises the models. [2]"),
        # a marker ending the sentence after "approach" is the claim's source, not a name
        ("It is 8x faster than the WeakNAS approach [1].", "It is 8x faster than the WeakNAS approach [1]."),
        ("The approach [1] prunes filters.", "The approach Tiny Owls [1] prunes filters."),
        # "by [1]" where the paper is already named: no "by" left dangling once the marker moves
        (
            'The paper "Tiny Owls" by [1] shows that owls see heat.',
            'The paper "Tiny Owls" [1] shows that owls see heat.',
        ),
    ],
)
def test_citations_used_as_nouns_get_the_paper_name(raw: str, named: str) -> None:
    titles = {
        1: "Tiny Owls: Nocturnal Object Detection with Thermal Cameras",
        2: "Gradient Gardening: Pruning Networks by Watering Their Weights",
    }
    assert name_noun_citations(raw, titles) == named


def test_trained_sentence_splitter_keeps_abbreviations_inside_sentences() -> None:
    text = "As Smith et al. show in Fig. 3, methods e.g. ResNet work. We gain 3.5% vs. the baseline. Done."
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "As Smith et al. show in Fig. 3, methods e.g. ResNet work.",
        "We gain 3.5% vs. the baseline.",
        "Done.",
    ]
    # a model (or an abstract) writing "et. al." does not leave "al. (2020) ..." as a sentence
    text = "It extends the work of Kataoka et. al. (2020) by proposing fractals. It helps."
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "It extends the work of Kataoka et. al. (2020) by proposing fractals.",
        "It helps.",
    ]
    # "dist. shifts" (distribution shifts), as an abstract of the corpus writes it
    text = "It is robust on ImageNet dist. shifts and VTAB. On DataComp it wins."
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "It is robust on ImageNet dist. shifts and VTAB.",
        "On DataComp it wins.",
    ]


OWL = Source(
    1,
    "tiny-owls",
    "Tiny Owls: Nocturnal Object Detection with Thermal Cameras",
    (
        EvidenceSentence(
            0, 1, "We collect OwlSet, 12,000 thermal images of animals at night annotated with boxes.", 1.0
        ),
        EvidenceSentence(1, 2, "Tiny Owl reaches 61.3 mAP on OwlSet.", 1.0),
    ),
    1.0,
)


@pytest.fixture
def verifier() -> Verifier:
    return Verifier(CachedEmbedder(HashEmbedder(dimension=256)))


def test_a_restatement_of_the_question_is_no_answer(verifier: Verifier) -> None:
    question = "How are the thermal images of animals at night in OwlSet annotated?"
    echo = verifier.verify(
        "The thermal images of animals at night in OwlSet are annotated [1].", [OWL], question=question
    )
    assert not echo.sentences[0].supported and echo.sentences[0].verdict == "no-answer"
    assert "restates the question" in echo.sentences[0].issues[0]
    named = verifier.verify("This dataset is referred to as OwlSet [1].", [OWL], question=question)
    assert named.sentences[0].verdict == "no-answer"  # what a thing is called is not how it is made
    pointer = verifier.verify("This strategy is described in Tiny Owls [1].", [OWL], question=question)
    assert pointer.sentences[0].verdict == "no-answer"  # where it is said is not what is said
    said = verifier.verify("Tiny Owls presents this approach [1].", [OWL], question=question)
    assert said.sentences[0].verdict == "no-answer"
    for verb in ("explained", "shown", "reported", "studied"):
        where = verifier.verify(f"This is {verb} in \u201c{OWL.title}\u201d [1].", [OWL], question=question)
        assert where.sentences[0].verdict == "no-answer", verb
    real = verifier.verify("They are annotated with boxes [1].", [OWL], question=question)
    assert real.sentences[0].supported and real.sentences[0].verdict == "supported"


def test_a_claim_is_checked_against_the_paper_it_cites(verifier: Verifier) -> None:
    garden = Source(
        2,
        "gardening",
        "Gradient Gardening: Pruning Networks by Watering Their Weights",
        (EvidenceSentence(0, 1, "Gradient gardening removes 90% of the weights of ResNet-50 on ImageNet.", 1.0),),
        0.5,
    )
    # Each half is true of one paper; cited to both without saying which is which, the claim
    # cannot stand on the union of the two.
    v = verifier.verify("Tiny Owl removes 90% of the weights at 61.3 mAP [1][2].", [OWL, garden])
    assert not v.sentences[0].supported
    # A claim that names what each paper does holds, part by part.
    v = verifier.verify(
        "Tiny Owl reaches 61.3 mAP on OwlSet, while gradient gardening removes 90% of the weights [1][2].",
        [OWL, garden],
    )
    assert v.sentences[0].supported and v.sentences[0].citations == (1, 2)


def test_acronyms_resolve_against_their_expansion() -> None:
    papers = {
        "p": Paper("p", "Machine Learning for Owls", "We apply machine learning to large language models of owls.")
    }
    cites = {"p"}
    assert absent_question_names("Which ML method handles LLMs for owls?", cites, papers) == []
    assert absent_question_names("Does GraphGPT detect owls?", cites, papers) == ["GraphGPT"]
    assert absent_question_names("Is machine-learning used?", cites, papers) == []


def test_question_names_are_found_as_the_abstract_words_them() -> None:
    papers = {
        "p": Paper(
            "p", "NeuRI@ICSE 2023", "We fuzz deep learning (DL) libraries. Text supervision of ResNet backbones helps."
        )
    }
    cites = {"p"}
    # a plural in -ies, a descriptor after a hyphen, a capitalised plain word by its stem
    for question in (
        "Which DL-library bugs?",
        "Are ResNet-style backbones used?",
        "How does Text Supervised tuning work?",
        "Which ResNet-related quantity is used?",
        "What did the NeuRI system score?",
    ):
        assert absent_question_names(question, cites, papers) == [], question
    # names still have to be there
    assert absent_question_names("Are GraphGPT-style backbones used?", cites, papers) == ["GraphGPT-style"]
    assert absent_question_names("Does NeuRI fuzz Keras?", cites, papers) == ["Keras"]
    # ... but a likeness of a name another paper of the collection mentions asks for no name: the
    # cited paper may say "masked language modeling" where the question says "BERT-style"
    papers["b"] = Paper("b", "BERT", "We pretrain BERT on owls.")
    assert absent_question_names("Does NeuRI test BERT-style pretraining?", cites, papers) == []
    assert absent_question_names("Does NeuRI test BERT pretraining?", cites, papers) == ["BERT"]


def test_one_refusal_policy_with_named_reasons() -> None:
    policy = RefusalPolicy(min_relevance=0.3)
    far = [RetrievedPaper("p", "T", 1.0, 0.1)]
    assert policy.before_generation(far).code == NO_RELEVANT_PAPER
    assert not policy.before_generation([RetrievedPaper("p", "T", 1.0, 0.5)]).refused
    papers = {"p": Paper("p", "Tiny Owls", "Owls at night.")}
    cites = {"p"}
    ok = AnswerSentence("Owls fly at night.", (1,), True, verdict="supported")
    echo = AnswerSentence("Owls are described.", (), False, verdict="no-answer")

    def decide(question: str, sentences: list[AnswerSentence], said: bool = False) -> str | None:
        return policy.after_verification(question, sentences, cites, papers, said_cannot_answer=said, raw_text="x").code

    assert decide("When do owls fly?", [ok]) is None
    assert decide("When do owls fly?", [echo]) == NOTHING_VERIFIED
    assert decide("When do owls fly?", [echo], said=True) == MODEL_SAYS_NOT_ANSWERED
    assert decide("When does GraphGPT fly?", [ok]) == QUESTION_NAME_ABSENT
    assert policy.for_list([], ["owl"]).code == NO_RELEVANT_PAPER and not policy.for_list(far, []).refused


def test_which_paper_answers_name_the_paper(fake_index) -> None:  # type: ignore[no-untyped-def]
    reply = "It collects 12,000 thermal images of animals at night [1]."
    ans = Answerer(CONFIG, index=fake_index, generator=FakeGenerator(reply)).ask(
        "Which paper detects animals at night with thermal cameras?"
    )
    assert not ans.refused and ans.form == "which-paper"
    assert ans.sentences[0].verdict == "system"
    # named by the system and quoted where its authors say what they do; the model's sentence
    # adds nothing to that and the question, so it is said once
    assert ans.text == (
        "The paper is \u201cTiny Owls: Nocturnal Object Detection with Thermal Cameras\u201d: \u201cWe collect "
        "OwlSet, 12,000 thermal images of animals at night annotated with boxes, and train a detector called Tiny "
        "Owl that runs at 30 frames per second on a laptop CPU.\u201d [1]"
    )
    assert ans.citations[0].evidence[-1].startswith("We collect OwlSet")


def test_a_which_paper_quote_passes_over_an_own_sentence_that_says_too_little(fake_index) -> None:  # type: ignore[no-untyped-def]
    answerer = Answerer(CONFIG, index=fake_index, generator=FakeGenerator("unused"))
    pid = next(p for p, paper in fake_index.papers.items() if paper.title.startswith("Tiny Owls"))
    owls = fake_index.papers[pid]
    vague = replace(owls, abstract=f"Night vision is hard. In this paper, we address both issues. {owls.abstract}")
    answerer.index.papers[pid] = vague
    assert answerer.paper_quote("Which paper detects owls?", pid).startswith("We collect OwlSet")


def _numbered(answerer: Answerer, question: str) -> dict[str, int]:
    """The prompt number of each source of ``question``, by title."""
    retrieval = answerer.retrieve(question, "which-paper", answerer.config)
    return {s.title: s.n for s in answerer.select(retrieval, "which-paper", answerer.config)}


@pytest.mark.parametrize(
    "reply",
    [
        # only names the wrong paper: nothing verified, so the paper that fits is the answer
        "The paper that collects thermal images of animals at night is \u201cGradient Gardening\u201d [{wrong}].",
        # says something true of the wrong paper: that sentence answers another question and goes
        "Gradient gardening waters each weight with a small gradient step and prunes those that wilt [{wrong}].",
    ],
)
def test_a_which_paper_answer_names_the_paper_both_fit_measures_pick_not_the_models_wrong_one(
    fake_index, reply: str
) -> None:  # type: ignore[no-untyped-def]
    question = "Which paper collects thermal images of animals at night and trains a detector that runs on a laptop CPU?"
    probe = Answerer(CONFIG, index=fake_index, generator=FakeGenerator("unused"))
    numbers = _numbered(probe, question)
    owls = "Tiny Owls: Nocturnal Object Detection with Thermal Cameras"
    wrong = next(n for title, n in numbers.items() if title != owls)
    gen = FakeGenerator(reply.format(wrong=wrong))
    ans = Answerer(CONFIG, index=fake_index, generator=gen).ask(question)
    assert not ans.refused
    assert [c.title for c in ans.citations] == [owls]
    assert ans.text.startswith(f"The paper is \u201c{owls}\u201d: \u201cWe collect OwlSet") or ans.text.startswith(
        f"\u201c{owls}\u201d reports: \u201cWe collect OwlSet"
    )
    assert "ardening" not in ans.text


def test_list_questions_get_every_relevant_paper_named_without_the_model(fake_index) -> None:  # type: ignore[no-untyped-def]
    gen = FakeGenerator("unused")
    ans = Answerer({**CONFIG, "list_min_relevance": -1.0, "list_margin": 1.0}, index=fake_index, generator=gen).ask(
        "Which papers in the collection study neural networks?"
    )
    assert gen.calls == [] and ans.form == "list" and not ans.refused
    assert len(ans.sentences) == len(ans.citations) >= 3
    for sentence, citation in zip(ans.sentences, ans.citations, strict=True):
        assert sentence.citations == (citation.n,) and f"\u201c{citation.title}\u201d" in sentence.text
        assert (
            citation.evidence[0] in fake_index.papers[citation.paper_id].abstract
        )  # a quote, verified by construction


def test_noun_citation_holes_never_reach_the_answer(fake_index) -> None:  # type: ignore[no-untyped-def]
    reply = "[1] collects 12,000 thermal images of animals at night."
    ans = Answerer(CONFIG, index=fake_index, generator=FakeGenerator(reply)).ask("How big is OwlSet?")
    assert not ans.refused
    assert ans.text == "Tiny Owls collects 12,000 thermal images of animals at night [1]."


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("Collects thermal images of owls.", "Collects thermal images of owls."),  # not a verb it knows
        ("Trains detectors on thermal images.", "Tiny Owls trains detectors on thermal images."),
        ("Critically reviews night-time detectors.", "Tiny Owls critically reviews night-time detectors."),
        ("Has been used to count owls.", "Tiny Owls has been used to count owls."),
        ("Studies show that owls see heat.", "Studies show that owls see heat."),  # a plural subject
        ("The detector trains on heat.", "The detector trains on heat."),
        ("Proposes", "Tiny Owls proposes"),
    ],
)
def test_a_sentence_that_lost_its_subject_gets_the_paper_as_subject(body: str, named: str) -> None:
    assert name_lost_subject(body, "Tiny Owls: Nocturnal Object Detection with Thermal Cameras") == named


def test_bullets_under_a_title_heading_are_shown_with_their_paper_as_subject(fake_index) -> None:  # type: ignore[no-untyped-def]
    # The model writes the paper's title as a heading and subjectless bullets under it, with no
    # marker: the verifier attaches the paper that says it, and the system names it as the subject.
    reply = "Tiny Owls\n- Trains a detector that runs at 30 frames per second on a laptop CPU.\n- Reaches 61.3 mAP on OwlSet."
    ans = Answerer(CONFIG, index=fake_index, generator=FakeGenerator(reply)).ask("How fast is the Tiny Owl detector?")
    assert not ans.refused
    shown = [s.shown for s in ans.sentences if s.supported]
    assert "Tiny Owls trains a detector that runs at 30 frames per second on a laptop CPU [1]." in shown
    assert "Tiny Owls reaches 61.3 mAP on OwlSet [1]." in shown


def test_compare_answers_name_each_compared_paper(fake_index) -> None:  # type: ignore[no-untyped-def]
    question = "How do quantum widgets and gradient gardening differ in what they remove?"
    reply = ["Nothing yet."]
    answerer = Answerer(CONFIG, index=fake_index, generator=FakeGenerator(lambda messages: reply[0]))
    first = answerer.ask(question)
    garden = next(s.n for s in first.sources if s.title.startswith("Gradient Gardening"))
    widgets = next(s.n for s in first.sources if s.title.startswith("Quantum Widgets"))
    said = "Gradient gardening removes 90% of the weights of ResNet-50 on ImageNet"
    reply[0] = f"{said} [{garden}]. {said} [{widgets}]."  # the second gives one paper's detail to the other
    ans = answerer.ask(question)
    assert ans.form == "compare" and not ans.refused
    top2 = {s.paper_id for s in ans.sources[:2]}
    assert top2 <= {c.paper_id for c in ans.citations}  # both compared papers are named and cited
    assert [c.n for c in ans.citations] == list(range(1, len(ans.citations) + 1))
    for sentence in ans.sentences:
        assert all(1 <= n <= len(ans.citations) for n in sentence.citations)
    # One line per compared paper, quoting its abstract, then the model's supported sentence about
    # one paper; the misattributed one is not shown.
    quotes, rest = ans.sentences[:2], ans.sentences[2:]
    assert all(s.verdict == "quote" for s in quotes) and len(rest) == 1
    by_n = {c.n: c for c in ans.citations}
    assert rest[0].text.startswith("Gradient gardening") and by_n[rest[0].citations[0]].title.startswith("Gradient")
    for sentence in quotes:
        citation = by_n[sentence.citations[0]]
        abstract = fake_index.papers[citation.paper_id].abstract
        assert sentence.text.startswith(f"\u201c{citation.title}\u201d: ")
        assert all(quote in abstract for quote in citation.evidence) and len(citation.evidence) <= 3


def test_list_topic_and_compare_aspect() -> None:
    assert list_topic("Which papers in the collection study pruning?") == "study pruning?"
    assert list_topic("What works address night-time detection?") == "address night-time detection?"
    assert list_topic("List the papers on owls") == "on owls"
    q = "How do IBN-Net and ByteCover differ in what their features are invariant to?"
    assert compare_aspect(q) == "what their features are invariant to?"
    assert compare_aspect("How do A and B differ?") == "How do A and B differ?"  # no aspect named


def test_a_comparison_is_answered_by_its_quotes_when_the_model_text_fails() -> None:
    policy = RefusalPolicy()
    failed = policy.after_verification(
        "How do A and B differ?", [], set(), {}, said_cannot_answer=False, raw_text="Nothing useful."
    )
    assert failed.refused and failed.code == NOTHING_VERIFIED
    assert not policy.for_comparison(failed, compared=2).refused
    assert policy.for_comparison(failed, compared=1) == failed  # one paper is no comparison
    named = policy.for_list([], ["owl"])
    assert policy.for_comparison(named, compared=2) == named  # other reasons stand


def test_list_questions_about_an_absent_topic_are_refused(fake_index) -> None:  # type: ignore[no-untyped-def]
    a = Answerer(
        {**CONFIG, "list_min_relevance": -1.0, "list_margin": 1.0}, index=fake_index, generator=FakeGenerator("x")
    )
    ans = a.ask("Which papers in the collection forecast hurricanes with barometric satellites?")
    assert ans.refused and ans.refusal_code == NO_RELEVANT_PAPER and ans.form == "list"
    assert not a.ask("Which papers in the collection detect owls with thermal cameras?").refused


def test_a_repeated_sentence_is_said_once(fake_index) -> None:  # type: ignore[no-untyped-def]
    said = "OwlSet collects 12,000 thermal images of animals at night [1]."
    reply = f"{said} {said} Tiny Owls collects 12,000 thermal images of animals at night [1]."
    ans = Answerer(CONFIG, index=fake_index, generator=FakeGenerator(reply)).ask("How big is OwlSet?")
    assert not ans.refused and len(ans.sentences) == 1
    assert [c.n for c in ans.citations] == [1]


def test_by_marker_after_a_named_paper_leaves_no_hole(fake_index) -> None:  # type: ignore[no-untyped-def]
    reply = 'The paper "Tiny Owls" by [1] collects 12,000 thermal images of animals at night.'
    ans = Answerer(CONFIG, index=fake_index, generator=FakeGenerator(reply)).ask("How big is OwlSet?")
    assert not ans.refused
    assert " by " not in ans.text and "[1]" in ans.text and "12,000 thermal images" in ans.text


def test_a_sentence_cut_by_the_token_limit_is_not_shown(fake_index) -> None:  # type: ignore[no-untyped-def]
    said = "OwlSet collects 12,000 thermal images of animals at night [1]."
    reply = f"{said} It also records the calls of owls on three continents and"
    limit = len(reply.split())  # the model stops at the limit, in the middle of its second sentence
    ans = Answerer({**CONFIG, "max_answer_tokens": limit}, index=fake_index, generator=FakeGenerator(reply)).ask(
        "How big is OwlSet?"
    )
    assert ans.text == said
    shorter = Answerer({**CONFIG, "max_answer_tokens": limit + 5}, index=fake_index, generator=FakeGenerator(said))
    assert shorter.ask("How big is OwlSet?").text == said  # a finished answer under the limit is untouched


def test_the_sentence_shown_as_support_holds_the_claims_number() -> None:
    calves = Source(
        1,
        "calves",
        "8-Calves Image dataset",
        (
            EvidenceSentence(0, 0, "We introduce the 8-Calves dataset, a benchmark for object detection.", 1.0),
            EvidenceSentence(0, 1, "The dataset comprises a 1-hour video (67,760 frames) of eight calves.", 1.0),
            EvidenceSentence(0, 2, "The link to the dataset is https://example.org/8-calves.", 1.0),
        ),
        1.0,
    )

    class LinkLover(HashEmbedder):
        """Places the claim closest to the link sentence, as MiniLM does with the real abstract."""

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            return np.array([[1.0, 0.0] if "link" in t or "contains" in t else [0.0, 1.0] for t in texts], np.float32)

    v = Verifier(CachedEmbedder(LinkLover(dimension=2))).verify(
        "The 8-Calves dataset contains 67,760 frames [1].", [calves]
    )
    assert v.sentences[0].supported
    assert v.citations[0].evidence == ("The dataset comprises a 1-hour video (67,760 frames) of eight calves.",)


def test_compare_quotes_prefer_what_the_paper_does_to_the_fields_background() -> None:
    from rag.answer import compare_quotes

    texts = [
        "Few-shot classification aims to recognise new categories from few samples.",
        "Most methods learn a metric.",
        "We attend over base data points to enrich the support set.",
        "Results improve on miniImageNet.",
    ]
    assert compare_quotes(texts, np.array([0.62, 0.40, 0.58, 0.30])) == [texts[0], texts[2]]
    assert compare_quotes(texts, np.array([0.62, 0.40, 0.58, 0.55]), k=1) == [texts[2]]


def test_a_which_paper_answer_names_the_paper_by_its_whole_title() -> None:
    titles = {2: "Less is More: Parameter-Free Text Classification with Gzip"}
    assert name_noun_citations("Yes. This paper is [2].", titles) == "Yes. This paper is Less is More [2]."
    assert (
        name_noun_citations("Yes. This paper is [2].", titles, whole=True)
        == "Yes. This paper is \u201cLess is More: Parameter-Free Text Classification with Gzip\u201d [2]."
    )


def test_a_list_quotes_what_a_paper_does_over_its_background() -> None:
    from rag.answer import list_quote
    from rag.types import EvidenceSentence

    background = EvidenceSentence(0, 10, "Prototype networks are known to be interpretable.", 0.62)
    contribution = EvidenceSentence(11, 20, "We propose ST-ProtoPNet, with support prototypes.", 0.55)
    assert list_quote([background, contribution]) == contribution
    assert list_quote([replace(background, score=0.9), contribution]).score == 0.9  # far closer still wins
    assert list_quote([]) is None
    # Background before the authors' first own sentence is not quoted while an own sentence was selected.
    assert list_quote([replace(background, score=0.9), contribution], own_from=11) == contribution
    assert list_quote([replace(background, score=0.9)], own_from=11).score == 0.9  # nothing else selected


def test_the_background_before_the_authors_first_own_sentence_is_not_quoted() -> None:
    from rag.answer import compare_quotes, own_work_start

    abstract = (
        "Deep networks have achieved remarkable performance in many domains. "
        "Pruning removes their redundant weights. "
        "In this work, we view pruning as a spectrum-preserving process. "
        "Results show that sparse networks keep their accuracy."
    )
    assert abstract[own_work_start(abstract) :].startswith("In this work")
    assert own_work_start("Pruning removes weights. Sparse networks keep accuracy.") == 0  # no own sentence: all count
    # a survey or a report says "this article", not "we"
    survey = "PFNs were recently proposed as a new paradigm. This article establishes a theoretical foundation for PFNs."
    assert survey[own_work_start(survey) :].startswith("This article")
    texts = abstract.replace(". ", ".|").split("|")
    scores = np.array([0.70, 0.65, 0.50, 0.20])
    assert compare_quotes(texts, scores) == texts[:2]  # the field's background, closest to the aspect
    assert compare_quotes(texts, scores, own_from=2) == texts[2:]
    assert compare_quotes(texts, scores, k=3, own_from=3) == [texts[0], texts[1], texts[3]]  # too few own sentences


def compared_ids(papers: list[Paper], order: list[str], question: str) -> list[str]:
    """The ids ``Answerer.compared`` picks from these papers, retrieved in ``order``."""
    from types import SimpleNamespace

    by_id = {p.paper_id: p for p in papers}
    sources = [Source(i + 1, pid, by_id[pid].title, (), 1.0) for i, pid in enumerate(order)]
    stub = SimpleNamespace(index=SimpleNamespace(papers=by_id))
    return [s.paper_id for s in Answerer.compared(stub, question, sources)]  # type: ignore[arg-type]


def test_a_compared_paper_named_by_its_method_comes_before_a_loose_title_match() -> None:
    papers = [
        Paper("causal", "Causal Analysis for Robust Interpretability of Neural Networks", "We use causal graphs."),
        Paper("ast", "Evaluating and Explaining Large Language Models for Code", "We propose ASTxplainer, an explainer."),
        Paper("explain", "Unsupervised Learning of Neural Networks to Explain Neural Networks", "An explainer network."),
    ]
    question = (
        "How do 'Causal Analysis for Robust Interpretability of Neural Networks' and ASTxplainer differ in how they "
        "explain the predictions of a neural network?"
    )
    # the third paper shares most of its title's words with the question, but names nothing it asks about
    assert compared_ids(papers, ["causal", "explain", "ast"], question) == ["causal", "ast"]


def test_a_whole_title_in_the_question_comes_before_a_short_name_inside_it() -> None:
    papers = [
        Paper("bliss", "Label Noise: Ignorance Is Bliss", "We study label noise."),
        Paper("elr", "Early-Learning Regularization Prevents Memorization of Noisy Labels", "We regularize."),
        Paper("massive", "Deep Learning is Robust to Massive Label Noise", "Networks generalize."),
    ]
    question = (
        "How do 'Early-Learning Regularization Prevents Memorization of Noisy Labels' and 'Deep Learning is Robust "
        "to Massive Label Noise' differ in how they deal with noisy training labels?"
    )
    # "Label Noise", the first paper's short name, is written in the question only inside another title
    assert compared_ids(papers, ["bliss", "elr", "massive"], question) == ["elr", "massive"]


def test_a_sentence_that_only_says_where_the_code_is_is_never_quoted() -> None:
    from rag.answer import compare_quotes, list_quote, only_availability
    from rag.types import EvidenceSentence

    code = "Our code and models are available at https://github.com/szagoruyko/wide-residual-networks"
    assert only_availability(code)
    assert only_availability("The code and models are publicly available online.")
    assert not only_availability("For others, such as Polish, few models are available.")  # says something
    assert not only_availability("We propose a new code generation model.")  # no "where"
    assert not only_availability(
        "The re-labeled ImageNet training set, pre-trained weights, and the source code are available at "
        "https://github.com/naver-ai/relabel_imagenet."
    )
    texts = ["We widen residual networks.", "WRNs beat thin deep ones on CIFAR.", code]
    assert compare_quotes(texts, np.array([0.3, 0.2, 0.9])) == texts[:2]
    quoted = EvidenceSentence(0, 10, code, 0.9)
    own = EvidenceSentence(11, 20, "We widen residual networks.", 0.3)
    assert list_quote([quoted, own]) == own


def test_our_of_people_at_large_is_not_the_authors_own_sentence() -> None:
    from rag.answer import own_work_start

    abstract = (
        "Deep Neural Networks have created a paradigm shift in our ability to comprehend raw data. "
        "A practical concern is protecting the models. We propose BlackMarks, a watermarking framework."
    )
    assert abstract[own_work_start(abstract) :].startswith("We propose BlackMarks")


from __future__ import annotations

from dataclasses import replace

import pytest

from rag.evidence import CachedEmbedder
from rag.models import HashEmbedder
from rag.types import EvidenceSentence, Source
from rag.verify import Verifier, is_refusal, names_in, number_contexts, numbers_in


def source(n: int, title: str, *sentences: str) -> Source:
    return Source(
        n=n,
        paper_id=f"p{n}",
        title=title,
        sentences=tuple(EvidenceSentence(0, len(s), s, 1.0) for s in sentences),
        retrieval_score=1.0 / n,
        files=(f"f{n}.txt",),
    )


SOURCES = [
    source(
        1,
        "Deep Interest Network for Click-Through Rate Prediction",
        "DIN adaptively learns the representation of user interests from historical behaviors.",
        "Experiments on two public datasets and an Alibaba production dataset show that DIN outperforms baselines.",
    ),
    source(
        2,
        "Data Filtering Networks",
        "We study learning a data filtering network (DFN) to filter a large uncurated dataset.",
        "We release a new 2 billion example dataset DFN-2B.",
    ),
    source(
        3,
        "BM-6B: Billion-scale Image-Text Pairs",
        "BM-6B contains over 6 billion image-text pairs collected from the web.",
    ),
]


@pytest.fixture
def verifier() -> Verifier:
    return Verifier(CachedEmbedder(HashEmbedder(dimension=256)), min_similarity=0.6, min_overlap=0.6)


def test_supported_sentence_keeps_its_citation(verifier: Verifier) -> None:
    v = verifier.verify("DIN learns the representation of user interests from historical behaviors [1].", SOURCES)
    assert v.text == "DIN learns the representation of user interests from historical behaviors [1]."
    assert v.sentences[0].supported and not v.sentences[0].repaired
    assert v.citations[0].paper_id == "p1" and v.citations[0].prompt_n == 1
    assert "historical behaviors" in v.citations[0].evidence[0]


def test_wrong_citation_is_repaired(verifier: Verifier) -> None:
    v = verifier.verify("A data filtering network filters a large uncurated dataset [1].", SOURCES)
    s = v.sentences[0]
    assert s.supported and s.repaired and s.citations == (1,)
    assert v.citations[0].paper_id == "p2"  # renumbered: the only cited paper is [1]
    assert any("the evidence is in [2]" in issue for issue in s.issues)


def test_missing_citation_is_attached(verifier: Verifier) -> None:
    v = verifier.verify("BM-6B contains over 6 billion image-text pairs collected from the web.", SOURCES)
    assert v.sentences[0].citations == (1,) and v.citations[0].paper_id == "p3"


def test_invented_number_is_unsupported(verifier: Verifier) -> None:
    v = verifier.verify("DIN improved AUC by 0.0143 on public datasets [1].", SOURCES)
    s = v.sentences[0]
    assert not s.supported and s.citations == ()
    assert v.text.endswith("[?].")
    assert any("0.0143" in issue for issue in s.issues)


def test_name_absent_from_evidence_is_unsupported(verifier: Verifier) -> None:
    # The number is in [3], but WIT is not: the classic confident invention.
    v = verifier.verify("WIT contains over 6 billion image-text pairs collected from the web [3].", SOURCES)
    assert not v.sentences[0].supported
    assert any("wit" in issue for issue in v.sentences[0].issues)


def test_number_in_another_context_is_unsupported(verifier: Verifier) -> None:
    v = verifier.verify("The data filtering network has 2 billion parameters [2].", SOURCES)
    assert not v.sentences[0].supported
    assert any("does not contain 2" in issue for issue in v.sentences[0].issues)


def test_out_of_range_citation_is_dropped_and_counted(verifier: Verifier) -> None:
    v = verifier.verify("DIN learns the representation of user interests from historical behaviors [7][1].", SOURCES)
    assert v.invalid_citations == 1
    assert v.sentences[0].citations == (1,)
    assert all(c.prompt_n in (1, 2, 3) for c in v.citations)


def test_renumbering_follows_first_use(verifier: Verifier) -> None:
    raw = (
        "BM-6B contains over 6 billion image-text pairs collected from the web [3]. "
        "DIN learns the representation of user interests from historical behaviors [1]."
    )
    v = verifier.verify(raw, SOURCES)
    assert [c.n for c in v.citations] == [1, 2]
    assert [c.paper_id for c in v.citations] == ["p3", "p1"]
    assert v.text.count("[1]") == 1 and v.text.count("[2]") == 1


def test_strict_drops_unsupported_sentences(verifier: Verifier) -> None:
    raw = "DIN learns the representation of user interests from historical behaviors [1]. DIN was invented on Mars in 1850 [1]."
    loose = verifier.verify(raw, SOURCES)
    strict = verifier.verify(raw, SOURCES, strict=True)
    assert [s.supported for s in loose.sentences] == [True, False]
    assert len(strict.sentences) == 1 and "Mars" not in strict.text
    assert strict.dropped and "Mars" in strict.dropped[0]


def test_claim_spanning_two_cited_sources(verifier: Verifier) -> None:
    raw = "DIN learns user interests from historical behaviors while DFN-2B has 2 billion examples [1][2]."
    v = verifier.verify(raw, SOURCES)
    assert v.sentences[0].supported and v.sentences[0].citations == (1, 2)


def test_refusal_sentence_is_recognised(verifier: Verifier) -> None:
    v = verifier.verify("The sources do not answer this question.", SOURCES)
    assert v.said_cannot_answer and v.sentences == ()


@pytest.mark.parametrize(
    "sentence",
    [
        "The sources do not answer this question.",
        "The provided sources don't mention the GPU.",
        "This is not mentioned in the abstracts.",
        "I cannot answer that.",
    ],
)
def test_refusal_wordings(sentence: str) -> None:
    assert is_refusal(sentence)


def test_claims_are_not_refusals() -> None:
    assert not is_refusal("DIN outperforms baselines on two public datasets.")


def test_extractors() -> None:
    assert numbers_in("1,000 images, up to 15% and 0.0143 AUC, 3x faster") == {1000.0, 15.0, 0.0143, 3.0}
    assert names_in("WIT has 6 billion pairs for CLIP, ResNet-50 and Google.") == {"wit", "clip", "resnet50", "google"}
    assert names_in("The method works well.") == set()
    assert number_contexts("It has 2 billion parameters.") == {2.0: {"paramet"}}


LATEX_SOURCES = [
    source(
        1,
        "FFCV: Accelerating Training by Removing Data Bottlenecks",
        "For example, we are able to train an ImageNet ResNet-50 model to 75\\% in only 20 mins on a single machine.",
    ),
    source(
        2,
        "SSD: Single Shot MultiBox Detector",
        "For 300times 300 input, SSD achieves 72.1% mAP on VOC2007 test.",
        "SpineNet-190 achieves 52.5% AP with a MaskR-CNN detector on COCO.",
    ),
]


@pytest.mark.parametrize(
    "claim",
    [
        # "75\%" is 75%, "mins" are minutes, and the sentence holding 75 says most of the claim
        # although it leaves "accuracy" implicit.
        "Training an ImageNet ResNet-50 to 75% accuracy on a single machine takes 20 minutes [1].",
        "SSD reaches 72.1% mAP on VOC2007 test with a 300x300 input [2].",  # LaTeX \times left as "times"
        "SSD reaches 72.1% mAP on VOC2007 test with a 300×300 input [2].",
    ],
)
def test_latex_leftovers_and_short_units_do_not_hide_support(verifier: Verifier, claim: str) -> None:
    assert verifier.verify(claim, LATEX_SOURCES).sentences[0].supported


def test_camel_case_parts_back_a_name() -> None:
    from rag.verify import evidence_tokens, plain

    assert {"mask", "maskrcnn", "cnn"} <= evidence_tokens("with a MaskR-CNN detector")
    assert plain("75\\% at 300\\times 300") == "75% at 300x300"


def test_a_number_from_a_sentence_about_something_else_stays_unsupported(verifier: Verifier) -> None:
    # 20 is in [1], but neither its context nor most of the claim is in the sentence holding it.
    v = verifier.verify("The FFCV data loader uses 20 worker processes per GPU [1].", LATEX_SOURCES)
    assert not v.sentences[0].supported


def test_numbers_written_with_their_scale_are_numbers_not_names() -> None:
    assert numbers_in("models of 14M to 1.4B parameters, 3x faster, 100k steps, v1.2.3") == {14.0, 1.4, 3.0, 100.0}
    assert names_in("The 14M and 1.4B STU-Net models train 3x faster") == {"stunet"}


def test_accented_names_match_their_latex_and_plain_spellings(verifier: Verifier) -> None:
    poincare = source(
        1, "Poincar\\'e ResNet", "We introduce Poincar\\'e midpoint batch normalization instead of Fr\\'echet means."
    )
    v = verifier.verify("Poincaré ResNet replaces Fréchet means with midpoint batch normalization [1].", [poincare])
    assert v.sentences[0].supported, v.sentences[0].issues


def test_a_times_factor_stripped_of_its_latex_is_still_the_factor(verifier: Verifier) -> None:
    sparse = source(1, "Sparse R-CNN", "Sparse R-CNN achieves 45.0 AP in standard 3times training schedule.")
    v = verifier.verify("Sparse R-CNN reaches 45.0 AP under the 3x training schedule [1].", [sparse])
    assert v.sentences[0].supported, v.sentences[0].issues


def test_a_true_number_of_the_wrong_thing_does_not_answer_how_many(verifier: Verifier) -> None:
    s2s = source(
        1,
        "S2SNet: A Pretrained Neural Network for Superconductivity Discovery",
        "More than 16 Nobel Laureates have been awarded for their contribution to superconductivity research.",
        "A new dataset, S2S, containing both crystal structures and critical temperature, is built.",
    )
    question = "How many crystal structures does the S2S dataset contain?"
    v = verifier.verify("The S2S dataset contains more than 16 Nobel Laureates [1].", [s2s], question=question)
    assert not v.sentences[0].supported and "not the crystal structures" in v.sentences[0].issues[-1]
    # once one sentence gives the count, a true number of something else is just another fact
    both = verifier.verify(
        "The S2S dataset contains 3,000 crystal structures [1]. More than 16 Nobel Laureates were awarded [1].",
        [replace(s2s, sentences=(*s2s.sentences, EvidenceSentence(0, 1, "S2S holds 3,000 crystal structures.", 1.0)))],
        question=question,
    )
    assert [s.supported for s in both.sentences] == [True, True], [s.issues for s in both.sentences]
    # the counted thing itself passes, and so does a question that counts nothing
    calves = source(1, "8-Calves", "The 8-Calves dataset contains 67,760 frames of eight calves.")
    asked = "How many frames does the 8-Calves dataset contain?"
    assert (
        verifier.verify("The 8-Calves dataset contains 67,760 frames [1].", [calves], question=asked)
        .sentences[0]
        .supported
    )
    ok = verifier.verify(
        "More than 16 Nobel Laureates were awarded for superconductivity research [1].",
        [s2s],
        question="Who won prizes?",
    )
    assert ok.sentences[0].supported


def test_an_answer_with_no_count_does_not_answer_how_many(verifier: Verifier) -> None:
    s2s = source(
        1,
        "S2SNet: A Pretrained Neural Network for Superconductivity Discovery",
        "A new dataset, S2S, containing both crystal structures and critical temperature, is built.",
    )
    question = "How many crystal structures does the S2S dataset contain?"
    v = verifier.verify(
        "The S2S dataset contains both crystal structures and critical temperature [1].", [s2s], question=question
    )
    assert not v.sentences[0].supported and "does not say how many" in v.sentences[0].issues[-1]
    # a count in words is a count
    layers = source(1, "Shallow nets", "We show that a network with two hidden layers suffices.")
    w = verifier.verify(
        "A network with two hidden layers suffices [1].", [layers], question="How many hidden layers are enough?"
    )
    assert w.sentences[0].supported, w.sentences[0].issues


def test_the_count_check_leaves_the_other_parts_of_a_question_alone(verifier: Verifier) -> None:
    urdu = source(
        1, "Urdu summaries", "The adapted urT5 model is 44.78% smaller than mT5.", "The dataset has 76.5k pairs."
    )
    question = "How many article-summary pairs does the dataset hold, and how much smaller is urT5 than mT5?"
    v = verifier.verify("The adapted urT5 model is 44.78% smaller than mT5 [1].", [urdu], question=question)
    assert v.sentences[0].supported, v.sentences[0].issues


def test_a_name_with_a_describing_suffix_is_the_name(verifier: Verifier) -> None:
    # "SimCLRv2-based", "SegNet-like": the suffix is the writer's word; the paper says "SimCLRv2".
    assert names_in("The SimCLRv2-based procedure trains a SegNet-like autoencoder.") == {"simclrv2", "segnet"}
    sources = [
        source(
            1,
            "Big Self-Supervised Models are Strong Semi-Supervised Learners",
            "The proposed semi-supervised learning algorithm, SimCLRv2, achieves 73.9% ImageNet top-1 accuracy "
            "with a ResNet-50 using only 1% of the labels.",
        )
    ]
    claim = "The SimCLRv2-based procedure reaches 73.9% ImageNet top-1 accuracy with a ResNet-50 using 1% of the labels [1]."
    assert verifier.verify(claim, sources).sentences[0].supported
    # the head of the name must still be there
    other = "The MoCo-based procedure reaches 73.9% ImageNet top-1 accuracy with a ResNet-50 using 1% of the labels [1]."
    assert not verifier.verify(other, sources).sentences[0].supported


def test_a_number_glued_to_the_word_before_it_in_the_abstract_is_still_stated(verifier: Verifier) -> None:
    from rag.verify import evidence_numbers

    assert 1.5 in evidence_numbers("models (22M to1.5B) demonstrate") and 1.5 not in numbers_in("to1.5B")
    sources = [source(1, "Emergent Mixture-of-Experts", "Experiments (we tune 1785 models) on models (22M to1.5B) show gains.")]
    v = verifier.verify("They tune 1785 models from 22M to 1.5B [1].", sources)
    assert v.sentences[0].supported
    assert not verifier.verify("They tune 1785 models from 22M to 2.5B [1].", sources).sentences[0].supported


def test_a_number_with_its_scale_is_the_number_written_out(verifier: Verifier) -> None:
    from rag.verify import evidence_numbers, scaled_values

    assert {114.0, 114000.0} <= evidence_numbers("a dataset of 114k volumes")
    assert scaled_values("1.5 billion parameters and 22M images") == {1.5: 1.5e9, 22.0: 22e6}
    sources = [source(1, "An OpenMind for 3D medical vision", "We release a dataset of 114k 3D brain MRI volumes.")]
    assert verifier.verify("The dataset holds 114,000 3D brain MRI volumes [1].", sources).sentences[0].supported
    assert verifier.verify("The dataset holds 114k 3D brain MRI volumes [1].", sources).sentences[0].supported
    assert not verifier.verify("The dataset holds 140,000 3D brain MRI volumes [1].", sources).sentences[0].supported
    written_out = [source(1, "An OpenMind for 3D medical vision", "We release a dataset of 114,000 3D brain MRI volumes.")]
    assert verifier.verify("The dataset holds 114k 3D brain MRI volumes [1].", written_out).sentences[0].supported
    assert not verifier.verify("The dataset holds 114M 3D brain MRI volumes [1].", written_out).sentences[0].supported


def test_british_and_american_spellings_are_one_name() -> None:
    from rag.verify import evidence_tokens, name_found

    tokens = evidence_tokens("It is 8x faster than the Bayesian optimization WeakNAS approach.")
    assert all(name_found(n, tokens) for n in names_in("Is it faster than the Bayesian-optimisation WeakNAS search?"))
    assert not all(name_found(n, tokens) for n in names_in("Is it faster than the Bayesian-sampling WeakNAS search?"))


NORB = (
    "Our deep hierarchical architectures achieve the best published results on benchmarks for object "
    "classification (NORB, CIFAR10) and handwritten digit recognition (MNIST), with error rates of 2.53%, "
    "19.51%, 0.35%, respectively."
)


@pytest.mark.parametrize(
    ("sentence", "pairs"),
    [
        (NORB, {2.53: "NORB", 19.51: "CIFAR10", 0.35: "MNIST"}),
        # named items in one list of their own (the sentence names other things too)
        (
            "We find that 99.9% and 99.4% of the poses misclassified by Inception-v3 also transfer to the "
            "AlexNet and ResNet-50 image classifiers trained on the same ImageNet dataset, respectively.",
            {99.9: "AlexNet", 99.4: "ResNet-50"},
        ),
        (
            "The proposed approach achieves an accuracy of 96.71% and 95.35% in the UCI HAR and Motion-Sense "
            "datasets respectively.",
            {96.71: "UCI HAR", 95.35: "Motion-Sense"},
        ),
        # numbers that are not one plain list, or items that cannot be told apart: no pairing
        (
            "The top-1 accuracy on ImageNet-1k of MobileNetV3-large and ResNet50-D is improved from 75.2% to 79% "
            "and 79.1% to 83%, respectively.",
            {},
        ),
        ("Test error rates on MNIST drop to 2.42%, 0.97% and 0.48% after 1, 3 and 17 epochs, respectively.", {}),
        ("We reduce the parameters to 50% and 25% respectively, with a 0.2% accuracy drop.", {}),
        ("DIN improves the AUC by 2.1% on Amazon.", {}),
    ],
)
def test_respectively_pairs_each_number_with_its_item(sentence: str, pairs: dict[float, str]) -> None:
    from rag.verify import respective_numbers

    assert {v: r.item for v, r in respective_numbers(sentence).items()} == pairs


def test_a_number_given_to_another_item_of_a_respectively_list_is_unsupported(verifier: Verifier) -> None:
    sources = [source(1, "High-Performance Neural Networks for Visual Object Classification", NORB)]
    wrong = verifier.verify("The network's error rate on CIFAR10 is 2.53% [1].", sources).sentences[0]
    assert not wrong.supported and any("gives 2.53 to NORB" in i for i in wrong.issues)
    assert verifier.verify("The network's error rate on CIFAR10 is 19.51% [1].", sources).sentences[0].supported
    assert verifier.verify("The error rates are 2.53% on NORB and 19.51% on CIFAR10 [1].", sources).sentences[0].supported
    # a number the claim gives to no item of the list is left to the other checks
    assert verifier.verify("The architectures reach error rates as low as 0.35% [1].", sources).sentences[0].supported


def test_the_best_fit_of_a_which_paper_question_is_the_source_both_measures_pick(verifier: Verifier) -> None:
    floor = source(1, "Layout Graphs for Floor Plan Generation", "We generate floor plans from layout graphs.")
    hyper = source(
        2,
        "HyperZ Operator Networks",
        "A small network takes pixel coordinates and generates large input-dependent filters for a second network.",
    )
    question = "Which paper has a small network that takes pixel coordinates and generates large filters?"
    assert verifier.best_fit(question, [floor, hyper]) == 2
    assert verifier.best_fit(question, [hyper]) is None  # one source: nothing to choose between
    # the same words in two sources: coverage ties, so no source is picked
    twin = source(3, "HyperZ Operator Networks Again", hyper.sentences[0].text)
    assert verifier.best_fit(question, [floor, hyper, twin]) is None
    # a source that holds most of the words but is not the closest in meaning is no safe pick either
    terse = source(2, "HyperZ Operator Networks", "A small network maps pixel coordinates to large filters.")
    wordy = source(4, "Owls", "small network takes pixel coordinates generates large filters " + "owls hoot " * 40)
    assert verifier.best_fit(question, [terse, wordy]) is None


def test_a_which_paper_answer_that_only_names_a_paper_must_name_the_one_the_question_describes(
    verifier: Verifier,
) -> None:
    sources = [
        source(1, "Layout Graphs for Floor Plan Generation", "We generate floor plans from layout graphs with skip connections."),
        source(
            2,
            "HyperZ Operator Networks",
            "A small network takes pixel coordinates and generates large input-dependent filters for a second network.",
        ),
    ]
    question = "Which paper has a small network that takes pixel coordinates and generates large filters?"
    claim = "The paper that has a small network that takes pixel coordinates and generates large filters is “{}” [{}]."
    wrong = verifier.verify(claim.format(sources[0].title, 1), sources, question=question, form="which-paper")
    assert not wrong.sentences[0].supported
    assert "[1] is named, but another source fits the question better" in wrong.sentences[0].issues
    right = verifier.verify(claim.format(sources[1].title, 2), sources, question=question, form="which-paper")
    assert right.sentences[0].supported
    # a claim that says what the paper does is checked on what it says, not by this rule
    said = "Layout Graphs for Floor Plan Generation uses skip connections [1]."
    assert verifier.verify(said, sources, question=question, form="which-paper").sentences[0].supported


def test_a_name_written_as_part_of_a_longer_hyphenated_name_is_found() -> None:
    from rag.verify import evidence_tokens, name_found

    tokens = evidence_tokens("LG-ANNA-Embedding technical report. Built upon Mistral-7B.")
    assert name_found("lganna", tokens) and name_found("annaembedding", tokens)
    assert not name_found("lgembedding", tokens)  # parts that are not next to each other


def test_only_describes_the_name_before_it() -> None:
    # "CT-only": the paper says "Task 1 (CT)"; "only" is the writer's word.
    assert names_in("The ensemble reaches 90.13 on the CT-only task.") == {"ct"}


def test_a_hyphenated_name_is_found_when_its_parts_are() -> None:
    from rag.verify import compound_found, evidence_tokens, missing_names_of

    tokens = evidence_tokens("Pre-training on ImageNet helps; we fine-tune a ResNet with 101 layers.")
    assert compound_found("ImageNet-pretrained", tokens)
    assert missing_names_of("An ImageNet-pretrained ResNet is fine-tuned.", tokens) == []
    # a version or size must be written as one name
    assert not compound_found("ResNet-101", tokens)
    assert missing_names_of("A ResNet-101 is fine-tuned.", tokens) == ["ResNet-101"]
    assert missing_names_of("An ImageNet-distilled ResNet is fine-tuned.", tokens) == ["ImageNet-distilled"]

from __future__ import annotations

import pytest

from rag.citations import find_citations, parse_marker, render_sentence, renumber, split_answer, strip_citations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Claim [1].", [1]),
        ("Claim [1, 3].", [1, 3]),
        ("Claim [1-3].", [1, 2, 3]),
        ("Claim [1–2] and [Source 4].", [1, 2, 4]),
        ("Claim [2][1][2].", [2, 1]),
        ("Claim [7].", [7]),
        ("Claim [sources 1 and 3].", [1, 3]),
        ("No markers, [a] or [] here.", []),
    ],
)
def test_find_citations(text: str, expected: list[int]) -> None:
    assert find_citations(text) == expected


def test_absurd_range_is_not_expanded() -> None:
    assert parse_marker("1-9999") == [1, 9999]


def test_split_moves_stray_markers_to_their_sentence() -> None:
    parts = split_answer("ETs improve robustness [1]. They reach 15% gains. [2] Next one [3, 1].")
    assert parts == [("ETs improve robustness.", [1]), ("They reach 15% gains.", [2]), ("Next one.", [3, 1])]


def test_split_handles_lists_and_lines() -> None:
    parts = split_answer("[1] TabSim: a network\n[2] Writer identification\n- third item [3]\n[4]")
    assert parts == [("TabSim: a network", [1]), ("Writer identification", [2]), ("third item", [3, 4])]


def test_renumber_is_a_bijection_in_order_of_first_use() -> None:
    mapping = renumber([[3], [1, 3], [4], []])
    assert mapping == {3: 1, 1: 2, 4: 3}
    assert sorted(mapping.values()) == list(range(1, len(mapping) + 1))


def test_render_places_markers_before_final_punctuation() -> None:
    assert render_sentence("It works.", [1, 2]) == "It works [1][2]."
    assert render_sentence("It works", [1]) == "It works [1]"
    assert render_sentence("It works.", [], unsupported=True) == "It works [?]."
    assert strip_citations("It works [1][2] well [?].") == "It works well."


def test_a_quoted_title_with_a_question_mark_is_one_sentence() -> None:
    text = (
        "The paper is \u201cWords are all you need? Language as an approximation\u201d [1]. "
        "It is \"It's Morphin' Time! Combating Discrimination\" [2]. Is it? Yes [1]."
    )
    assert split_answer(text) == [
        ("The paper is \u201cWords are all you need? Language as an approximation\u201d.", [1]),
        ("It is \"It's Morphin' Time! Combating Discrimination\".", [2]),
        ("Is it?", []),
        ("Yes.", [1]),
    ]


def test_a_sentence_never_starts_with_a_lower_case_word() -> None:
    # An unquoted title's "?" ends no sentence: the verb after it is no fragment of its own.
    raw = (
        "Can We Scale Transformers to Predict Parameters of Diverse ImageNet Models? trains a single network "
        "that predicts parameters [1]. It also speeds up training [1]."
    )
    assert split_answer(raw) == [
        (
            "Can We Scale Transformers to Predict Parameters of Diverse ImageNet Models? trains a single network "
            "that predicts parameters.",
            [1],
        ),
        ("It also speeds up training.", [1]),
    ]
    assert [s for s, _ in split_answer("It works. Then it stops.")] == ["It works.", "Then it stops."]

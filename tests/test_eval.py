from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from eval import metrics as m
from eval.cli import evaluate, summary_table
from eval.gold import GoldError, load_gold
from rag.config import get_config
from rag.llm import FakeGenerator, Message
from rag.text import paper_id_for

ECHO_ID = paper_id_for("Echo Chambers in Recommender Systems: A Simulation Study")


# -- metrics on hand-computed cases ---------------------------------------------------------------
def test_retrieval_metrics_by_hand() -> None:
    ranking, gold = ["a", "b", "c", "d"], {"b", "d", "z"}
    assert m.hit_at_1(ranking, gold) == 0.0 and m.hit_at_1(["b"], gold) == 1.0
    assert m.recall_at_k(ranking, gold, 1) == 0.0
    assert m.recall_at_k(ranking, gold, 3) == pytest.approx(1 / 3)
    assert m.recall_at_k(ranking, gold, 10) == pytest.approx(2 / 3)
    assert m.reciprocal_rank(ranking, gold) == 0.5 and m.reciprocal_rank(["x"], gold) == 0.0
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m.ndcg_at_k(ranking, gold, 10) == pytest.approx(dcg / idcg)
    assert m.ndcg_at_k(["b", "d", "z"], gold, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        m.recall_at_k(ranking, set(), 5)


def test_answer_metrics_by_hand() -> None:
    assert m.token_f1("The cat sat [1].", "a cat sat down") == pytest.approx(2 * (2 / 2) * (2 / 3) / (1 + 2 / 3))
    assert m.token_f1("", "") == 1.0 and m.token_f1("x", "") == 0.0
    assert m.must_include("It has 67,760  frames [1].", ["67,760 frames"])
    assert not m.must_include("It has 67760 frames.", ["67,760"])
    assert m.answer_f1("anything", "", refused=True, answerable=False) == 1.0
    assert m.answer_f1("anything", "", refused=False, answerable=False) == 0.0
    assert m.answer_f1("cat sat", "cat sat", refused=True, answerable=True) == 0.0


def test_citation_and_refusal_metrics_by_hand() -> None:
    assert m.citation_precision(["a", "b", "a"], {"a"}) == 0.5
    assert m.citation_precision([], {"a"}) is None
    assert m.citation_recall(["a"], {"a", "b"}) == 0.5
    scores = m.refusal_scores([True, True, False, False, True], [False, True, False, True, False])
    # positives (unanswerable): q1, q3, q5; refused: q1, q2, q5 -> tp 2, fp 1, fn 1
    assert scores["refusal_precision"] == pytest.approx(2 / 3)
    assert scores["refusal_recall"] == pytest.approx(2 / 3)
    assert scores["refusal_f1"] == pytest.approx(2 / 3)
    assert scores["false_refusal_rate"] == pytest.approx(1 / 2)


def test_aggregates() -> None:
    assert m.percentile([1, 2, 3, 4, 5], 90) == pytest.approx(4.6)
    assert m.percentile([], 50) is None and m.median([None, 3.0, 1.0]) == 2.0
    assert m.mean([None, 1.0, 0.0]) == 0.5


# -- gold loader -------------------------------------------------------------------------------------
def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_gold_loads_titles_and_ids(fake_index, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    text = (
        (data_dir / "gold_small.jsonl")
        .read_text()
        .replace("echo-chambers-in-recommender-systems-a-simulat-ID", ECHO_ID)
    )
    items = load_gold(write(Path(fake_index.index_dir).parent, text), fake_index.papers)
    assert [i.id for i in items] == ["owl-num", "lattice", "echo", "mars"]
    assert items[2].gold_ids == (ECHO_ID,) and not items[3].answerable and items[0].line == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"id": "a", "question": "q", "gold_titles": ["No Such Paper"]}',
            "gold.jsonl:2: gold title(s) match no paper",
        ),
        (
            '{"id": "a", "question": "q", "gold_paper_ids": ["nope-1234"]}',
            "gold.jsonl:2: gold paper id(s) not in the index: nope-1234",
        ),
        ('{"id": "a", "question": ""}', "gold.jsonl:2: field 'question' is missing or empty"),
        ('{"id": "a", "question": "q", "must_include": "12"}', "gold.jsonl:2: field 'must_include' must be a list"),
        ('{"id": "ok", "question": "dup"}', "gold.jsonl:2: duplicate id 'ok'"),
        ('{"id": "a", "question": "q",', "gold.jsonl:2: not valid JSON"),
    ],
)
def test_gold_errors_name_the_line(fake_index, tmp_path: Path, line: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, '{"id": "ok", "question": "fine", "gold_titles": []}', line)
    with pytest.raises(GoldError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_gold(path, fake_index.papers)


def test_bundled_gold_set_matches_the_corpus() -> None:
    from index_build.corpus import read_corpus
    from rag.config import BUNDLED_CORPUS

    papers, _ = read_corpus([BUNDLED_CORPUS])
    items = load_gold(Path(__file__).parents[1] / "eval" / "data" / "dev.jsonl", {p.paper_id: p for p in papers})
    counts: dict[str, int] = {}
    for item in items:
        counts[item.type] = counts.get(item.type, 0) + 1
    assert len(items) >= 40
    assert counts["fact"] >= 8 and counts["number"] >= 8 and counts["paraphrase"] >= 8
    assert counts["multi"] >= 5 and counts["unanswerable"] >= 8
    assert all(len(i.gold_ids) >= 2 for i in items if i.type == "multi")
    by_id = {p.paper_id: p for p in papers}
    for item in items:  # every must-include string is written in a gold abstract
        text = " ".join(by_id[g].title + " " + by_id[g].abstract for g in item.gold_ids).lower()
        assert all(s.lower() in text for s in item.must_include), item.id


# -- full runs with a fake model -----------------------------------------------------------------------
FACTS = {
    "OwlSet": "OwlSet has 12,000 thermal images of animals at night [1].",
    "lunar lattice": "A graph network trained on 5,000 synthetic proteins predicts contact maps with 88% precision [1].",
    "echo chambers": "Diversity-aware re-ranking halves the size of echo chambers [1].",
    "mercury": "Mercury boils at 357 degrees on Mars [2].",
}


def fake_reply(messages: Sequence[Message]) -> str:
    question = messages[-1]["content"].split("Question:")[-1]
    return next((v for k, v in FACTS.items() if k.lower() in question.lower()), "I do not know.")


@pytest.fixture
def gold_file(fake_index, data_dir: Path, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "gold_small.jsonl"
    path.write_text(
        (data_dir / "gold_small.jsonl")
        .read_text()
        .replace("echo-chambers-in-recommender-systems-a-simulat-ID", ECHO_ID)
    )
    return path


def run_eval(fake_index, gold_file: Path, out: Path, configs: list[str], generator: FakeGenerator, **kw):  # type: ignore[no-untyped-def]
    base = get_config({"index_dir": fake_index.index_dir, "min_relevance": 0.05, "top_k": 3})
    return evaluate(
        gold_file,
        configs,
        out,
        base=base,
        embedder=fake_index.embedder,
        generator_for=lambda cfg: generator,
        progress=False,
        **kw,
    )


def test_full_eval_writes_every_report_file(fake_index, gold_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "report"
    result = run_eval(fake_index, gold_file, out, ["default", "naive"], FakeGenerator(fake_reply))
    for name in ("report.md", "report.json", "answers.jsonl", "metrics.png", "latency.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    default = result["runs"]["default"]["overall"]
    assert default["recall@5"] == 1.0 and default["must_include"] == 1.0
    assert default["citation_precision"] == 1.0 and default["citations_outside_prompt"] == 0
    naive = result["runs"]["naive"]["overall"]
    # The invented Mars answer is refused by the product (unsupported number) but not by naive.
    assert default["refusal_recall"] == 1.0 and naive["refusal_recall"] == 0.0
    report = (out / "report.md").read_text()
    assert "### The product against naive" in report and "### default by question type" in report
    data = json.loads((out / "report.json").read_text())
    assert data["meta"]["corpus_hash"] == fake_index.manifest["corpus_hash"] and data["meta"]["gold_sha256"]
    assert len((out / "answers.jsonl").read_text().splitlines()) == 8
    assert "recall@5" in summary_table(result["runs"])


def test_retrieval_only_needs_no_model(fake_index, gold_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gen = FakeGenerator("unused")
    result = run_eval(fake_index, gold_file, tmp_path / "r", ["dense-only", "bm25-only"], gen, retrieval_only=True)
    assert gen.calls == []
    assert result["runs"]["dense-only"]["overall"]["hit@1"] == 1.0
    assert "must_include" not in result["runs"]["bm25-only"]["overall"]


class Interrupting(FakeGenerator):
    def __init__(self, after: int) -> None:
        super().__init__(fake_reply)
        self.after = after

    def stream(self, messages, *, max_tokens):  # type: ignore[no-untyped-def]
        if len(self.calls) >= self.after:
            raise KeyboardInterrupt("simulated Ctrl-C")
        yield from super().stream(messages, max_tokens=max_tokens)


def test_resume_does_not_recompute_finished_questions(fake_index, gold_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "resume"
    with pytest.raises(KeyboardInterrupt):
        run_eval(fake_index, gold_file, out, ["default"], Interrupting(after=2))
    second = FakeGenerator(fake_reply)
    result = run_eval(fake_index, gold_file, out, ["default"], second)
    run = result["runs"]["default"]
    assert run["cached"] == 2 and run["computed"] == 2
    asked = [call[-1]["content"].split("Question:")[-1] for call in second.calls]
    assert asked and not any("OwlSet" in q or "lunar lattice" in q for q in asked)  # finished ones not asked again
    assert run["overall"]["questions"] == 4


def test_corrected_gold_rescores_cached_answers(fake_index, gold_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "rescore"
    first = run_eval(fake_index, gold_file, out, ["default"], FakeGenerator(fake_reply))
    assert first["runs"]["default"]["overall"]["must_include"] == 1.0
    gold_file.write_text(gold_file.read_text().replace('"must_include": ["12,000"]', '"must_include": ["13,000"]'))
    again = FakeGenerator(fake_reply)
    second = run_eval(fake_index, gold_file, out, ["default"], again)
    assert again.calls == [] and second["runs"]["default"]["cached"] == 4
    assert second["runs"]["default"]["overall"]["must_include"] == pytest.approx(2 / 3)


# -- honest evaluation: splits, whole-token matching, capped recall, judgments, baselines ----------------
def test_must_include_matches_whole_tokens() -> None:
    assert not m.must_include("Released in 2024 [1].", ["24"])
    assert not m.must_include("A gain of 0.24 points.", ["24"]) and not m.must_include("24.5 points", ["24"])
    assert m.must_include("It reaches 24 points (24%).", ["24", "24%"])
    assert m.must_include("up to 15%.", ["15%"]) and m.must_include("ResNet-50 wins", ["resnet"])


def test_capped_recall_by_hand() -> None:
    gold = {"a", "b", "c", "d", "e", "f"}
    assert m.capped_recall_at_k(["a", "x", "b", "c"], gold, 4) == pytest.approx(3 / 4)
    assert m.capped_recall_at_k(["a", "x"], {"a"}, 4) == 1.0
    assert m.recall_at_k(["a", "x", "b", "c"], gold, 4) == pytest.approx(3 / 6)


def test_bundled_test_split_is_complete_and_checked_against_the_abstracts() -> None:
    from eval.gold import load_split
    from eval.metrics import contains_token
    from index_build.corpus import read_corpus
    from rag.config import BUNDLED_CORPUS

    papers, _ = read_corpus([BUNDLED_CORPUS])
    by_id = {p.paper_id: p for p in papers}
    test = load_split("test", by_id)
    dev = load_split("dev", by_id)
    assert {i.split for i in test} == {"test"} and {i.split for i in dev} == {"dev"}
    assert not {i.id for i in test} & {i.id for i in dev}
    counts: dict[str, int] = {}
    for item in test:
        counts[item.type] = counts.get(item.type, 0) + 1
    assert len(test) >= 80
    expected = {
        "fact": 20,
        "number": 15,
        "paraphrase": 15,
        "multipart": 10,
        "list": 8,
        "compare": 6,
        "unanswerable": 12,
    }
    assert all(counts.get(t, 0) >= n for t, n in expected.items()), counts
    unanswerable = [i for i in test if i.type == "unanswerable"]
    assert (
        sum(i.subtype == "near-miss" for i in unanswerable) >= 8
        and sum(i.subtype == "absent" for i in unanswerable) >= 4
    )
    assert all(len(i.gold_ids) == 2 for i in test if i.type == "compare")
    assert all(len(i.gold_ids) >= 3 for i in test if i.type == "list")
    for item in test:
        if item.type in ("list", "compare"):  # each string is written in one of the gold papers
            assert all(
                any(contains_token(by_id[g].title + " " + by_id[g].abstract, s) for g in item.gold_ids)
                for s in item.must_include
            ), item.id
        else:
            text = " ".join(by_id[g].title + " " + by_id[g].abstract for g in item.gold_ids)
            assert all(contains_token(text, s) for s in item.must_include), item.id


@pytest.mark.parametrize(
    ("split", "earlier_splits", "lists", "compares", "papers"),
    [
        ("test2", ("dev", "test"), 5, 6, "new"),
        ("test3", ("dev", "test", "test2"), 4, 6, "new"),
        ("test4", ("dev", "test", "test2", "test3"), 6, 6, "new"),
        ("test5", ("dev", "test", "test2", "test3", "test4"), 6, 6, "new"),
        # two of its writers chose the same topic (legal texts) and the same pair of papers; one of each was dropped
        ("test6", ("dev", "test", "test2", "test3", "test4", "test5"), 5, 5, "new"),
        ("test7", ("dev", "test", "test2", "test3", "test4", "test5", "test6"), 6, 6, "new"),
        ("test8", ("dev", "test", "test2", "test3", "test4", "test5", "test6", "test7"), 5, 6, "new"),
        # only 13 papers were left that no earlier split asks about: each is asked, the rest were asked once before
        ("test9", ("dev", "test", "test2", "test3", "test4", "test5", "test6", "test7", "test8"), 6, 6, "rest"),
        # the collection had no never-asked paper left: written from papers asked once before (none of test9's)
        ("test10", ("dev", "test", "test2", "test3", "test4", "test5", "test6", "test7", "test8", "test9"), 6, 6, "again"),
        # the same way, none of test9's or test10's papers
        ("test11", ("dev", "test", "test2", "test3", "test4", "test5", "test6", "test7", "test8", "test9", "test10"), 6, 6, "again"),
        # the same way, none of test9's, test10's or test11's papers
        ("test12", ("dev", "test", "test2", "test3", "test4", "test5", "test6", "test7", "test8", "test9", "test10", "test11"), 6, 6, "again"),
    ],
)
def test_later_held_out_splits_are_checked_against_the_abstracts(
    split: str, earlier_splits: tuple[str, ...], lists: int, compares: int, papers: str
) -> None:
    from eval.gold import SPLITS, load_split
    from eval.metrics import contains_token
    from index_build.corpus import read_corpus
    from rag.config import BUNDLED_CORPUS

    corpus, _ = read_corpus([BUNDLED_CORPUS])
    by_id = {p.paper_id: p for p in corpus}
    test2 = load_split(split, by_id)
    earlier = [i for s in earlier_splits for i in load_split(s, by_id)]
    assert len(test2) >= 55 and not {i.id for i in test2} & {i.id for i in earlier}
    # written from papers no earlier split asks about (list answers may name any paper)
    asked = {g for i in earlier if i.type not in ("list",) for g in i.gold_ids}
    own = {g for i in test2 if i.type not in ("list", "compare") for g in i.gold_ids}
    if papers == "new":
        assert not own & asked
    elif papers == "rest":  # every paper no earlier split asked about is asked now
        near = {json.loads(line).get("near_title") for s in earlier_splits for line in SPLITS[s].open()}
        never_asked = set(by_id) - {g for i in earlier for g in i.gold_ids} - {p.paper_id for p in corpus if p.title in near}
        assert never_asked and {g for i in test2 for g in i.gold_ids} >= never_asked
    else:  # "again": its own papers were asked about at most once before, none by the split before it
        times = Counter(g for i in earlier for g in i.gold_ids)
        assert all(times[g] <= 1 for g in own) and not own & {g for i in load_split(earlier_splits[-1], by_id) for g in i.gold_ids}
    if papers != "new":  # old papers, new questions
        assert not {i.question for i in test2} & {i.question for i in earlier}
    counts: dict[str, int] = {}
    for item in test2:
        counts[item.type] = counts.get(item.type, 0) + 1
    assert counts.get("list", 0) >= lists and counts.get("compare", 0) >= compares and counts.get("unanswerable", 0) >= 9
    for item in test2:
        assert all(
            any(contains_token(by_id[g].title + " " + by_id[g].abstract, s) for g in item.gold_ids)
            for s in item.must_include
        ), item.id


def judgment_line(qid: str, sentence: str, pid: str, label: str) -> str:
    return json.dumps({"question_id": qid, "sentence": sentence, "paper_id": pid, "label": label, "reason": "r"})


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"question_id": "q"'], "j.jsonl:1: not valid JSON"),
        ([judgment_line("q", "S.", "p", "maybe")], "j.jsonl:1: label 'maybe' is not one of"),
        (['{"question_id": "q", "sentence": "S.", "label": "supported"}'], "j.jsonl:1: field 'paper_id' is missing"),
        (
            [judgment_line("q", "S.", "p", "supported"), judgment_line("q", "S.", "p", "garbled")],
            "j.jsonl:2: label 'garbled' contradicts 'supported' at line 1",
        ),
    ],
)
def test_judgment_errors_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    from eval.judgments import JudgmentError, load_judgments

    path = tmp_path / "j.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(JudgmentError, match=message):
        load_judgments(path)


def test_judged_metrics_by_hand(tmp_path: Path) -> None:
    from eval.judgments import join, judged_metrics, load_judgments

    path = tmp_path / "j.jsonl"
    path.write_text(
        "\n".join(
            [
                judgment_line("q1", "A is B [1].", "p1", "supported"),
                judgment_line("q1", "C  is D [1][2].", "p1", "supported"),  # whitespace is folded
                judgment_line("q1", "C is D [1][2].", "p2", "unsupported"),
                judgment_line("q2", "It is described in [1].", "p1", "no-answer"),
            ]
        )
        + "\n"
    )
    pool = load_judgments(path)
    records = [
        {
            "id": "q1",
            "refused": False,
            "shown": [
                {"text": "A is B [1].", "paper_ids": ["p1"], "verified": True},
                {"text": "C is D [1][2].", "paper_ids": ["p1", "p2"], "verified": True},
                {"text": "E is F [?].", "paper_ids": [], "verified": False},  # flagged: not presented
                {"text": "G is H.", "paper_ids": [], "verified": True},  # presented without a citation
                {"text": "New [1].", "paper_ids": ["p1"], "verified": True},  # not judged yet
            ],
        },
        {
            "id": "q2",
            "refused": False,
            "shown": [{"text": "It is described in [1].", "paper_ids": ["p1"], "verified": True}],
        },
        {"id": "q3", "refused": True, "shown": [{"text": "X [1].", "paper_ids": ["p1"], "verified": True}]},
    ]
    out = judged_metrics(join(records, pool))
    assert out["presented_sentences"] == 5 and out["judged_sentences"] == 4
    assert out["judged_coverage"] == pytest.approx(4 / 5)
    assert out["judged_faithfulness"] == pytest.approx(1 / 3)  # of the cited ones, only "A is B" holds up
    assert out["judged_faithfulness_strict"] == pytest.approx(1 / 4)  # the uncited one counts against it
    assert out["sentence_citation_precision"] == pytest.approx(2 / 4)
    assert out["judged_no_answer"] == 1 and out["judged_unsupported"] == 1 and out["judged_uncited"] == 1


def peer_reply(messages: Sequence[Message]) -> str:
    """The fake model for every pipeline: the product and naive say "Question:", llama-index "Query:"."""
    content = messages[-1]["content"]
    question = content.split("Question:")[-1] if "Question:" in content else content.split("Query:")[-1]
    return next((v for k, v in FACTS.items() if k.lower() in question.lower()), "None of the sources are helpful.")


def test_eval_with_both_baselines_pools_judgments(fake_index, gold_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "peer"
    judgments = tmp_path / "judgments.jsonl"
    configs = ["default", "naive", "llamaindex-citation"]
    first = run_eval(fake_index, gold_file, out, configs, FakeGenerator(peer_reply), judgments=judgments)
    peer = first["runs"]["llamaindex-citation"]
    assert peer["computed"] == 4 and peer["pipeline"] == "llamaindex-citation"
    assert peer["overall"]["must_include"] == 1.0 and peer["overall"]["citations_outside_prompt"] == 0
    todo = [json.loads(line) for line in (out / "unjudged.jsonl").read_text().splitlines()]
    assert todo and all(t["abstract"] and t["title"] and t["sentence"] for t in todo)
    assert first["runs"]["default"]["overall"]["judged_coverage"] == 0.0
    # A reader labels every listed sentence; the rerun reuses every answer and reports the labels.
    judgments.write_text(
        "\n".join(
            judgment_line(
                t["question_id"], t["sentence"], t["paper_id"], "no-answer" if "Mars" in t["sentence"] else "supported"
            )
            for t in todo
        )
        + "\n"
    )
    again = FakeGenerator(peer_reply)
    second = run_eval(fake_index, gold_file, out, configs, again, judgments=judgments)
    assert again.calls == [] and all(r["cached"] == 4 and r["computed"] == 0 for r in second["runs"].values())
    assert not (out / "unjudged.jsonl").read_text().strip()
    for name in configs:
        assert second["runs"][name]["overall"]["judged_coverage"] == 1.0, name
    assert second["runs"]["default"]["overall"]["judged_faithfulness"] == 1.0
    assert second["runs"]["naive"]["overall"]["judged_faithfulness"] < 1.0  # naive shows the invented Mars answer
    report = (out / "report.md").read_text()
    assert "### The product against llamaindex-citation" in report and "judged faithfulness" in report
    assert "0 answers computed in this run, 4 reused" in report


def test_unverified_answers_are_shown_with_their_markers_in_place() -> None:
    from eval.runner import shown_sentences
    from rag.types import Answer, Source

    sources = (Source(1, "p1", "T1", (), 1.0), Source(2, "p2", "T2", (), 0.5))
    answer = Answer(
        "q", "x", "[1] proposes a lattice. The sources do not mention mercury [2].", (), (), False, (), sources
    )
    shown = shown_sentences(answer, verified=False)
    assert [s["text"] for s in shown] == ["[1] proposes a lattice.", "The sources do not mention mercury [2]."]
    assert shown[0]["paper_ids"] == ["p1"] and shown[1]["refusal"] and not shown[0]["refusal"]


# -- replaying stored model replies through the current code ----------------------------------------
def test_replay_answers_again_from_stored_replies_without_the_model(fake_index, gold_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = tmp_path / "first"
    run_eval(fake_index, gold_file, first, ["default", "naive"], FakeGenerator(fake_reply))
    stored = first / "answers.jsonl"
    # Say naive's stored reply to the OwlSet question gave another count: the replay must use that
    # reply, and only for naive (each configuration replays its own replies).
    rows = [json.loads(line) for line in stored.read_text().splitlines()]
    for row in rows:
        if "OwlSet" in row["question"] and row["config"] == "naive":
            row["raw_text"] = "OwlSet has 13,000 thermal images of animals at night [1]."
    stored.write_text("".join(json.dumps(r) + "\n" for r in rows))
    unused = FakeGenerator("the model must not be asked")
    out = tmp_path / "replay"
    result = run_eval(fake_index, gold_file, out, ["default", "naive"], unused, replay=[stored])
    assert unused.calls == []
    counts = result["meta"]["replay_counts"]
    # The stored text said 12,000 (only its raw reply was edited): naive's replayed answer changed
    # and now fails must-include; the product's replies are unchanged, and so are its answers.
    assert counts["naive"]["changed"] == 1 and counts["default"]["changed"] == 0
    assert counts["naive"]["old_must_include"] == counts["naive"]["new_must_include"] + 1
    changes = [json.loads(line) for line in (out / "replay.jsonl").read_text().splitlines()]
    assert [c["config"] for c in changes] == ["naive"] and "13,000" in changes[0]["new_text"]
    assert changes[0]["old_must_include_ok"] and not changes[0]["new_must_include_ok"]
    default = result["runs"]["default"]["overall"]
    assert default["first_token_p50_s"] is None  # a replay measures no speed
    assert not (out / "cache").exists()  # and never enters the cache of real answers
    assert "Replay: the model's replies are the ones stored in" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows[1:], "no stored answer of 'default' for"),
        (lambda rows: rows + rows[:1], "is stored twice"),
        (lambda rows: [{k: v for k, v in r.items() if k != "raw_text"} for r in rows], "field 'raw_text' is missing"),
        (lambda rows: [{**r, "question": r["question"] + " now"} if i == 0 else r for i, r in enumerate(rows)],
         "reads differently in the gold file now"),
    ],
)
def test_replay_errors_name_the_problem(fake_index, gold_file: Path, tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    from eval.replay import ReplayError

    first = tmp_path / "first"
    run_eval(fake_index, gold_file, first, ["default"], FakeGenerator(fake_reply))
    stored = first / "answers.jsonl"
    rows = [json.loads(line) for line in stored.read_text().splitlines()]
    stored.write_text("".join(json.dumps(r) + "\n" for r in edit(rows)))
    with pytest.raises(ReplayError, match=message):
        run_eval(fake_index, gold_file, tmp_path / "replay", ["default"], FakeGenerator("unused"), replay=[stored])


def test_replay_generator_picks_the_longest_stored_question() -> None:
    from eval.replay import ReplayError, ReplayGenerator

    gen = ReplayGenerator({"What is X?": "short", "Why? What is X? And Y?": "long"})
    prompt = [{"role": "user", "content": "<sources>…</sources>\n\nQuestion: Why? What is X? And Y?\n"}]
    assert "".join(gen.stream(prompt, max_tokens=10)) == "long"
    with pytest.raises(ReplayError, match="no stored reply for this prompt"):
        list(gen.stream([{"role": "user", "content": "Question: something else"}], max_tokens=10))

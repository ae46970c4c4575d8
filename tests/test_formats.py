"""Reference-manager formats: BibTeX, RIS, CSL-JSON, the arXiv metadata snapshot, and
de-duplication across them and the bundled listing corpus."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index_build.corpus import read_corpus
from index_build.latex import latex_to_text
from rag.config import BUNDLED_CORPUS
from rag.errors import CorpusError
from rag.identifiers import find_arxiv_id, normalize_arxiv_id, normalize_doi
from rag.types import Paper

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def by_title(papers: list[Paper], start: str) -> Paper:
    return next(p for p in papers if p.title.startswith(start))


def messages(problems: object) -> list[str]:
    return [str(p) for p in problems]  # type: ignore[attr-defined]


# -- LaTeX and identifiers ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("latex", "plain"),
    [
        (r"M{\"u}ller and Garc{\'\i}a", "Müller and García"),
        (r"{BERT} and {\emph{Deep}} Nets", "BERT and Deep Nets"),
        (r"an $\alpha$-stable law costs $\mathcal{O}(n \log n)$", "an α-stable law costs 𝒪(n log n)"),
        (r"up to 15\% -- or more~\cite{smith2020}, see \url{https://x.org}", "up to 15% – or more, see https://x.org"),
        (r"\href{https://x.org}{the code} and \LaTeX{}", "the code and LaTeX"),
        ("plain text, untouched: 50 % & more", "plain text, untouched: 50 % & more"),
        (r"unbalanced {brace and \unknown{macro}", "unbalanced brace and macro"),
        (r"caf\'e and na\"{\i}ve cost \$5, {\em not} $$x^2$$", "café and naïve cost $5, not x^2"),
        (r"\LaTeX is fun; \textsc{Caps} \ss{} ``q'' a~b", "LaTeX is fun; Caps ß “q” a b"),
        ("an unclosed $ sign, and a trailing \\", "an unclosed $ sign, and a trailing"),
    ],
)
def test_latex_to_text(latex: str, plain: str) -> None:
    assert latex_to_text(latex) == plain


def test_identifiers_normalise() -> None:
    assert normalize_doi("https://doi.org/10.1109/CVPR.2019.00498") == "10.1109/cvpr.2019.00498"
    assert normalize_doi("doi: 10.2196/44293.") == "10.2196/44293"
    assert normalize_doi("not a doi") is None
    assert normalize_arxiv_id("arXiv:1901.11399v2") == "1901.11399"
    assert normalize_arxiv_id("hep-th/9901001") == "hep-th/9901001"
    assert normalize_arxiv_id("12345") is None
    assert find_arxiv_id("arXiv preprint arXiv:2205.13147") == "2205.13147"
    assert find_arxiv_id(None, "https://arxiv.org/pdf/2309.17425v1.pdf") == "2309.17425"
    assert find_arxiv_id("10.48550/arXiv.2403.17823") == "2403.17823"


# -- BibTeX -------------------------------------------------------------------------------------
def test_bibtex_fields_latex_and_reported_entries(data_dir: Path) -> None:
    papers, report = read_corpus([data_dir / "refs.bib"])
    etn = by_title(papers, "Equivariant Transformer Networks")
    assert etn.authors == ("Tai, Kai Sheng", "Bailis, Peter", "Valiant, Gregory")
    assert (etn.year, etn.arxiv_id, etn.citation_key, etn.entry_type) == (
        2019,
        "1901.11399",
        "tai2019equivariant",
        "inproceedings",
    )
    assert etn.venue == "Proceedings of the 36th International Conference on Machine Learning"  # from @string
    assert "up to 15% in the limited data regime" in etn.abstract and "\\%" not in etn.abstract
    assert etn.title_latex == "{Equivariant} {Transformer} {Networks}"
    assert etn.abstract_latex is not None and "\\emph{Equivariant Transformers}" in etn.abstract_latex

    schr = by_title(papers, "Schrödinger Bridges")
    assert schr.title == "Schrödinger Bridges for α-Stable Lévy Processes"
    assert schr.authors == ("Müller, Jörg", "García, María", "van der Berg, Pieter", "{Stochastic Learning Group}")
    assert "cost is 𝒪(n log n) in the number of samples, and train it with fractional" in schr.abstract
    assert schr.doi == "10.5555/jmlr.2024.112" and schr.venue == "Journal of Machine Learning Research"
    fang = by_title(papers, "Data Filtering Networks")
    assert fang.doi == "10.48550/arxiv.2309.17425" and fang.arxiv_id == "2309.17425" and fang.entry_type == "misc"

    assert messages(report.problems) == [
        "refs.bib:20: entry 'alcorn2019strike': no abstract",
        "refs.bib:62: broken BibTeX entry 'broken2021entry': Unexpected block start: `@inproceedings`. "
        "Was still looking for field-value closing `,` or `}`",
        "refs.bib:69: entry 'tai2019equivariant': citation key already used by the entry at line 6",
    ]
    tidal = by_title(papers, "Tidal Turbines")
    assert tidal.year is None and tidal.authors == ("Okafor, Chidi", "Lindqvist, Sara")
    assert messages(report.warnings) == [
        "refs.bib:81: entry 'okafor2025tides': field 'year' holds no year: 'forthcoming'; ignored"
    ]


def test_bibtex_bad_bytes_lose_only_their_entry(tmp_path: Path, data_dir: Path) -> None:
    text = (data_dir / "refs.bib").read_bytes()
    broken = text.replace(b"Okafor, Chidi", b"Okafor, Chi\xffdi")
    (tmp_path / "b.bib").write_bytes(broken)
    papers, report = read_corpus([tmp_path / "b.bib"])
    assert not any(p.title.startswith("Tidal") for p in papers)
    assert len(papers) == 4  # the other entries with an abstract
    assert any("not valid UTF-8" in m for m in messages(report.problems))
    assert any("'okafor2025tides' lost to bytes that are not UTF-8" in m for m in messages(report.problems))


def test_bibtex_concatenation_and_repeated_fields(tmp_path: Path) -> None:
    (tmp_path / "c.bib").write_text(
        '@string{jmlr = "J. Mach. Learn. Res."}\n'
        "@Article{k1,\n  Title = {Lattice} # { Widgets},\n  Journal = jmlr,\n  YEAR = 2020,\n"
        "  Abstract = {First abstract of the widgets paper.},\n  abstract = {Second, ignored.},\n}\n",
        encoding="utf-8",
    )
    papers, report = read_corpus([tmp_path / "c.bib"])
    assert [(p.title, p.venue, p.year, p.abstract) for p in papers] == [
        ("Lattice Widgets", "J. Mach. Learn. Res.", 2020, "First abstract of the widgets paper.")
    ]
    assert messages(report.warnings) == [
        "c.bib:2: entry 'k1': field(s) abstract given more than once; the first is used"
    ]


# -- RIS ----------------------------------------------------------------------------------------
def test_ris_records_and_problems(data_dir: Path) -> None:
    papers, report = read_corpus([data_dir / "refs.ris"])
    clinical = by_title(papers, "Few-Shot Learning for Clinical")
    assert clinical.authors[0] == "Oniani, David" and clinical.year == 2023 and clinical.venue == "JMIR AI"
    assert clinical.doi == "10.2196/44293" and clinical.entry_type == "article"
    fang = by_title(papers, "Data filtering networks")
    assert fang.doi == "10.48550/arxiv.2309.17425" and fang.year == 2023  # "2023///" and a doi.org URL
    assert fang.abstract.endswith("it is the same paper by DOI.")  # a continuation line joins its tag
    tabsim = by_title(papers, "TabSim")
    assert tabsim.citation_key == "habibi2020tabsim" and tabsim.arxiv_id == "2008.10856" and tabsim.year is None
    assert messages(report.problems) == [
        "refs.ris:17: no abstract (AB or N2)",
        "refs.ris:40: text outside a TY ... ER record",
    ]
    assert messages(report.warnings) == [
        "refs.ris:42: record has no ER line (the file ends first); read up to the end",
        "refs.ris:42: record 'habibi2020tabsim': field 'PY' holds no year: 'in press'; ignored",
    ]


# -- CSL-JSON -----------------------------------------------------------------------------------
def test_csl_json_items_and_a_broken_one(data_dir: Path) -> None:
    papers, report = read_corpus([data_dir / "refs.json"])
    crop = by_title(papers, "Efficient Image Pre-Training")
    assert crop.title == "Efficient Image Pre-Training with Siamese Cropped Masked Autoencoders"  # <i> removed
    assert crop.authors[-1] == "Van Droogenbroeck, Marc" and crop.year == 2024
    assert crop.arxiv_id == "2403.17823" and crop.citation_key == "eymael2024efficient"
    whale = by_title(papers, "Whale Song")
    assert whale.authors == ("{Ocean Acoustics Consortium}", "Ruiz, Elena") and whale.entry_type == "techreport"
    assert by_title(papers, "Matryoshka").arxiv_id == "2205.13147"
    assert messages(report.problems) == [
        "refs.json:38: item 'http://zotero.org/users/1234/items/ABCD2345': field 'abstract' is missing or empty",
        "refs.json:45: item not valid JSON (Expecting ',' delimiter at line 48 column 5)",
    ]


def test_json_lines_of_plain_records_read_like_jsonl(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "p.json").write_bytes((data_dir / "papers.jsonl").read_bytes())
    as_json, _ = read_corpus([tmp_path / "p.json"])
    as_jsonl, _ = read_corpus([data_dir / "papers.jsonl"])
    assert [(p.title, p.authors, p.year) for p in as_json] == [(p.title, p.authors, p.year) for p in as_jsonl]


def test_a_single_csl_item_and_a_broken_file(tmp_path: Path) -> None:
    item = {
        "id": "k",
        "type": "book",
        "title": "One Item",
        "abstract": "A whole file with one item in it.",
        "issued": {"raw": "May 2001"},
    }
    (tmp_path / "one.json").write_text(json.dumps(item, indent=2), encoding="utf-8")
    papers, _ = read_corpus([tmp_path / "one.json"])
    assert [(p.title, p.year, p.entry_type, p.citation_key) for p in papers] == [("One Item", 2001, "book", "k")]
    (tmp_path / "bad.json").write_text('{"title": "x",\n "abstract": }', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.json:2: not valid JSON \(Expecting value at line 2"):
        read_corpus([tmp_path / "bad.json"])


# -- arXiv metadata -----------------------------------------------------------------------------
def test_arxiv_snapshot_records(data_dir: Path) -> None:
    papers, report = read_corpus([data_dir / "arxiv_sample.jsonl"])
    etn = by_title(papers, "Equivariant Transformer Networks")
    assert etn.arxiv_id == "1901.11399" and etn.year == 2019 and etn.authors[0] == "Tai, Kai Sheng"
    assert etn.entry_type == "misc" and etn.venue is None
    polymer = by_title(papers, "On the L^2-Rigidity")
    assert polymer.title_latex == "On the $L^2$-Rigidity of Random Polymers"
    assert polymer.arxiv_id == "math/0309136" and polymer.year == 2003 and polymer.doi == "10.1214/009117904000000001"
    assert polymer.venue == "Ann. Probab. 33 (2005) 1-12" and polymer.authors[1] == "Müller, J."
    assert "variance 𝒪(n^1/3)" in polymer.abstract and 'M\\"uller' not in polymer.abstract
    assert messages(report.problems) == [
        "arxiv_sample.jsonl:4: record '2107.00001': field 'abstract' is missing or empty",
        "arxiv_sample.jsonl:5: not valid JSON (Expecting value at column 1)",
    ]


def test_arxiv_category_filter_and_limit(data_dir: Path) -> None:
    path = data_dir / "arxiv_sample.jsonl"
    papers, _ = read_corpus([path], arxiv_categories=["cs.LG"])
    assert [p.arxiv_id for p in papers] == ["1901.11399", "2309.17425", "2402.01234"]
    papers, _ = read_corpus([path], arxiv_categories=["math", "eess.SY"])
    assert [p.arxiv_id for p in papers] == ["math/0309136", "2402.01234"]
    # The limit stops the stream: the broken line 5 is never read, so it is not reported.
    papers, report = read_corpus([path], limit=2)
    assert [p.arxiv_id for p in papers] == ["1901.11399", "2309.17425"] and report.problems == ()
    with pytest.raises(CorpusError, match="no usable entries in this file in categories q-bio"):
        read_corpus([path], arxiv_categories=["q-bio"])
    with pytest.raises(CorpusError, match="limit must be at least 1"):
        read_corpus([path], limit=0)


# -- across formats -----------------------------------------------------------------------------
def test_dedup_across_formats_keeps_every_source_and_the_richest_metadata(data_dir: Path) -> None:
    files = [data_dir / n for n in ("refs.bib", "refs.ris", "refs.json", "arxiv_sample.jsonl")]
    papers, report = read_corpus([BUNDLED_CORPUS, *files])
    bundled, _ = read_corpus([BUNDLED_CORPUS])
    new_titles = {"Schrödinger", "Tidal Turbines", "Whale Song", "On the L^2", "Graph Neural Networks for Power"}
    assert len(papers) == len(bundled) + len(new_titles)
    assert all(any(p.title.startswith(t) for p in papers) for t in new_titles)

    etn = by_title(papers, "Equivariant Transformer Networks")  # by title, then by arXiv id
    assert etn.source_files == ("000_993bef3f8d9bd4d6.txt", "refs.bib", "arxiv_sample.jsonl")
    assert etn.abstract == by_title(bundled, "Equivariant Transformer Networks").abstract  # the first text
    assert etn.citation_key == "tai2019equivariant" and etn.authors[0] == "Tai, Kai Sheng"
    assert etn.title_latex is None  # the listing's title came first and has no LaTeX

    fang = by_title(papers, "Data Filtering Networks")  # by title, then DOI (RIS), then arXiv id
    assert fang.source_files == ("001_2c3f639404cc3a5e.txt", "refs.bib", "refs.ris", "arxiv_sample.jsonl")
    assert len(fang.authors) == 6 and fang.doi == "10.48550/arxiv.2309.17425"

    mrl = by_title(papers, "Matryoshka Representation Learning")  # CSL item: by arXiv id in its URL
    assert mrl.source_files == ("000_993bef3f8d9bd4d6.txt", "refs.bib", "refs.json")
    assert len(mrl.authors) == 11 and mrl.url == "https://arxiv.org/abs/2205.13147"

    clinical = by_title(papers, "Few-Shot Learning for Clinical")
    assert clinical.source_files[-1] == "refs.ris" and clinical.doi == "10.2196/44293"
    assert by_title(papers, "TabSim").arxiv_id == "2008.10856"
    assert by_title(papers, "Efficient Image Pre-Training").citation_key == "eymael2024efficient"
    assert len({p.paper_id for p in papers}) == len(papers)
    assert report.entries == sum(len(p.sources) for p in papers)


# -- property tests: every entry is a paper, a duplicate or a reported problem ----------------
_WORD = st.text(alphabet=string.ascii_letters, min_size=2, max_size=8)
_TITLE = st.lists(_WORD, min_size=2, max_size=8).map(" ".join)
_ABSTRACT = st.lists(_WORD, min_size=5, max_size=30).map(" ".join)
# (title, abstract or None, broken?)
_ENTRIES = st.lists(st.tuples(_TITLE, st.one_of(_ABSTRACT, st.none()), st.booleans()), min_size=1, max_size=8)


def _accounted(papers: list[Paper], problems: tuple[object, ...], name: str) -> set[int]:
    lines = {s.line for p in papers for s in p.sources if s.file == name}
    return lines | {p.line for p in problems}  # type: ignore[attr-defined]


def _check(path: Path, starts: list[int]) -> None:
    try:
        papers, report = read_corpus([path])
        problems = report.problems
    except CorpusError as exc:
        assert path.name in str(exc) or "corpus is empty" in str(exc)
        return
    accounted = _accounted(papers, problems, path.name)
    for line in starts:
        assert line in accounted, f"the entry at line {line} vanished"
    for paper in papers:
        assert paper.title and paper.abstract


@FAST
@given(entries=_ENTRIES)
def test_bibtex_every_entry_is_accounted_for(tmp_path: Path, entries: list[tuple[str, str | None, bool]]) -> None:
    lines: list[str] = []
    starts = []
    for i, (title, abstract, broken) in enumerate(entries):
        starts.append(len(lines) + 1)
        lines.append(f"@article{{key{i},")
        lines.append(f"  title = {{{title}}}," if not broken else f"  title = {{{title},")
        if abstract is not None:
            lines.append(f"  abstract = {{{abstract}}},")
        lines += ["}", ""]
    path = tmp_path / "p.bib"
    path.write_text("\n".join(lines), encoding="utf-8")
    _check(path, starts)


@FAST
@given(entries=_ENTRIES)
def test_ris_every_record_is_accounted_for(tmp_path: Path, entries: list[tuple[str, str | None, bool]]) -> None:
    lines: list[str] = []
    starts = []
    for title, abstract, broken in entries:
        starts.append(len(lines) + 1)
        lines += ["TY  - JOUR", f"TI  - {title}"]
        if abstract is not None:
            lines.append(f"AB  - {abstract}")
        if not broken:  # a missing ER: the record still counts
            lines.append("ER  - ")
        lines.append("")
    path = tmp_path / "p.ris"
    path.write_text("\n".join(lines), encoding="utf-8")
    _check(path, starts)


@FAST
@given(entries=_ENTRIES, compact=st.booleans())
def test_csl_every_item_is_accounted_for(
    tmp_path: Path, entries: list[tuple[str, str | None, bool]], compact: bool
) -> None:
    items = []
    for i, (title, abstract, broken) in enumerate(entries):
        item: dict[str, object] = {"id": f"k{i}", "type": "article-journal", "title": title}
        if abstract is not None:
            item["abstract"] = abstract
        text = json.dumps(item) if compact else json.dumps(item, indent=4).replace("\n", "\n  ")
        items.append(text.replace('"title"', '"title" "oops"', 1) if broken else text)
    sep = "," if compact else ",\n  "
    text = "[" + sep.join(items) + "]" if compact else "[\n  " + sep.join(items) + "\n]"
    path = tmp_path / "p.json"
    path.write_text(text, encoding="utf-8")
    starts = [1] * len(items) if compact else []
    if not compact:
        starts = [n for n, line in enumerate(text.split("\n"), 1) if line == "  {"]
    _check(path, starts)


@FAST
@given(entries=_ENTRIES)
def test_arxiv_every_line_is_accounted_for(tmp_path: Path, entries: list[tuple[str, str | None, bool]]) -> None:
    lines = []
    for i, (title, abstract, broken) in enumerate(entries):
        record = {"id": f"2101.{i:05d}", "title": title, "abstract": abstract or "", "categories": "cs.LG"}
        lines.append(json.dumps(record)[: -5 if broken else None])
    path = tmp_path / "arxiv.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    if not lines[0].endswith("}"):
        return  # a broken first line makes it a plain JSONL file; that parser has its own property test
    _check(path, list(range(1, len(lines) + 1)))


def test_rag_build_reads_the_new_formats_with_limit_and_category(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import index_build.build
    from rag.cli import main
    from rag.models import HashEmbedder

    monkeypatch.setattr(index_build.build, "load_embedder", lambda *a, **k: HashEmbedder())
    corpus = [data_dir / n for n in ("refs.bib", "refs.ris", "refs.json", "arxiv_sample.jsonl")]
    args = [a for path in corpus for a in ("--corpus", str(path))]
    index = tmp_path / "idx"
    assert main(["build", *args, "--index", str(index), "--arxiv-category", "math", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 file(s)" in out and "with a field ignored" in out
    assert "  skipped refs.bib:20: entry 'alcorn2019strike': no abstract" in out
    assert "  kept refs.bib:81: entry 'okafor2025tides': field 'year' holds no year" in out
    papers = [json.loads(line) for line in (index / "papers.jsonl").read_text(encoding="utf-8").splitlines()]
    arxiv_only = [p for p in papers if [s["file"] for s in p["sources"]] == ["arxiv_sample.jsonl"]]
    assert [p["arxiv_id"] for p in arxiv_only] == ["math/0309136"]

    assert main(["build", *args, "--index", str(index), "--limit", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["corpus"]["entries"] == 4 and result["status"] == "built"


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_json_nested_too_deeply_is_a_problem_not_a_crash(tmp_path: Path, suffix: str) -> None:
    good = json.dumps({"title": "Fine Paper", "abstract": "A record after the deep one is still read."})
    (tmp_path / ("deep" + suffix)).write_text('{"title": "t", "abstract": ' + "[" * 5000 + "\n" + good + "\n")
    papers, report = read_corpus([tmp_path / ("deep" + suffix)])
    assert [p.title for p in papers] == ["Fine Paper"]
    assert messages(report.problems) == [f"deep{suffix}:1: not valid JSON (nested too deeply)"]
    (tmp_path / "deep.json").write_text("[" * 5000)
    with pytest.raises(CorpusError, match="nested too deeply"):
        read_corpus([tmp_path / "deep.json"])


def test_same_title_different_identifiers_are_two_papers(tmp_path: Path) -> None:
    def record(arxiv_id: str, abstract: str) -> str:
        return json.dumps({"id": arxiv_id, "title": "Erratum", "abstract": abstract, "categories": "hep-th"})

    lines = [
        record("1001.00001", "Corrects a sign in eq. 4."),
        record("1002.00002", "Corrects table 2."),
        record("1001.00001", "Corrects a sign in eq. 4 (again)."),
    ]
    (tmp_path / "a.jsonl").write_text("\n".join(lines), encoding="utf-8")
    papers, report = read_corpus([tmp_path / "a.jsonl"])
    assert [p.arxiv_id for p in papers] == ["1001.00001", "1002.00002"]
    assert len({p.paper_id for p in papers}) == 2 and report.duplicates == 1 and report.problems == ()
    # Without identifiers that tell them apart, a second abstract under one title is reported.
    (tmp_path / "b.jsonl").write_text(
        "\n".join(json.dumps({"title": "Erratum", "abstract": a}) for a in ("One text.", "Another text.")),
        encoding="utf-8",
    )
    _, report = read_corpus([tmp_path / "b.jsonl"])
    assert "was already read at b.jsonl:1 with a different abstract" in messages(report.problems)[0]

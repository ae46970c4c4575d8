"""Turn answers and evidence into chat Markdown and evidence-panel HTML.

All corpus text (titles, abstracts) and all model text is untrusted: it is escaped before it
is rendered, so an abstract holding ``<script>`` or a Markdown link shows as plain text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from rag.citations import UNSUPPORTED_MARK
from rag.references import has_metadata, reference_link, reference_text
from rag.streaming import reason_words
from rag.types import Answer, AnswerSentence, Citation, Paper, RetrievedPaper, Source

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
Papers = Mapping[str, Paper]


def escape_md(text: str) -> str:
    """Text that renders literally in Markdown: HTML escaped, Markdown punctuation backslashed."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def safe_url(url: str | None) -> str | None:
    """An http(s) URL from the corpus made safe for a Markdown link or an href, or None.

    Corpus URLs are untrusted: only http(s) passes (no ``javascript:``), and characters that
    could end the link (spaces, parentheses, quotes, angle brackets) are percent-encoded.
    """
    if not url or not re.match(r"^https?://[^\s]+$", url, re.IGNORECASE):
        return None
    return quote(url, safe=":/?#@!$&*+,;=%~-._[]")


def reference_markdown(paper: Paper) -> str:
    """A reference line for the chat: "Tai et al. (2019). Title. Venue." and its link."""
    text = escape_md(reference_text(paper))
    link = safe_url(reference_link(paper))
    return f"{text} [{escape_md(_link_label(paper))}]({link})" if link else text


def _link_label(paper: Paper) -> str:
    if paper.doi:
        return f"doi:{paper.doi}"
    if paper.arxiv_id:
        return f"arXiv:{paper.arxiv_id}"
    return "link"


def reference_html(paper: Paper) -> str:
    """The reference of an evidence card, escaped, with its link."""
    text = html.escape(reference_text(paper))
    link = safe_url(reference_link(paper))
    if link is None:
        return text
    return (
        f'{text} <a class="ev-link" href="{html.escape(link, quote=True)}" target="_blank" '
        f'rel="noopener noreferrer">{html.escape(_link_label(paper))}</a>'
    )


def cite_marks(numbers: Sequence[int], turn: int = 1) -> str:
    """Citation markers, bold so they stand out, linking to this turn's references below the
    answer (``#t2-ref-1``: each turn has its own anchors, so turn 2's [1] does not jump to turn 1's)."""
    return "".join(f"**[\\[{n}\\]](#t{turn}-ref-{n})**" for n in numbers)


def sentence_markdown(body: str, citations: Sequence[int], supported: bool, reason: str | None, turn: int = 1) -> str:
    """One answer sentence as shown: with its citation links when supported; otherwise marked,
    in italics, with the reason no source backs it."""
    if supported:
        return f"{escape_md(body)} {cite_marks(citations, turn)}".rstrip()
    why = reason or "no source backs it"
    label = why if why.startswith("restates the question") else f"not supported: {why}"
    return f"⚠️ _{escape_md(body)}_ **[{escape_md(label)}]**"


def references_markdown(citations: Sequence[Citation], papers: Papers, turn: int = 1) -> list[str]:
    """Numbered references with this turn's anchors, each with its metadata (authors, year, venue,
    link) when the paper has it, and the abstract sentences that back the claims citing it."""
    lines = []
    for c in citations:
        anchor = f'<a id="t{turn}-ref-{c.n}"></a>'
        paper = papers.get(c.paper_id)
        if paper is not None and has_metadata(paper):
            lines.append(f"{c.n}. {anchor}{reference_markdown(paper)}")
        else:
            lines.append(f"{c.n}. {anchor}**{escape_md(c.title)}** <sub>({escape_md(', '.join(c.files))})</sub>")
        for sentence in c.evidence:
            lines.append(f"    > “{escape_md(sentence)}”")
    return lines


def question_notes(standalone: str | None, warnings: Sequence[str]) -> list[str]:
    """What happened to the question: the standalone question a follow-up was rewritten into,
    and the warning when a long question was cut."""
    lines = [f"<sub>Searched as: “{escape_md(standalone)}”</sub>"] if standalone else []
    lines += [f"<sub>⚠️ {escape_md(w)}</sub>" for w in warnings]
    return [*lines, ""] if lines else []


def _sources_by_n(answer: Answer) -> dict[int, Source]:
    return {s.n: s for s in answer.sources}


def answer_markdown(answer: Answer, papers: Papers | None = None, *, turn: int = 1, note: str | None = None) -> str:
    """The final answer for the chat: sentences with their citations, then numbered references
    with the sentence of each abstract that backs the claims.

    ``papers`` (the index's papers by id) gives each reference its authors, year, venue and
    link; without it, or for a paper with no such metadata, the title and corpus files are shown.
    ``turn`` numbers this answer's anchors; ``note`` says how the final check changed what was
    shown while streaming ("refused after checking: ...").
    """
    papers = papers or {}
    head = question_notes(answer.standalone_question, answer.warnings)
    # A reply cut off mid-answer is never shown as complete: the banner comes first, whatever follows.
    if answer.incomplete:
        head = [f"⚠️ **Incomplete answer:** {escape_md(_cut_reason(answer))}", "", *head]
    if note:
        head += [f"**⚠️ {escape_md(note[0].upper() + note[1:])}.**", ""]
    if answer.refused:
        lines = [*head, f"**{escape_md(answer.text.split(' The closest papers are:')[0])}**"]
        if answer.retrieved:
            lines.append("")
            lines.append("Closest papers in the collection:")
            lines += [f"- {escape_md(r.title)}" for r in answer.retrieved[:3]]
        if answer.refusal_reason:
            lines += ["", f"<sub>Why: {escape_md(answer.refusal_reason)}.</sub>"]
        return "\n".join(lines)
    by_n = _sources_by_n(answer)
    parts = [sentence_markdown(s.text, s.citations, s.supported, reason_words(s, by_n), turn) for s in answer.sentences]
    text = "\n".join(f"- {p}" for p in parts) if answer.form == "list" else " ".join(parts)
    lines = [*head, text, "", "**References**", "", *references_markdown(answer.citations, papers, turn)]
    return "\n".join(lines)


def _cut_reason(answer: Answer) -> str:
    why = next((w for w in answer.warnings if w.startswith("the answer is incomplete")), "")
    return why or "the model's reply was cut off; what it wrote before that is verified as usual"


def streaming_markdown(
    raw: str,
    sentences: Sequence[tuple[AnswerSentence, str | None, Sequence[Citation]]] = (),
    *,
    raw_end: int = 0,
    papers: Papers | None = None,
    turn: int = 1,
    head: Sequence[str] = (),
) -> str:
    """The answer while it streams: the sentences verified so far in their final form (with
    their reasons when unsupported, and their references), then the sentence being written,
    dimmed and escaped, with a cursor. ``sentences`` are (sentence, reason, its citations);
    ``raw_end`` is where the verified part of ``raw`` ends."""
    shown = [sentence_markdown(s.text, s.citations, s.supported, reason, turn) for s, reason, _ in sentences]
    tail = raw[raw_end:].strip()
    if tail:
        shown.append(f'<span class="rag-tail">{escape_md(tail)}</span>')
    lines = [*head, " ".join(shown) + " ▍"]
    cited: dict[int, Citation] = {}
    for _, _, citations in sentences:
        for c in citations:  # a later sentence's record of a paper holds all its evidence so far
            cited[c.n] = c
    if cited:
        lines += [
            "",
            "**References**",
            "",
            *references_markdown(sorted(cited.values(), key=lambda c: c.n), papers or {}, turn),
        ]
    return "\n".join(lines)


def plain_text(answer: Answer, papers: Papers | None = None) -> str:
    """Answer and references as plain text, for copying."""
    head = f"[Incomplete answer: {_cut_reason(answer)}]\n\n" if answer.incomplete else ""
    if answer.refused:
        return head + answer.text
    papers = papers or {}
    lines = [head + answer.text, "", "References:"]
    for c in answer.citations:
        paper = papers.get(c.paper_id)
        if paper is not None and has_metadata(paper):
            link = reference_link(paper)
            lines.append(f"[{c.n}] {reference_text(paper)}" + (f" {link}" if link else ""))
        else:
            lines.append(f"[{c.n}] {c.title} ({', '.join(c.files)})")
        lines += [f'    "{e}"' for e in c.evidence]
    if any(not s.supported for s in answer.sentences):
        lines += ["", f"{UNSUPPORTED_MARK} marks a sentence that no source supports."]
    return "\n".join(lines)


def evidence_html(
    sources: Sequence[Source],
    retrieved: Sequence[RetrievedPaper],
    answer: Answer | None = None,
    papers: Papers | None = None,
    *,
    turn: int = 1,
    citations: Sequence[Citation] | None = None,
) -> str:
    """The evidence panel: each retrieved paper, its score, its reference (or corpus files), the
    sentences the model saw; after the answer (or, while it streams, for the ``citations`` of the
    sentences verified so far), which final citation number it got and which sentences back it.
    Card anchors are per ``turn`` (``ev-2-1``)."""
    papers = papers or {}
    if not retrieved:
        return '<div class="ev-empty">No evidence yet. Ask a question to see the papers and sentences it is answered from.</div>'
    cited_as: dict[str, int] = {}
    backing: dict[str, set[str]] = {}
    if citations is None and answer is not None:
        citations = answer.citations
    if citations is not None:
        for c in citations:
            cited_as[c.paper_id] = c.n
            backing[c.paper_id] = set(c.evidence)
    by_id = {s.paper_id: s for s in sources}
    cards = []
    for hit in retrieved:
        src = by_id.get(hit.paper_id)
        n = cited_as.get(hit.paper_id)
        badge = f'<span class="ev-cited">cited as [{n}]</span>' if n else ""
        label = f"Source {src.n}" if src else "Retrieved"
        paper = papers.get(hit.paper_id)
        where = (
            f'<div class="ev-ref">{reference_html(paper)}</div>'
            if paper is not None and has_metadata(paper)
            else f'<div class="ev-files">{html.escape(", ".join(hit.files))}</div>'
        )
        head = (
            f'<div class="ev-head"><span class="ev-label">{label}</span> {badge}'
            f'<span class="ev-score">similarity {hit.dense_score:.2f}</span></div>'
            f'<div class="ev-title">{html.escape(hit.title)}</div>'
            f"{where}"
        )
        sentences = []
        for s in src.sentences if src else ():
            cls = "ev-sent ev-backs" if s.text in backing.get(hit.paper_id, ()) else "ev-sent"
            sentences.append(f'<li class="{cls}">{html.escape(s.text)}</li>')
        body = f'<ul class="ev-sents">{"".join(sentences)}</ul>' if sentences else ""
        if src and src.withheld:
            body += (
                f'<div class="ev-withheld">{len(src.withheld)} sentence(s) of this abstract give instructions '
                "to AI models; they were withheld from the model.</div>"
            )
        anchor = f' id="ev-{turn}-{n}"' if n else ""
        cards.append(f'<div class="ev-card{" ev-is-cited" if n else ""}"{anchor}>{head}{body}</div>')
    return '<div class="ev-panel">' + "".join(cards) + "</div>"


def status_line(answer: Answer | None, *, phase: str = "") -> str:
    """Timings and the model in use, as one line of Markdown."""
    if answer is None:
        return phase
    t = answer.timings
    parts = []
    for key, label in (
        ("retrieve", "retrieval"),
        ("to_evidence", "evidence"),
        ("first_token", "first token"),
        ("first_sentence", "first verified sentence"),
        ("total", "total"),
    ):
        if key in t:
            parts.append(f"{label} {t[key]:.1f} s")
    if "tokens_per_s" in t:
        parts.append(f"{t['tokens_per_s']:.1f} tokens/s")
    if answer.prompt_tokens:
        parts.append(f"prompt {answer.prompt_tokens} tokens")
    verdict = (
        "refused"
        if answer.refused
        else f"{sum(s.supported for s in answer.sentences)}/{len(answer.sentences)} sentences verified"
    )
    if answer.incomplete:
        verdict = f"INCOMPLETE (reply cut off) · {verdict}"
    model = answer.model.replace("`", "'")  # inside a code span nothing else needs escaping
    return f"{verdict} · " + " · ".join(parts) + f" · model `{model}`"

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
from rag.types import Answer, Paper, RetrievedPaper, Source

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


def cite_marks(numbers: Sequence[int]) -> str:
    """Citation markers, bold so they stand out and link to the references below the answer."""
    return "".join(f"**[\\[{n}\\]](#ref-{n})**" for n in numbers)


def answer_markdown(answer: Answer, papers: Papers | None = None) -> str:
    """The final answer for the chat: sentences with their citations, then numbered references
    with the sentence of each abstract that backs the claims.

    ``papers`` (the index's papers by id) gives each reference its authors, year, venue and
    link; without it, or for a paper with no such metadata, the title and corpus files are shown.
    """
    papers = papers or {}
    # A reply cut off mid-answer is never shown as complete: the banner comes first, whatever follows.
    head = [f"⚠️ **Incomplete answer:** {escape_md(_cut_reason(answer))}", ""] if answer.incomplete else []
    if answer.refused:
        lines = [*head, f"**{escape_md(answer.text.split(' The closest papers are:')[0])}**"]
        if answer.retrieved:
            lines.append("")
            lines.append("Closest papers in the collection:")
            lines += [f"- {escape_md(r.title)}" for r in answer.retrieved[:3]]
        if answer.refusal_reason:
            lines += ["", f"<sub>Why: {escape_md(answer.refusal_reason)}.</sub>"]
        return "\n".join(lines)
    parts = []
    for sentence in answer.sentences:
        body = escape_md(sentence.text)
        if sentence.supported:
            parts.append(f"{body} {cite_marks(sentence.citations)}")
        else:
            why = "restates the question" if sentence.verdict == "no-answer" else "not supported by the sources"
            detail = next((i for i in sentence.issues if not i.startswith("restates")), "")
            reason = f"{why}: {detail}" if detail and sentence.verdict != "no-answer" else why
            parts.append(f"⚠️ _{body}_ **[{escape_md(reason)}]**")
    text = "\n".join(f"- {p}" for p in parts) if answer.form == "list" else " ".join(parts)
    lines = [*head, text, "", "**References**", ""]
    for c in answer.citations:
        paper = papers.get(c.paper_id)
        if paper is not None and has_metadata(paper):
            lines.append(f'{c.n}. <a id="ref-{c.n}"></a>{reference_markdown(paper)}')
        else:
            lines.append(
                f'{c.n}. <a id="ref-{c.n}"></a>**{escape_md(c.title)}** <sub>({escape_md(", ".join(c.files))})</sub>'
            )
        for sentence in c.evidence:
            lines.append(f"    > “{escape_md(sentence)}”")
    return "\n".join(lines)


def _cut_reason(answer: Answer) -> str:
    why = next((w for w in answer.warnings if w.startswith("the answer is incomplete")), "")
    return why or "the model's reply was cut off; what it wrote before that is verified as usual"


def streaming_markdown(raw: str) -> str:
    """The model's text while it streams (escaped), with a cursor."""
    return escape_md(raw) + " ▍"


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
) -> str:
    """The evidence panel: each retrieved paper, its score, its reference (or corpus files), the
    sentences the model saw; after the answer, which final citation number it got and which
    sentences back it."""
    papers = papers or {}
    if not retrieved:
        return '<div class="ev-empty">No evidence yet. Ask a question to see the papers and sentences it is answered from.</div>'
    cited_as: dict[str, int] = {}
    backing: dict[str, set[str]] = {}
    if answer is not None:
        for c in answer.citations:
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
        anchor = f' id="ev-{n}"' if n else ""
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

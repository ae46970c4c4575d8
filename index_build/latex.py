"""LaTeX markup of titles, abstracts and names turned into plain Unicode text.

BibTeX exports and the arXiv metadata keep titles and abstracts in LaTeX: accents (``{\\"u}``,
``\\'e``), emphasis (``\\emph{...}``), math (``$\\alpha$-stable``), braces that protect case
(``{BERT}``), escaped specials (``10\\%``). The embedder and the reader should see "ü", "α-stable",
"BERT", "10%". pylatexenc does the decoding; the few macros it renders badly for our purpose
(``\\cite`` as "<cit.>", ``\\href`` crashing on some inputs, ``\\LaTeX`` as nothing) are redefined.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

from rag.text import clean_whitespace

logger = logging.getLogger(__name__)

# Text without any of these characters has no LaTeX markup to decode: the fast path, which
# matters for the arXiv snapshot (millions of abstracts, most without markup).
_MARKUP = re.compile(r"[\\{}$~]|``|''|--")
_FALLBACK_MACRO = re.compile(r"\\[a-zA-Z]+\*?\s*")
# "samples~\cite{x}, and" loses the citation but keeps its space: "samples , and".
_SPACE_BEFORE_PUNCT = re.compile(r"(?<=\S)\s+(?=[,.;:](?:\s|$))")


@lru_cache(maxsize=1)
def _decoder() -> tuple[Any, Any]:
    from pylatexenc import latexwalker, macrospec
    from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, get_default_latex_context_db

    walker_db = latexwalker.get_default_latex_context_db()
    walker_db.add_context_category(
        "abstract-rag",
        prepend=True,
        macros=[
            macrospec.MacroSpec("href", "{{"),
            macrospec.MacroSpec("url", "{"),
            *(macrospec.MacroSpec(name, "*[[{") for name in ("cite", "citep", "citet", "citealp", "citeauthor")),
        ],
    )
    text_db = get_default_latex_context_db()
    text_db.add_context_category(
        "abstract-rag",
        prepend=True,
        macros=[
            MacroTextSpec("href", simplify_repl="%(2)s"),
            MacroTextSpec("url", simplify_repl="%(1)s"),
            *(MacroTextSpec(name, simplify_repl="") for name in ("cite", "citep", "citet", "citealp", "citeauthor")),
            MacroTextSpec("LaTeX", simplify_repl="LaTeX"),
            MacroTextSpec("TeX", simplify_repl="TeX"),
        ],
    )
    return walker_db, LatexNodes2Text(latex_context=text_db, math_mode="text", strict_latex_spaces="macros")


def has_markup(text: str) -> bool:
    return bool(_MARKUP.search(text))


def latex_to_text(text: str) -> str:
    """Plain Unicode text of a LaTeX fragment, whitespace-normalised.

    Only the markup is handed to pylatexenc: the text is cut into plain runs and "islands" (a
    macro with its arguments, a brace group, a math span), and each island is decoded on its own.
    pylatexenc reads a character at a time (~10 ms for a 1,000-character abstract); the islands
    are a few percent of an abstract, which is what makes a 100k-record arXiv file readable in
    reasonable time. Never raises: an island pylatexenc cannot parse loses only its macro names
    and braces.
    """
    if not has_markup(text):
        return clean_whitespace(text)
    out: list[str] = []
    plain_from = 0
    i = 0
    n = len(text)
    while i < n:
        found = _ISLAND_START.search(text, i)
        if found is None:
            break
        i = found.start()
        char = text[i]
        end = None
        if char == "\\":
            end = _macro_end(text, i)
        elif char == "{":
            end = _group_end(text, i)
            if end is None:  # an unbalanced brace: dropped, as LaTeX would complain and go on
                out.append(_plain_run(text[plain_from:i]))
                i += 1
                plain_from = i
                continue
        elif char == "$":
            end = _math_end(text, i)
        if end is None:
            i += 1
            continue
        out.append(_plain_run(text[plain_from:i]))
        out.append(_decode(text[i:end]))
        i = plain_from = end
    out.append(_plain_run(text[plain_from:]))
    return _SPACE_BEFORE_PUNCT.sub("", clean_whitespace("".join(out)))


_ISLAND_START = re.compile(r"[\\{$]")
_PLAIN_REPLACEMENTS = (
    ("---", "\u2014"),
    ("--", "\u2013"),
    ("``", "\u201c"),
    ("''", "\u201d"),
    ("~", "\u00a0"),
    ("}", ""),
)


def _plain_run(text: str) -> str:
    for old, new in _PLAIN_REPLACEMENTS:
        if old in text:
            text = text.replace(old, new)
    return text


def _group_end(text: str, start: int) -> int | None:
    """End (exclusive) of the brace group opening at ``start``; None if it never closes."""
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _math_end(text: str, start: int) -> int | None:
    """End of ``$...$`` or ``$$...$$`` opening at ``start``; None if it never closes."""
    delim = "$$" if text.startswith("$$", start) else "$"
    i = start + len(delim)
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(delim, i):
            return i + len(delim)
        i += 1
    return None


def _macro_end(text: str, start: int) -> int:
    """End of a macro at ``start`` with the ``[...]`` and ``{...}`` arguments that follow it."""
    i = start + 1
    if i >= len(text):
        return i
    if text[i].isalpha():
        while i < len(text) and text[i].isalpha():
            i += 1
        if i < len(text) and text[i] == "*":
            i += 1
    else:
        i += 1  # \%, \&, or an accent: \'e, \"{u}
        if text[i - 1] in "'\"`^~=.uvHcdbtkr" and i < len(text) and text[i] not in " {\\":
            return i + 1
    while True:
        j = i
        while j < len(text) and text[j] in " \t\n":
            j += 1
        if j < len(text) and text[j] in "[{":
            closing = _group_end(text, j) if text[j] == "{" else text.find("]", j)
            if closing is None or closing < 0:
                return i
            i = closing if text[j] == "{" else closing + 1
        else:
            return i


def _decode(fragment: str) -> str:
    from pylatexenc import latexwalker

    walker_db, decoder = _decoder()
    try:
        walker = latexwalker.LatexWalker(fragment, latex_context=walker_db, tolerant_parsing=True)
        nodes, _, _ = walker.get_latex_nodes()
        return str(decoder.nodelist_to_text(nodes))
    except Exception as exc:  # pylatexenc raises many types on odd input; the text still matters
        logger.debug("LaTeX decoding failed (%s); using the crude fallback for %r", exc, fragment[:80])
        return _FALLBACK_MACRO.sub("", fragment).replace("{", "").replace("}", "").replace("$", "").replace("~", " ")

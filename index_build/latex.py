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

    Never raises: input pylatexenc cannot parse falls back to dropping macro names and braces.
    """
    if not has_markup(text):
        return clean_whitespace(text)
    from pylatexenc import latexwalker

    walker_db, decoder = _decoder()
    try:
        walker = latexwalker.LatexWalker(text, latex_context=walker_db, tolerant_parsing=True)
        nodes, _, _ = walker.get_latex_nodes()
        plain = decoder.nodelist_to_text(nodes)
    except Exception as exc:  # pylatexenc raises many types on odd input; the text still matters
        logger.debug("LaTeX decoding failed (%s); using the crude fallback for %r", exc, text[:80])
        plain = _FALLBACK_MACRO.sub("", text).replace("{", "").replace("}", "").replace("$", "").replace("~", " ")
    return _SPACE_BEFORE_PUNCT.sub("", clean_whitespace(plain))

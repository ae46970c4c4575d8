"""DOIs and arXiv ids: normalised forms for de-duplication, and the links they resolve to.

Reference managers write the same identifier in many ways ("https://doi.org/10.1/X",
"doi:10.1/x", "arXiv:1901.11399v2", "arxiv.org/abs/1901.11399", a DOI 10.48550/arXiv.1901.11399
for the preprint itself); these helpers reduce each to one key.
"""

from __future__ import annotations

import re

_DOI = re.compile(r"(10\.\d{4,9}/\S+)", re.IGNORECASE)
_DOI_PREFIX = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:\s*)", re.IGNORECASE)
# New-style ids (0704.0001 ... 2401.12345) and old-style ones (hep-th/9901001, math.GT/0309136).
_NEW_ID = r"\d{4}\.\d{4,5}"
_OLD_ID = r"[a-z][a-z\-]+(?:\.[A-Z]{2})?/\d{7}"
_ARXIV_BARE = re.compile(rf"^(?:arxiv:\s*)?({_NEW_ID}|{_OLD_ID})(?:v\d+)?$", re.IGNORECASE)
_ARXIV_IN_TEXT = re.compile(
    rf"(?:arxiv\.org/(?:abs|pdf)/|arxiv[:.]\s*|10\.48550/arxiv\.)({_NEW_ID}|{_OLD_ID})(?:v\d+)?",
    re.IGNORECASE,
)


def normalize_doi(value: str | None) -> str | None:
    """The DOI in ``value`` (a bare DOI, ``doi:...`` or a doi.org URL), lower-cased; None if none.

    DOIs are case-insensitive by definition, so the lower-cased form is the de-duplication key.
    """
    if not value:
        return None
    text = _DOI_PREFIX.sub("", value.strip())
    match = _DOI.search(text)
    if not match:
        return None
    return match.group(1).rstrip(".,;").lower()


def normalize_arxiv_id(value: str | None) -> str | None:
    """A bare arXiv id without version ("1901.11399", "hep-th/9901001"); None if ``value`` is not one."""
    if not value:
        return None
    text = value.strip()
    match = _ARXIV_BARE.match(text) or _ARXIV_IN_TEXT.search(text)
    if not match:
        return None
    found = match.group(1)
    return found if "/" not in found else found.lower()


def find_arxiv_id(*texts: str | None) -> str | None:
    """The first arXiv id mentioned in any of ``texts`` (a URL, a DOI, "arXiv preprint arXiv:...")."""
    for text in texts:
        if not text:
            continue
        match = _ARXIV_IN_TEXT.search(text)
        if match:
            return normalize_arxiv_id(match.group(1))
    return None


def doi_url(doi: str) -> str:
    return f"https://doi.org/{doi}"


def arxiv_url(arxiv_id: str) -> str:
    return f"https://arxiv.org/abs/{arxiv_id}"

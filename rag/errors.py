"""One error hierarchy for the whole product.

Every error says what was wrong and where it came from (file, line, field, paper id), so
that a user can fix their input without reading a stack trace.
"""

from __future__ import annotations


class RagError(Exception):
    """Base class of every error this product raises on purpose."""


class CorpusError(RagError):
    """A corpus file or record cannot be used (unreadable, wrong encoding, empty, bad field)."""


class IndexNotFoundError(RagError):
    """The index directory is missing or incomplete; the message says how to build it."""


class IndexCorruptError(RagError):
    """The index directory exists but its files cannot be read or disagree with each other."""


class IndexMismatchError(RagError):
    """The index was built with settings (embedding model, chunking, format) other than ours."""


class ModelError(RagError):
    """A model cannot be found, loaded or verified."""


class ConfigError(RagError):
    """A configuration value is invalid; the message names the field."""


class FilterError(RagError):
    """A retrieval filter is malformed, or no paper of the index matches it."""


class LLMServerError(ModelError):
    """The OpenAI-compatible LLM server cannot be used: unreachable, too slow, no such model, or
    it answered with an error status; the message says which, with the server's own words."""


class LLMStreamError(LLMServerError):
    """The server's reply stopped before it was finished (the connection dropped mid-answer)."""


class ContextOverflowError(RagError):
    """A prompt and the answer it asks for do not fit the model's context window (``n_ctx``)."""

"""abstract-rag: offline question answering over paper abstracts with verified citations.

>>> from rag import ask
>>> answer = ask("What does a data filtering network do?")
>>> print(answer.text)
"""

from __future__ import annotations

from rag.answer import (
    Answerer,
    AnswerEvent,
    EvidenceEvent,
    ProgressEvent,
    QuestionError,
    SentenceEvent,
    TokenEvent,
    ask,
)
from rag.config import RagConfig, get_config
from rag.errors import (
    ConfigError,
    CorpusError,
    FilterError,
    IndexCorruptError,
    IndexMismatchError,
    IndexNotFoundError,
    ModelError,
    RagError,
)
from rag.models import enforce_offline
from rag.types import Answer, AnswerSentence, Chunk, Citation, Paper, RetrievedPaper, Source

enforce_offline()

__all__ = [
    "Answer",
    "AnswerEvent",
    "AnswerSentence",
    "Answerer",
    "Chunk",
    "Citation",
    "ConfigError",
    "CorpusError",
    "EvidenceEvent",
    "FilterError",
    "IndexCorruptError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "ModelError",
    "Paper",
    "ProgressEvent",
    "QuestionError",
    "RagConfig",
    "RagError",
    "RetrievedPaper",
    "SentenceEvent",
    "Source",
    "TokenEvent",
    "ask",
    "get_config",
]

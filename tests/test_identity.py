"""Hardening (issue 15): a local embedding model is identified by its files, not its folder name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from index_build.build import build_index
from rag.errors import IndexMismatchError
from rag.models import HashEmbedder, SentenceTransformerEmbedder
from rag.store import open_index, read_embedding_cache


def _model_dir(root: Path, weights: bytes, name: str = "my-model") -> Path:
    """A sentence-transformers folder as far as naming reads it (configs and a weights file)."""
    path = root / name
    (path / "1_Pooling").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"hidden_size": 64}))
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    (path / "model.safetensors").write_bytes(weights)
    (path / "README.md").write_text("a model card does not change the vectors")
    return path


def test_models_in_folders_of_the_same_name_have_different_identities(tmp_path: Path) -> None:
    a = SentenceTransformerEmbedder(str(_model_dir(tmp_path / "a", b"weights of model A")))
    b = SentenceTransformerEmbedder(str(_model_dir(tmp_path / "b", b"weights of model B")))
    assert a.model_path.name == b.model_path.name == "my-model"
    assert a.name != b.name
    assert a.name.startswith("local:my-model@") and len(a.name) == len("local:my-model@") + 16
    same = SentenceTransformerEmbedder(str(_model_dir(tmp_path / "c", b"weights of model A")))
    assert same.name == a.name  # the same files are the same model, wherever they are
    (a.model_path / "README.md").write_text("edited card")
    assert SentenceTransformerEmbedder(str(a.model_path)).name == a.name
    (a.model_path / "config.json").write_text(json.dumps({"hidden_size": 64, "layer_norm_eps": 1e-6}))
    assert SentenceTransformerEmbedder(str(a.model_path)).name != a.name  # a config change is a new model


def test_an_index_of_one_model_does_not_open_with_the_other(tmp_path: Path, small_corpus: Path) -> None:
    a = SentenceTransformerEmbedder(str(_model_dir(tmp_path / "a", b"weights of model A")))
    b = SentenceTransformerEmbedder(str(_model_dir(tmp_path / "b", b"weights of model B")))
    index_dir = tmp_path / "index"
    fake_a = HashEmbedder(name=a.name)  # the vectors of model A, without loading torch
    build_index({"corpus": [small_corpus], "index_dir": index_dir, "progress": False}, embedder=fake_a)
    with pytest.raises(IndexMismatchError, match="rebuild"):
        open_index(index_dir, HashEmbedder(name=b.name))
    assert read_embedding_cache(index_dir, b.name) == {}  # nor does B reuse A's cached vectors
    assert read_embedding_cache(index_dir, a.name)


def test_an_index_named_by_folder_only_asks_for_a_rebuild(tmp_path: Path, small_corpus: Path) -> None:
    model = SentenceTransformerEmbedder(str(_model_dir(tmp_path, b"weights")))
    index_dir = tmp_path / "index"
    build_index(
        {"corpus": [small_corpus], "index_dir": index_dir, "progress": False},
        embedder=HashEmbedder(name="local:my-model"),  # as indexes were named before
    )
    with pytest.raises(IndexMismatchError, match=r"named by its folder only.*rag build --force"):
        open_index(index_dir, HashEmbedder(name=model.name))

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from index_build.build import build_index
from rag.errors import CorpusError, IndexCorruptError, IndexMismatchError, IndexNotFoundError
from rag.models import HashEmbedder
from rag.store import FAISS_FILE, MANIFEST, backup_path, open_index, read_manifest


def config(corpus: Path, index: Path) -> dict:
    return {"corpus": [corpus], "index_dir": index, "progress": False}


@pytest.fixture
def built(small_corpus: Path, tmp_path: Path, fake_embedder: HashEmbedder) -> Path:
    index = tmp_path / "index"
    build_index(config(small_corpus, index), embedder=fake_embedder)
    return index


def test_build_and_reopen_round_trip(small_corpus: Path, tmp_path: Path, fake_embedder: HashEmbedder) -> None:
    index_dir = tmp_path / "index"
    result = build_index(config(small_corpus, index_dir), embedder=fake_embedder)
    assert result.status == "built"
    assert (result.papers, result.corpus.entries, result.corpus.duplicates) == (5, 6, 1)
    assert result.embedded == result.chunks > 0 and result.size_bytes > 0

    index = open_index(index_dir, fake_embedder)
    assert len(index.papers) == 5 and len(index.chunks) == result.chunks
    assert index.faiss_index.ntotal == result.chunks
    manifest = index.manifest
    assert manifest["embedding"] == {"name": fake_embedder.name, "dimension": 64, "max_tokens": 256}
    assert manifest["counts"] == {"papers": 5, "chunks": result.chunks}
    assert manifest["chunking"]["chunk_size"] == 254
    assert len(manifest["corpus_hash"]) == 64

    hits = index.dense_search("thermal images of animals at night OwlSet", 3)
    assert hits[0].chunk.title.startswith("Tiny Owls")
    assert hits[0].score >= hits[-1].score
    # Chunks keep their sentences across the round trip, as offsets into the abstract.
    paper = index.papers[hits[0].chunk.paper_id]
    start, end = hits[0].chunk.sentences[0]
    assert paper.abstract[start:end].startswith("Detecting objects at night")
    assert paper.source_files == ("listing_plain.txt",)


def test_search_caps_k_at_index_size(built: Path, fake_embedder: HashEmbedder) -> None:
    index = open_index(built, fake_embedder)
    hits = index.dense_search("anything", 10_000)
    assert len(hits) == len(index.chunks)
    assert index.dense_search("   ", 3) == []


def test_unchanged_rebuild_embeds_nothing(small_corpus: Path, built: Path, fake_embedder: HashEmbedder) -> None:
    calls = fake_embedder.calls
    again = build_index(config(small_corpus, built), embedder=fake_embedder)
    assert again.status == "up-to-date" and again.embedded == 0
    assert fake_embedder.calls == calls


def test_added_paper_embeds_only_its_chunks(
    small_corpus: Path, built: Path, fake_embedder: HashEmbedder, data_dir: Path
) -> None:
    before = open_index(built, fake_embedder)
    shutil.copy(data_dir / "papers.csv", small_corpus / "extra.csv")
    fake_embedder.texts_embedded = 0
    result = build_index(config(small_corpus, built), embedder=fake_embedder)
    assert result.status == "built" and result.papers == 6
    new_chunks = result.chunks - len(before.chunks)
    assert result.embedded == fake_embedder.texts_embedded == new_chunks >= 1
    hits = open_index(built, fake_embedder).dense_search("protected bicycle lanes car traffic", 1)
    assert hits[0].chunk.title == "Bicycle Lanes and City Traffic"


def test_force_reembeds_everything(small_corpus: Path, built: Path, fake_embedder: HashEmbedder) -> None:
    result = build_index(config(small_corpus, built), embedder=fake_embedder, force=True)
    assert result.status == "built" and result.embedded == result.chunks


class ExplodingEmbedder(HashEmbedder):
    def embed(self, texts):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt("simulated Ctrl-C in the middle of embedding")


def test_interrupted_build_keeps_previous_index(
    small_corpus: Path, built: Path, fake_embedder: HashEmbedder, data_dir: Path
) -> None:
    manifest_before = read_manifest(built)
    shutil.copy(data_dir / "papers.csv", small_corpus / "extra.csv")
    with pytest.raises(KeyboardInterrupt):
        build_index(config(small_corpus, built), embedder=ExplodingEmbedder(name=fake_embedder.name))
    assert read_manifest(built) == manifest_before
    assert len(open_index(built, fake_embedder).papers) == 5
    assert [p.name for p in built.parent.iterdir() if ".tmp-" in p.name] == []


def test_crash_between_renames_restores_previous(small_corpus: Path, built: Path, fake_embedder: HashEmbedder) -> None:
    built.rename(backup_path(built))  # as if killed after moving the old index aside
    index = open_index(built, fake_embedder)  # read where it lies; readers never move it
    assert len(index.papers) == 5 and backup_path(built).exists()
    build_index(config(small_corpus, built), embedder=fake_embedder)  # a build puts it back
    assert built.is_dir() and not backup_path(built).exists()


def test_stale_temp_dir_from_killed_build_is_removed(
    small_corpus: Path, built: Path, fake_embedder: HashEmbedder
) -> None:
    stale = built.parent / f".{built.name}.tmp-999999999-abc"
    stale.mkdir()
    (stale / "docstore.json").write_text("{half written")
    build_index(config(small_corpus, built), embedder=fake_embedder)
    assert not stale.exists()


def test_other_embedding_model_is_a_mismatch(built: Path) -> None:
    with pytest.raises(IndexMismatchError, match="fake-hash-64.*fake-hash-32"):
        open_index(built, HashEmbedder(dimension=32))


def test_other_format_version_is_a_mismatch(built: Path, fake_embedder: HashEmbedder) -> None:
    manifest = json.loads((built / MANIFEST).read_text())
    manifest["format_version"] = 99
    (built / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="format 99"):
        open_index(built, fake_embedder)


def test_missing_index_says_how_to_build(tmp_path: Path, fake_embedder: HashEmbedder) -> None:
    with pytest.raises(IndexNotFoundError, match="rag build"):
        open_index(tmp_path / "nowhere", fake_embedder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError, match="no manifest.json"):
        open_index(tmp_path / "empty", fake_embedder)


def test_truncated_faiss_file_is_corrupt(built: Path, fake_embedder: HashEmbedder) -> None:
    path = built / FAISS_FILE
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IndexCorruptError, match="rag build --force"):
        open_index(built, fake_embedder)


def test_count_disagreement_is_corrupt(built: Path, fake_embedder: HashEmbedder) -> None:
    import faiss

    index = faiss.read_index(str(built / FAISS_FILE))
    index.add(np.ones((1, 64), dtype=np.float32))
    faiss.write_index(index, str(built / FAISS_FILE))
    with pytest.raises(IndexCorruptError, match="FAISS holds"):
        open_index(built, fake_embedder)


def test_garbled_manifest_is_corrupt(built: Path, fake_embedder: HashEmbedder) -> None:
    (built / MANIFEST).write_text("{not json")
    with pytest.raises(IndexCorruptError, match="manifest.json cannot be read"):
        open_index(built, fake_embedder)


def test_corrupt_index_is_replaced_by_a_build(small_corpus: Path, built: Path, fake_embedder: HashEmbedder) -> None:
    (built / MANIFEST).write_text("{not json")
    result = build_index(config(small_corpus, built), embedder=fake_embedder)
    assert result.status == "built"
    assert len(open_index(built, fake_embedder).papers) == 5


def test_empty_corpus_builds_nothing(tmp_path: Path, fake_embedder: HashEmbedder) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "empty.txt").write_text("\n\n")
    with pytest.raises(CorpusError):
        build_index(config(corpus, tmp_path / "index"), embedder=fake_embedder)
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_index_types_build_reopen_and_search(
    small_corpus: Path, tmp_path: Path, fake_embedder: HashEmbedder, index_type: str
) -> None:
    index_dir = tmp_path / index_type
    result = build_index({**config(small_corpus, index_dir), "index_type": index_type}, embedder=fake_embedder)
    assert result.index_type == index_type
    index = open_index(index_dir, fake_embedder)
    assert index.manifest["faiss"]["type"] == index_type and index.manifest["index_type"] == index_type
    hits = index.dense_search("thermal images of animals at night OwlSet", 3)
    assert hits[0].chunk.title.startswith("Tiny Owls")
    first = hits[0].chunk.chunk_id
    assert index.chunk_vectors([first]).shape == (1, 64)  # stored vectors can be read back


def test_auto_index_type_follows_collection_size() -> None:
    from rag.faiss_index import FLAT_MAX, HNSW_MAX, choose_index_type

    assert choose_index_type("auto", 10) == "flat"
    assert choose_index_type("auto", FLAT_MAX + 1) == "hnsw"
    assert choose_index_type("auto", HNSW_MAX + 1) == "ivf"
    assert choose_index_type("ivf", 10) == "ivf"


def test_changing_the_index_type_rebuilds(small_corpus: Path, built: Path, fake_embedder: HashEmbedder) -> None:
    result = build_index({**config(small_corpus, built), "index_type": "hnsw"}, embedder=fake_embedder)
    assert result.status == "built" and result.index_type == "hnsw" and result.embedded == 0

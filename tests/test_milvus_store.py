"""The Milvus store against milvus-lite (a local data directory under tmp_path): build, reopen,
search, BM25 and hybrid fusion, filters, incremental add/delete, mismatch errors; and the FAISS
store's BM25 saved at build time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from index_build.build import build_index
from rag.errors import IndexCorruptError, IndexMismatchError, IndexNotFoundError
from rag.milvus_store import COLLECTION, public_uri
from rag.models import HashEmbedder
from rag.retrieve import Retriever
from rag.store import MANIFEST, open_index

pytest.importorskip("milvus_lite")


def config(corpus: Path, index: Path, uri: Path | None = None, **extra: object) -> dict:
    cfg = {"corpus": [corpus], "index_dir": index, "progress": False, **extra}
    if uri is not None:
        cfg.update(store="milvus", milvus_uri=str(uri))
    return cfg


@pytest.fixture
def milvus_built(small_corpus: Path, tmp_path: Path, fake_embedder: HashEmbedder) -> tuple[Path, Path]:
    index, uri = tmp_path / "index", tmp_path / "milvus.db"
    build_index(config(small_corpus, index, uri), embedder=fake_embedder)
    return index, uri


def test_build_reopen_and_search_match_faiss(
    small_corpus: Path, tmp_path: Path, fake_embedder: HashEmbedder, milvus_built: tuple[Path, Path]
) -> None:
    index_dir, uri = milvus_built
    manifest = json.loads((index_dir / MANIFEST).read_text())
    assert manifest["store"] == {"type": "milvus", "uri": str(uri.resolve()), "collection": COLLECTION}
    assert not (index_dir / "default__vector_store.json").exists()  # vectors live in Milvus only

    milvus = open_index(index_dir, fake_embedder)
    build_index(config(small_corpus, tmp_path / "faiss"), embedder=fake_embedder)
    faiss = open_index(tmp_path / "faiss", fake_embedder)
    assert milvus.backend is not None and faiss.backend is None
    assert set(milvus.chunks) == set(faiss.chunks) and milvus.chunks == faiss.chunks
    assert milvus.papers == faiss.papers

    for query in ("thermal images of animals at night OwlSet", "language models", "graph"):
        m, f = milvus.dense_search(query, 5), faiss.dense_search(query, 5)
        assert m[0].chunk.chunk_id == f[0].chunk.chunk_id
        assert np.allclose([h.score for h in m], [h.score for h in f], atol=1e-5)  # ties may swap places
        by_id = {h.chunk.chunk_id: h.score for h in f}
        assert all(abs(by_id[h.chunk.chunk_id] - h.score) < 1e-5 for h in m if h.chunk.chunk_id in by_id)
    ids = sorted(milvus.chunks)[:3]
    assert np.allclose(milvus.chunk_vectors(ids), faiss.chunk_vectors(ids), atol=1e-6)


def test_bm25_through_milvus_full_text_search(milvus_built: tuple[Path, Path], fake_embedder: HashEmbedder) -> None:
    index = open_index(milvus_built[0], fake_embedder)
    retriever = Retriever(index)
    hits = retriever.bm25_search("OwlSet thermal")
    assert hits and hits[0].chunk.title.startswith("Tiny Owls")
    assert all(h.score > 0 for h in hits) and [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert retriever.bm25_search("zzzunknownword") == []
    assert retriever._bm25 is None  # the in-memory BM25 of the FAISS store is never built


def test_hybrid_fusion_and_filters(milvus_built: tuple[Path, Path], fake_embedder: HashEmbedder) -> None:
    index = open_index(milvus_built[0], fake_embedder)
    retriever = Retriever(index)
    found = retriever.search("OwlSet thermal night", 3, mode="hybrid")
    assert found[0].title.startswith("Tiny Owls")
    assert found[0].dense_rank is not None and found[0].bm25_rank is not None
    assert len({p.paper_id for p in found}) == len(found)

    allowed_paper = next(p for p in index.papers.values() if not p.title.startswith("Tiny Owls"))
    filters = {"source": allowed_paper.source_files[0]}
    allowed = retriever.filtered_chunks(filters)
    assert allowed is not None
    for mode in ("hybrid", "dense", "bm25"):
        for paper in retriever.search("OwlSet thermal night images", 5, mode=mode, filters=filters):
            assert {c.chunk_id for c in index.paper_chunks(paper.paper_id)} <= allowed


def test_incremental_build_upserts_changed_and_deletes_removed(
    small_corpus: Path, milvus_built: tuple[Path, Path], fake_embedder: HashEmbedder
) -> None:
    index_dir, uri = milvus_built
    before = open_index(index_dir, fake_embedder)
    again = build_index(config(small_corpus, index_dir, uri), embedder=fake_embedder)
    assert again.status == "up-to-date"

    (small_corpus / "extra.jsonl").write_text(
        json.dumps({"title": "Sparse Owls", "abstract": "We count owls with sparse sensors in the forest. " * 3}) + "\n"
    )
    added = build_index(config(small_corpus, index_dir, uri), embedder=fake_embedder)
    assert (added.status, added.embedded, added.upserted, added.deleted) == ("built", 1, 1, 0)
    index = open_index(index_dir, fake_embedder)
    assert len(index.chunks) == len(before.chunks) + 1
    assert index.dense_search("Sparse Owls sensors", 1)[0].chunk.title == "Sparse Owls"
    # milvus-lite scores BM25 with each segment's own statistics, so the one new chunk's score is
    # not comparable with the others' (README, "Vector store"): it must be found, not ranked first.
    assert "Sparse Owls" in [h.chunk.title for h in Retriever(index).bm25_search("Sparse Owls sensors")]

    (small_corpus / "extra.jsonl").unlink()
    (small_corpus / "listing_furniture.txt").unlink()
    removed = build_index(config(small_corpus, index_dir, uri), embedder=fake_embedder)
    assert removed.embedded == 0 and removed.upserted == 0 and removed.deleted is not None and removed.deleted >= 2
    index = open_index(index_dir, fake_embedder)
    assert len(index.chunks) == removed.chunks
    assert all(p.source_files == ("listing_plain.txt",) for p in index.papers.values())
    assert not [h for h in Retriever(index).bm25_search("Sparse Owls sensors") if h.chunk.title == "Sparse Owls"]


def test_dropped_collection_is_not_found_and_rebuilt(
    small_corpus: Path, milvus_built: tuple[Path, Path], fake_embedder: HashEmbedder
) -> None:
    from pymilvus import MilvusClient

    index_dir, uri = milvus_built
    MilvusClient(str(uri)).drop_collection(COLLECTION)
    with pytest.raises(IndexNotFoundError, match=r"no collection 'rag_chunks'.*rag build --store milvus"):
        open_index(index_dir, fake_embedder)
    result = build_index(config(small_corpus, index_dir, uri), embedder=fake_embedder)
    assert result.status == "built" and result.embedded == 0 and result.upserted == result.chunks
    assert len(open_index(index_dir, fake_embedder).chunks) == result.chunks


def test_other_embedding_model_is_a_mismatch(milvus_built: tuple[Path, Path]) -> None:
    index_dir, _ = milvus_built
    manifest = json.loads((index_dir / MANIFEST).read_text())
    manifest["embedding"]["name"] = "other-model"  # the manifest agrees; the collection does not
    (index_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match=r"holds embeddings of model 'fake-hash-64'.*'other-model'"):
        open_index(index_dir, HashEmbedder(dimension=64, max_tokens=256, name="other-model"))


def test_count_disagreement_is_corrupt(milvus_built: tuple[Path, Path], fake_embedder: HashEmbedder) -> None:
    from pymilvus import MilvusClient

    index_dir, uri = milvus_built
    client = MilvusClient(str(uri))
    first = client.query(COLLECTION, filter="", output_fields=["id"], limit=1)[0]["id"]
    client.delete(COLLECTION, ids=[first])
    client.close()
    with pytest.raises(IndexCorruptError, match=r"holds \d+ chunks, the manifest says \d+"):
        open_index(index_dir, fake_embedder)


def test_missing_local_data_says_how_to_build(
    milvus_built: tuple[Path, Path], tmp_path: Path, fake_embedder: HashEmbedder
) -> None:
    index_dir, uri = milvus_built
    uri.rename(tmp_path / "moved.db")
    with pytest.raises(IndexNotFoundError, match=r"milvus-lite data at .* is missing: run `rag build --store milvus"):
        open_index(index_dir, fake_embedder)


def test_uri_credentials_never_reach_the_manifest() -> None:
    assert public_uri("https://root:Milvus@db.example.org:19530/x?token=abc&db=papers") == (
        "https://db.example.org:19530/x?db=papers"
    )
    assert public_uri("/data/rag.milvus.db") == "/data/rag.milvus.db"


def test_faiss_store_saves_bm25_at_build_time(
    small_corpus: Path, tmp_path: Path, fake_embedder: HashEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rag.bm25

    index_dir = tmp_path / "index"
    build_index(config(small_corpus, index_dir), embedder=fake_embedder)
    assert (index_dir / "bm25" / "retriever.json").is_file()
    index = open_index(index_dir, fake_embedder)

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("BM25 was rebuilt at question time")

    monkeypatch.setattr(rag.bm25, "build_bm25", no_rebuild)
    hits = Retriever(index).bm25_search("OwlSet thermal")
    assert hits and hits[0].chunk.title.startswith("Tiny Owls")


@pytest.mark.slow
def test_gold_recall_through_milvus_equals_faiss(real_index, real_embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The held-out-style check of `rag eval --retrieval-only`: the bundled corpus with MiniLM, every
    answerable gold question, recall@4 and @10 of hybrid retrieval through both stores."""
    import shutil

    from eval.gold import load_split
    from eval.metrics import recall_at_k
    from rag.config import BUNDLED_CORPUS

    index_dir = tmp_path / "index"
    shutil.copytree(real_index.index_dir, index_dir)  # its embedding cache: nothing is re-embedded
    cfg = {"corpus": [BUNDLED_CORPUS], "index_dir": index_dir, "progress": False}
    result = build_index({**cfg, "store": "milvus", "milvus_uri": str(tmp_path / "m.db")}, embedder=real_embedder)
    assert result.embedded == 0 and result.upserted == result.chunks
    milvus = Retriever(open_index(index_dir, real_embedder))
    faiss = Retriever(real_index)
    items = [i for split in ("dev", "test") for i in load_split(split, real_index.papers) if i.answerable]
    assert len(items) > 50
    for k in (4, 10):
        recalls = []
        for retriever in (faiss, milvus):
            found = [[p.paper_id for p in retriever.search(i.question, k)] for i in items]
            recalls.append(sum(recall_at_k(f, set(i.gold_ids), k) for f, i in zip(found, items, strict=True)))
        assert recalls[0] == pytest.approx(recalls[1]), f"recall@{k}: FAISS {recalls[0]}, Milvus {recalls[1]}"

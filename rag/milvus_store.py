"""Milvus as the vector store and BM25 engine of an index (``rag build --store milvus``).

Vectors, chunk text and metadata go into one Milvus collection through llama-index's
``MilvusVectorStore``; BM25 is Milvus's built-in full-text function on the text field, so
hybrid retrieval needs no in-memory BM25 index. The same code talks to milvus-lite (a local
``.db`` path, embedded, what the tests use) and to Milvus Standalone / Distributed or Zilliz
Cloud (an ``http(s)://`` URI): moving to a cluster is a change of URI.

The index directory keeps ``manifest.json`` (store type, URI without credentials, collection),
``papers.jsonl`` and the embedding cache; the collection records the embedding model in its
properties, so opening checks collection, dimension, count and model like the FAISS path.
Credentials come from ``RAG_MILVUS_TOKEN`` (or the URI given at build/open time) and are never
written or logged.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from rag.errors import IndexCorruptError, IndexMismatchError, IndexNotFoundError
from rag.faiss_index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, IVF_NPROBE, choose_index_type, ivf_lists

logger = logging.getLogger(__name__)

STORE_TYPES = ("faiss", "milvus")
COLLECTION = "rag_chunks"
ENV_URI = "RAG_MILVUS_URI"
ENV_TOKEN = "RAG_MILVUS_TOKEN"
PROP_MODEL = "rag.embedding_model"
PROP_INDEX = "rag.index"
HASH_FIELD = "content_hash"  # of the chunk's embedded text and metadata: what decides an upsert
TEXT_FIELD = "text"
# BM25 reads the text the FAISS path's BM25 indexes (the chunk with its title, llama-index's
# MetadataMode.EMBED content), pre-analysed into terms (see ANALYZER below).
SEARCH_FIELD = "search_text"
DENSE_FIELD = "embedding"
SPARSE_FIELD = "sparse_embedding"
_SECRET_PARAMS = {"token", "password", "secret", "api_key", "apikey"}
_BATCH = 1000
# BM25 sees pre-analysed text: the words of the chunk (with its title) as the FAISS store's BM25
# (bm25s) analyses them -- lowercased, English stop words removed, Snowball-stemmed with
# PyStemmer -- joined by spaces, and Milvus's "standard" tokenizer only splits them again. So both
# stores rank with the same terms, and the ranking does not depend on which analyzers a Milvus
# deployment offers (milvus-lite 3.2 has only "standard" and "jieba", no stemmer). k1 and b are
# bm25s's defaults too (Milvus's default k1 is 1.2).
ANALYZER = {"tokenizer": "standard"}
BM25_PARAMS = {"bm25_k1": 1.5, "bm25_b": 0.75}


def bm25_terms(texts: Sequence[str]) -> list[str]:
    """Each text as the space-joined terms BM25 indexes (see ``ANALYZER``)."""
    import bm25s
    import Stemmer

    tokens = bm25s.tokenize(
        list(texts),
        stopwords="english",
        stemmer=Stemmer.Stemmer("english"),
        return_ids=False,
        show_progress=False,
    )
    return [" ".join(t) for t in tokens]


def is_local(uri: str) -> bool:
    """A milvus-lite path (embedded) rather than a server URI."""
    return "://" not in uri


def default_uri(index_dir: Path) -> str:
    """milvus-lite's data directory beside the index directory (not inside it: builds replace
    the index directory whole, while the collection is updated in place)."""
    return str(index_dir.resolve().parent / f"{index_dir.name}.milvus.db")


def resolve_uri(uri: str | None, index_dir: Path) -> str:
    """The URI to use: given, else ``$RAG_MILVUS_URI``, else the local default; local paths absolute."""
    uri = uri or os.environ.get(ENV_URI) or default_uri(index_dir)
    return str(Path(uri).expanduser().resolve()) if is_local(uri) else uri


def public_uri(uri: str) -> str:
    """The URI without credentials (user:password@ and token-like query parameters), for the
    manifest and for messages."""
    if is_local(uri):
        return uri
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() not in _SECRET_PARAMS])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _credentials(uri: str) -> tuple[str, str]:
    """(uri without user:password, token) for the client: ``$RAG_MILVUS_TOKEN`` or the URI's user info."""
    token = os.environ.get(ENV_TOKEN, "")
    if is_local(uri):
        return uri, token
    parts = urlsplit(uri)
    if parts.username and not token:
        token = f"{parts.username}:{parts.password or ''}"
    return public_uri(uri) if parts.username else uri, token


def index_params(index_type: str, n_vectors: int) -> dict[str, Any]:
    """Milvus index parameters for our index type ("auto" picks by size like FAISS)."""
    kind = choose_index_type(index_type, n_vectors)
    if kind == "flat":
        return {"type": "flat", "index_config": {"index_type": "FLAT"}, "search_config": {}}
    if kind == "hnsw":
        return {
            "type": "hnsw",
            "index_config": {"index_type": "HNSW", "params": {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}},
            "search_config": {"ef": HNSW_EF_SEARCH},
        }
    nlist = ivf_lists(n_vectors)
    return {
        "type": "ivf",
        "index_config": {"index_type": "IVF_FLAT", "params": {"nlist": nlist}},
        "search_config": {"nprobe": min(IVF_NPROBE, nlist)},
    }


def _client(uri: str) -> Any:
    from pymilvus import MilvusClient

    address, token = _credentials(uri)
    try:
        return MilvusClient(uri=address, token=token)
    except Exception as exc:  # pymilvus raises MilvusException / grpc errors / OSError
        raise IndexNotFoundError(f"cannot connect to Milvus at {public_uri(uri)}: {exc}") from exc


def vector_store(uri: str, collection: str, dimension: int, params: dict[str, Any], *, overwrite: bool) -> Any:
    """llama-index's ``MilvusVectorStore`` over ``collection`` (created with a BM25 function on
    the text field if missing), upserting by chunk id."""
    from llama_index.vector_stores.milvus import MilvusVectorStore
    from llama_index.vector_stores.milvus.utils import BM25BuiltInFunction
    from pymilvus import DataType

    address, token = _credentials(uri)
    return MilvusVectorStore(
        uri=address,
        token=token,
        collection_name=collection,
        dim=dimension,
        overwrite=overwrite,
        upsert_mode=True,
        similarity_metric="IP",  # inner product on unit vectors = cosine, as with FAISS
        embedding_field=DENSE_FIELD,
        text_key=TEXT_FIELD,
        index_config=params["index_config"],
        search_config=params["search_config"],
        scalar_field_names=["paper_id", SEARCH_FIELD],
        scalar_field_types=[DataType.VARCHAR, DataType.VARCHAR],
        enable_sparse=True,
        sparse_embedding_field=SPARSE_FIELD,
        sparse_index_config=dict(BM25_PARAMS),
        sparse_embedding_function=BM25BuiltInFunction(
            input_field_names=SEARCH_FIELD, output_field_names=SPARSE_FIELD, analyzer_params=ANALYZER
        ),
        use_async_client=False,
    )


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a build changed in the collection."""

    upserted: int
    deleted: int
    total: int


def sync_collection(
    uri: str,
    nodes: Sequence[Any],
    hashes: Sequence[str],
    *,
    dimension: int,
    embed_model: str,
    index_type: str,
    force: bool = False,
    collection: str = COLLECTION,
) -> tuple[dict[str, Any], SyncResult]:
    """Make the collection hold exactly ``nodes`` (llama-index TextNodes with embeddings).

    Only nodes whose id is new or whose ``hashes`` entry changed are upserted; ids no longer
    present are deleted. The collection is recreated when ``force``, when it was made for another
    embedding model or dimension, or when the index type changes. Returns the Milvus index
    parameters in use (for the manifest) and the counts.
    """
    from llama_index.core.schema import MetadataMode

    params = index_params(index_type, len(nodes))
    client = _client(uri)
    exists = collection in client.list_collections()
    recreate = force
    if exists and not force:
        props = client.describe_collection(collection).get("properties") or {}
        if props.get(PROP_MODEL) != embed_model or _dimension(client, collection) != dimension:
            logger.info("collection %s was built for another embedding model: recreating it", collection)
            recreate = True
        elif props.get(PROP_INDEX) != _layout(params):
            logger.info("collection %s has another index type: recreating it", collection)
            recreate = True
    existing = {} if recreate or not exists else _stored_hashes(client, collection)
    store = vector_store(uri, collection, dimension, params, overwrite=recreate)
    client = store.client
    client.alter_collection_properties(
        collection,
        properties={PROP_MODEL: embed_model, PROP_INDEX: _layout(params)},
    )
    wanted = {node.node_id: h for node, h in zip(nodes, hashes, strict=True)}
    changed = [node for node in nodes if existing.get(node.node_id) != wanted[node.node_id]]
    search_texts = bm25_terms([node.get_content(metadata_mode=MetadataMode.EMBED) for node in changed])
    for node, search_text in zip(changed, search_texts, strict=True):
        node.metadata[HASH_FIELD] = wanted[node.node_id]
        node.metadata[SEARCH_FIELD] = search_text
        node.excluded_embed_metadata_keys = [*node.excluded_embed_metadata_keys, HASH_FIELD, SEARCH_FIELD]
        node.excluded_llm_metadata_keys = [*node.excluded_llm_metadata_keys, HASH_FIELD, SEARCH_FIELD]
    for lo in range(0, len(changed), _BATCH):
        store.add(changed[lo : lo + _BATCH])
    gone = sorted(set(existing) - set(wanted))
    for lo in range(0, len(gone), _BATCH):
        client.delete(collection, ids=gone[lo : lo + _BATCH])
    client.flush(collection)
    total = _count(client, collection)
    if total != len(nodes):
        raise IndexCorruptError(
            f"Milvus collection {collection} at {public_uri(uri)} holds {total} chunks after the build, "
            f"expected {len(nodes)}: run `rag build --force`"
        )
    return params, SyncResult(upserted=len(changed), deleted=len(gone), total=total)


def store_settings(uri: str, collection: str = COLLECTION) -> dict[str, Any]:
    """The manifest's ``store`` entry: what a build compares to decide whether it is up to date."""
    return {"type": "milvus", "uri": public_uri(uri), "collection": collection}


def collection_matches(uri: str, count: int, embed_model: str, index_type: str, collection: str = COLLECTION) -> bool:
    """Whether the collection exists with ``count`` chunks of ``embed_model``, indexed as this
    version would index them (False if unreachable)."""
    try:
        client = _client(uri)
        if collection not in client.list_collections():
            return False
        props = client.describe_collection(collection).get("properties") or {}
        return (
            props.get(PROP_MODEL) == embed_model
            and props.get(PROP_INDEX) == _layout(index_params(index_type, count))
            and _count(client, collection) == count
        )
    except Exception as exc:  # unreachable or damaged: the build will say more
        logger.info("Milvus collection %s at %s not usable as is: %s", collection, public_uri(uri), exc)
        return False


def _layout(params: dict[str, Any]) -> str:
    """The collection's index and BM25 analysis, recorded on it: a change means recreating it."""
    bm25 = {"analyzer": ANALYZER, "params": BM25_PARAMS, "terms": "bm25s english stop words + PyStemmer english"}
    return json.dumps({"dense": params["index_config"], "bm25": bm25}, sort_keys=True)


def _dimension(client: Any, collection: str) -> int | None:
    for f in client.describe_collection(collection).get("fields", []):
        if f.get("name") == DENSE_FIELD:
            return int((f.get("params") or {}).get("dim", 0)) or None
    return None


def _count(client: Any, collection: str) -> int:
    client.load_collection(collection)
    rows = client.query(collection, filter="", output_fields=["count(*)"])
    return int(rows[0]["count(*)"])


class _NoSessionTsWarning(logging.Filter):
    """milvus-lite has no MVCC timestamps; pymilvus warns on every iterator there, harmlessly."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


class _NoUnimplementedRpcError(logging.Filter):
    """milvus-lite's in-process gRPC server lacks AllocTimestamp, which pymilvus calls while waiting
    for an index and then does without; its server logs a traceback for each call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[0] is NotImplementedError)


logging.getLogger("pymilvus.orm.iterator").addFilter(_NoSessionTsWarning())
logging.getLogger("grpc._server").addFilter(_NoUnimplementedRpcError())


def _iterate(client: Any, collection: str, fields: list[str]) -> Iterable[dict[str, Any]]:
    client.load_collection(collection)
    it = client.query_iterator(collection, batch_size=_BATCH, filter="", output_fields=fields)
    try:
        while batch := it.next():
            yield from batch
    finally:
        it.close()


def _stored_hashes(client: Any, collection: str) -> dict[str, str]:
    return {str(row["id"]): str(row.get(HASH_FIELD) or "") for row in _iterate(client, collection, ["id", HASH_FIELD])}


def _quoted(values: Iterable[str]) -> str:
    return "[" + ",".join(json.dumps(v) for v in values) + "]"


class MilvusBackend:
    """Dense search, BM25 and stored vectors of an opened index, served by a Milvus collection."""

    def __init__(self, client: Any, collection: str, uri: str, search_config: dict[str, Any]) -> None:
        self.client = client
        self.collection = collection
        self.uri = uri
        self.search_config = search_config
        self._paper_of: dict[str, str] = {}

    def set_chunks(self, paper_of: dict[str, str]) -> None:
        self._paper_of = paper_of

    def _filter(self, chunk_ids: Collection[str] | None) -> str:
        """A Milvus expression for a chunk subset, by paper id: a metadata filter selects whole
        papers, and there are fewer paper ids than chunk ids to send."""
        if chunk_ids is None:
            return ""
        papers = sorted({self._paper_of[c] for c in chunk_ids if c in self._paper_of})
        return f"paper_id in {_quoted(papers)}"

    def _hits(self, result: Any, chunk_ids: Collection[str] | None) -> list[tuple[str, float]]:
        out = []
        for hit in result[0] if result else []:
            cid = str(hit["id"])
            if chunk_ids is None or cid in chunk_ids:
                out.append((cid, float(hit["distance"])))
        return out

    def dense(self, vector: np.ndarray, k: int, chunk_ids: Collection[str] | None = None) -> list[tuple[str, float]]:
        """Top ``k`` (chunk id, cosine) by inner product, optionally within ``chunk_ids``."""
        result = self.client.search(
            self.collection,
            data=[np.asarray(vector, dtype=np.float32).tolist()],
            anns_field=DENSE_FIELD,
            limit=k,
            filter=self._filter(chunk_ids),
            output_fields=["id"],
            search_params={"metric_type": "IP", "params": self.search_config},
        )
        return self._hits(result, chunk_ids)

    def bm25(self, query: str, k: int, chunk_ids: Collection[str] | None = None) -> list[tuple[str, float]]:
        """Top ``k`` (chunk id, BM25 score) by Milvus's full-text search, zero scores dropped.

        milvus-lite reports BM25 as a negative distance (smaller is better), Milvus servers as a
        positive score; ranks are the same, and the magnitude is the BM25 score either way.
        """
        terms = bm25_terms([query])[0]
        if not terms:
            return []
        result = self.client.search(
            self.collection,
            data=[terms],
            anns_field=SPARSE_FIELD,
            limit=k,
            filter=self._filter(chunk_ids),
            output_fields=["id"],
            search_params={"metric_type": "BM25", "params": {}},
        )
        return [(cid, abs(score)) for cid, score in self._hits(result, chunk_ids) if score != 0.0]

    def vectors(self, chunk_ids: list[str]) -> np.ndarray:
        """Stored vectors of the chunks, in the given order, shape (len(chunk_ids), dimension)."""
        if not chunk_ids:
            return np.zeros((0, 0), dtype=np.float32)
        rows = self.client.get(self.collection, ids=list(chunk_ids), output_fields=["id", DENSE_FIELD])
        by_id = {str(r["id"]): r[DENSE_FIELD] for r in rows}
        return np.asarray([by_id[c] for c in chunk_ids], dtype=np.float32)


def open_collection(
    manifest: dict[str, Any], where: Path, embed_model: str, dimension: int
) -> tuple[MilvusBackend, Any, list[tuple[str, str, dict[str, Any]]]]:
    """Connect to the manifest's collection, check it, and read its chunks.

    Returns the backend, llama-index's ``MilvusVectorStore`` over the collection, and
    (chunk id, text, metadata) for every stored chunk.

    Raises:
        IndexNotFoundError: Milvus unreachable, or the collection is missing.
        IndexMismatchError: the collection holds another embedding model or dimension.
        IndexCorruptError: its count disagrees with the manifest.
    """
    from llama_index.core.vector_stores.utils import metadata_dict_to_node

    store = manifest.get("store") or {}
    recorded = str(store.get("uri", ""))
    env = os.environ.get(ENV_URI)
    uri = env if env and public_uri(env) == recorded else recorded
    collection = str(store.get("collection", COLLECTION))
    hint = f"run `rag build --store milvus --milvus-uri {recorded}`"
    if is_local(uri) and not Path(uri).exists():
        raise IndexNotFoundError(f"{where}: the milvus-lite data at {uri} is missing: {hint}")
    client = _client(uri)
    try:
        collections = client.list_collections()
    except Exception as exc:
        raise IndexNotFoundError(f"{where}: cannot reach Milvus at {recorded}: {exc}") from exc
    if collection not in collections:
        raise IndexNotFoundError(f"{where}: Milvus at {recorded} has no collection {collection!r}: {hint}")
    props = client.describe_collection(collection).get("properties") or {}
    dim = _dimension(client, collection)
    if props.get(PROP_MODEL) != embed_model or dim != dimension:
        raise IndexMismatchError(
            f"{where}: Milvus collection {collection!r} at {recorded} holds embeddings of model "
            f"{props.get(PROP_MODEL)!r} (dimension {dim}), but the configured model is {embed_model!r} "
            f"(dimension {dimension}); rebuild with `rag build --store milvus --force` or configure the same model"
        )
    expected = (manifest.get("counts") or {}).get("chunks")
    total = _count(client, collection)
    if total != expected:
        raise IndexCorruptError(
            f"{where}: Milvus collection {collection!r} at {recorded} holds {total} chunks, the manifest says "
            f"{expected} (another build changed it, or one was interrupted): {hint}"
        )
    rows = []
    for row in _iterate(client, collection, ["id", TEXT_FIELD, "_node_content", "_node_type"]):
        node = metadata_dict_to_node({"_node_content": row["_node_content"], "_node_type": row["_node_type"]})
        rows.append((str(row["id"]), str(row[TEXT_FIELD]), dict(node.metadata)))
    params = manifest.get("milvus") or index_params("flat", total)
    llama_store = vector_store(uri, collection, dimension, params, overwrite=False)
    backend = MilvusBackend(llama_store.client, collection, recorded, dict(params.get("search_config") or {}))
    return backend, llama_store, rows


__all__ = [
    "ANALYZER",
    "COLLECTION",
    "MilvusBackend",
    "STORE_TYPES",
    "default_uri",
    "index_params",
    "collection_matches",
    "open_collection",
    "public_uri",
    "resolve_uri",
    "store_settings",
    "sync_collection",
]

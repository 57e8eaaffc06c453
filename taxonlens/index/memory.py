"""A vector memory over faiss: unit embeddings with a class (leaf index) each, searched by
cosine similarity (inner product), exactly or approximately.

Kinds (:data:`KINDS`): ``flat`` (exact), ``hnsw`` (a graph; ``hnsw_m`` links per vector,
``ef_search`` candidates per query) and ``ivf`` (``n_lists`` k-means cells, ``n_probe``
searched per query). A memory holds label text embeddings (one vector per class) or image
exemplars (several per class); :meth:`VectorMemory.retrieve` returns the best *distinct*
classes either way. :meth:`VectorMemory.save` writes ``index.faiss``, ``labels.npy`` and
``memory.json``; :meth:`VectorMemory.load` memory-maps the index, so a large memory opens at
once and shares pages between processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import nonmember
from pathlib import Path

import numpy as np

from taxonlens.choices import Choice
from taxonlens.errors import DataError


class IndexKind(Choice):
    """The faiss index of a memory (see the module docstring)."""

    what = nonmember("index kind")
    flat = "flat"
    hnsw = "hnsw"
    ivf = "ivf"


#: the index kinds, as a tuple
KINDS = tuple(IndexKind)
INDEX_FILE, LABELS_FILE, META_FILE = "index.faiss", "labels.npy", "memory.json"


def _faiss():
    import faiss

    return faiss


def _unit_rows(x: np.ndarray, what: str) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise DataError(f"{what} must be a 2-D array [N, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{what} hold NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class VectorMemory:
    """A faiss index and the class of every vector.

    Attributes:
        index: the faiss index (inner product over L2-normalised vectors).
        labels: int64 ``[N]``, the class of each stored vector.
        kind: ``flat``, ``hnsw`` or ``ivf``.
        params: the kind's settings (``hnsw_m``, ``ef_search``, ``n_lists``, ``n_probe``).
    """

    index: object
    labels: np.ndarray
    kind: str
    params: dict

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, vectors: np.ndarray, labels: np.ndarray, kind: str = "flat", hnsw_m: int = 32,
              ef_search: int = 64, n_lists: int | None = None, n_probe: int = 16, seed: int = 0) -> VectorMemory:
        """Index ``vectors [N, D]`` (L2-normalised here) with classes ``labels [N]``.

        Args:
            n_lists: IVF cells (default ``4 * sqrt(N)``, at most N / 39 so every cell can train).

        Raises:
            DataError: mismatched shapes, no vectors, non-finite values or an unknown kind.
        """
        faiss = _faiss()
        x = _unit_rows(vectors, "vectors")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(x),) or len(x) == 0:
            raise DataError(f"need one label per vector and at least one vector (got {len(x)} vectors, "
                            f"labels of shape {labels.shape})")
        d = x.shape[1]
        if IndexKind(kind) == IndexKind.flat:
            index, params = faiss.IndexFlatIP(d), {}
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = ef_search
            params = {"hnsw_m": hnsw_m, "ef_search": ef_search}
        else:  # ivf
            lists = n_lists or max(1, min(int(4 * np.sqrt(len(x))), len(x) // 39))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            index.train(x)
            index.nprobe = min(n_probe, lists)
            params = {"n_lists": lists, "n_probe": int(index.nprobe)}
        index.add(x)
        return cls(index, labels, kind, params)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors of each query ``[B, D]``: cosine similarities and
        row ids, two ``[B, k]`` arrays, nearest first (id -1 where fewer exist)."""
        q = _unit_rows(queries, "queries")
        if q.shape[1] != self.dim:
            raise DataError(f"queries have {q.shape[1]} dimensions, the memory {self.dim}")
        scores, ids = self.index.search(q, min(k, len(self)))
        return scores, ids

    def retrieve(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best distinct classes of each query: ``(classes [B, k], scores [B, k])``, a
        class scored by its nearest stored vector; -1 / -inf pad where fewer classes are found.
        Searches deeper (up to the whole memory) until ``k`` distinct classes are found."""
        n_queries = len(np.atleast_2d(queries))
        classes = np.full((n_queries, k), -1, dtype=np.int64)
        best = np.full((n_queries, k), -np.inf, dtype=np.float32)
        depth = k
        todo = np.arange(n_queries)
        while len(todo):
            depth = min(depth, len(self))
            scores, ids = self.search(np.atleast_2d(queries)[todo], depth)
            unfinished = []
            for row, (s, i) in enumerate(zip(scores, ids)):
                seen: dict[int, float] = {}
                for score, idx in zip(s, i):
                    if idx >= 0 and int(self.labels[idx]) not in seen:
                        seen[int(self.labels[idx])] = float(score)
                found = list(seen.items())[:k]
                if len(found) < k and depth < len(self):
                    unfinished.append(todo[row])
                    continue
                q = todo[row]
                classes[q, : len(found)] = [c for c, _ in found]
                best[q, : len(found)] = [v for _, v in found]
            todo, depth = np.asarray(unfinished, dtype=np.int64), depth * 4
        return classes, best

    def save(self, directory: str | Path) -> Path:
        """Write ``index.faiss``, ``labels.npy`` and ``memory.json`` under ``directory``."""
        faiss = _faiss()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(directory / INDEX_FILE))
        np.save(directory / LABELS_FILE, self.labels)
        (directory / META_FILE).write_text(json.dumps({"kind": self.kind, "params": self.params, "size": len(self),
                                                       "dim": self.dim}, indent=1) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> VectorMemory:
        """Open a saved memory (the index memory-mapped unless ``mmap=False``).

        Raises:
            DataError: missing or unreadable files, or files that disagree.
        """
        faiss = _faiss()
        directory = Path(directory)
        missing = [f for f in (INDEX_FILE, LABELS_FILE, META_FILE) if not (directory / f).is_file()]
        if missing:
            raise DataError(f"{directory} is not a saved memory: missing {', '.join(missing)} "
                            "(write one with `taxonlens index build`)")
        try:
            meta = json.loads((directory / META_FILE).read_text())
            flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
            index = faiss.read_index(str(directory / INDEX_FILE), flags)
            labels = np.load(directory / LABELS_FILE)
        except (RuntimeError, ValueError, OSError) as e:
            raise DataError(f"{directory}: the memory could not be read ({str(e).splitlines()[0]})") from None
        if len(labels) != index.ntotal:
            raise DataError(f"{directory}: {index.ntotal} vectors but {len(labels)} labels")
        if meta["kind"] == "hnsw":
            index.hnsw.efSearch = meta["params"]["ef_search"]
        elif meta["kind"] == "ivf":
            index.nprobe = meta["params"]["n_probe"]
        return cls(index, labels.astype(np.int64), meta["kind"], meta["params"])


def recall_at_k(memory: VectorMemory, exact: VectorMemory, queries: np.ndarray, k: int = 10) -> float:
    """Share of the exact ``k`` nearest vectors that ``memory`` also returns among its ``k``."""
    _, got = memory.search(queries, k)
    _, truth = exact.search(queries, k)
    hits = sum(len(set(g[g >= 0]) & set(t[t >= 0])) for g, t in zip(got, truth))
    return hits / max(1, int((truth >= 0).sum()))

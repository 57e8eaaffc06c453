"""Vector memory at scale: build time, query latency and recall@k of exact and approximate
faiss indexes over unit vectors shaped like photo embeddings of a taxonomy (families, species,
photos), queried with held-out photos of the stored species."""

from __future__ import annotations

import numpy as np

from taxonlens.bench import timed
from taxonlens.index import VectorMemory, recall_at_k


def clustered_vectors(n: int, dim: int, n_clusters: int, seed: int = 0, per_group: int = 10) -> np.ndarray:
    """``[n, dim]`` float32 unit vectors shaped like photo embeddings of a taxonomy: ``n_clusters``
    broad groups (families), species centres around them, and ``per_group`` photos around each
    species centre, so a vector's nearest neighbours are mostly its own species; built in chunks."""
    rng = np.random.default_rng(seed)
    families = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    n_species = max(1, n // per_group)
    species = families[rng.integers(0, n_clusters, n_species)] + 0.6 * rng.standard_normal((n_species, dim),
                                                                                             dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        x = species[rng.integers(0, n_species, stop - start)] + 0.3 * rng.standard_normal((stop - start, dim),
                                                                                            dtype=np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_index(n: int = 1_000_000, dim: int = 256, queries: int = 200, k: int = 10, kinds: tuple[str, ...] = (
        "flat", "ivf", "hnsw"), hnsw_ef: tuple[int, ...] = (256, 1024), seed: int = 0) -> dict[str, float | int]:
    """Per kind: ``build_s``, ``query_ms`` (per query, in one batch of ``queries``) and
    ``recall_at_k`` against the exact index (HNSW at its default search breadth, 64, then at
    each of ``hnsw_ef``); and the speed-up of each approximate kind over the exact one."""
    photos = clustered_vectors(n + queries, dim, max(16, n // 1000), seed)
    x, q = photos[:n], photos[n:]  # the queries: held-out photos of the stored species
    labels = np.arange(n)
    out: dict[str, float | int] = {"vectors": n, "dim": dim, "queries": queries, "k": k}
    exact = None
    for kind in kinds:
        mem, build = timed(lambda kind=kind: VectorMemory.build(x, labels, kind=kind, n_lists=1024, hnsw_m=16))
        _, query = timed(lambda mem=mem: mem.search(q, k), repeats=2)
        exact = exact or (mem if kind == "flat" else VectorMemory.build(x, labels))
        out[f"{kind}_build_s"] = build
        out[f"{kind}_query_ms"] = 1000 * query / queries
        out[f"{kind}_recall_at_{k}"] = recall_at_k(mem, exact, q, k)
        if kind == "hnsw":  # the search breadth trades latency for recall: measure a few
            for ef in hnsw_ef:
                mem.index.hnsw.efSearch = ef
                _, query = timed(lambda mem=mem: mem.search(q, k), repeats=2)
                out[f"hnsw_ef{ef}_query_ms"] = 1000 * query / queries
                out[f"hnsw_ef{ef}_recall_at_{k}"] = recall_at_k(mem, exact, q, k)
    for kind in kinds:
        if kind != "flat" and "flat_query_ms" in out:
            out[f"{kind}_speedup"] = out["flat_query_ms"] / out[f"{kind}_query_ms"]
    return out

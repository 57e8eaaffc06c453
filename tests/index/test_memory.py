"""Vector memory: exact search agrees with numpy, approximate kinds reach high recall,
distinct-class retrieval, save/load (memory-mapped), and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from taxonlens.errors import DataError
from taxonlens.index import KINDS, VectorMemory, recall_at_k


def _clustered(n_classes: int, per_class: int, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    x = np.repeat(centres, per_class, axis=0) + 0.3 * rng.normal(size=(n_classes * per_class, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(n_classes), per_class)


def test_flat_search_equals_numpy():
    x, y = _clustered(50, 4)
    q = x[::7] + 0.01
    mem = VectorMemory.build(x, y)
    scores, ids = mem.search(q, 5)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ x.T
    assert np.array_equal(ids, np.argsort(-sims, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(scores, np.sort(sims, axis=1)[:, ::-1][:, :5], atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_reach_high_recall(kind):
    x, y = _clustered(200, 20, seed=1)
    q, _ = _clustered(200, 1, seed=2)
    exact, approx = VectorMemory.build(x, y), VectorMemory.build(x, y, kind=kind)
    assert recall_at_k(approx, exact, q, k=10) >= 0.9
    assert recall_at_k(exact, exact, q, k=10) == 1.0


def test_retrieve_returns_distinct_classes_scored_by_their_nearest_vector():
    x, y = _clustered(30, 5, seed=3)
    mem = VectorMemory.build(x, y)
    q = x[[0, 77]]
    classes, scores = mem.retrieve(q, 4)
    sims = q @ x.T
    for row in range(2):
        best = {c: sims[row][y == c].max() for c in range(30)}
        expected = sorted(best, key=lambda c: -best[c])[:4]
        assert classes[row].tolist() == expected
        np.testing.assert_allclose(scores[row], [best[c] for c in expected], atol=1e-5)
    all_classes, _ = mem.retrieve(q[:1], 40)  # more than exist: padded
    assert sorted(all_classes[0][:30].tolist()) == list(range(30)) and (all_classes[0][30:] == -1).all()


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip(tmp_path, kind):
    x, y = _clustered(60, 10, seed=4)
    mem = VectorMemory.build(x, y, kind=kind)
    mem.save(tmp_path / "m")
    for mmap in (True, False):
        again = VectorMemory.load(tmp_path / "m", mmap=mmap)
        assert again.kind == kind and again.params == mem.params and len(again) == len(mem)
        for a, b in zip(again.search(x[:9], 3), mem.search(x[:9], 3)):
            np.testing.assert_array_equal(a, b)


def test_errors(tmp_path):
    x, y = _clustered(5, 2)
    with pytest.raises(DataError, match="one label per vector"):
        VectorMemory.build(x, y[:-1])
    with pytest.raises(DataError, match="unknown index kind"):
        VectorMemory.build(x, y, kind="lsh")
    with pytest.raises(DataError, match="NaN"):
        VectorMemory.build(np.full_like(x, np.nan), y)
    mem = VectorMemory.build(x, y)
    with pytest.raises(DataError, match="queries have 8 dimensions, the memory 32"):
        mem.search(np.ones((1, 8)), 2)
    with pytest.raises(DataError, match="missing index.faiss, labels.npy, memory.json"):
        VectorMemory.load(tmp_path)
    mem.save(tmp_path / "m")
    (tmp_path / "m" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(DataError, match="could not be read"):
        VectorMemory.load(tmp_path / "m")

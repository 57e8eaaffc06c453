"""Nearest-neighbour classification over any features (raw pixels as a baseline,
encoder embeddings for few-shot memories)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image


def pixel_features(images: Iterable[Image.Image], side: int = 16) -> np.ndarray:
    """Raw-pixel features: each image resized to ``side x side`` RGB, flattened,
    centred and L2-normalised. Returns float32 ``[N, 3 * side * side]``."""
    rows = [np.asarray(img.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), np.float32).ravel()
            for img in images]
    x = np.stack(rows) / 255.0
    x -= x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


class KNNClassifier:
    """k-nearest-neighbour classifier by cosine similarity, scikit-learn style.

    ``predict_proba`` gives each class the share of the ``k`` nearest neighbours'
    votes (weighted by a softmax of their similarity / ``temperature``).
    """

    def __init__(self, k: int = 1, temperature: float = 0.05):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.temperature = k, temperature

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int | None = None) -> KNNClassifier:
        """Remember features ``x [N, D]`` (L2-normalised) with class ids ``y [N]``."""
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"need as many labels as feature rows (got {len(x)} rows, {len(y)} labels)")
        self.x_, self.y_ = np.asarray(x, np.float32), np.asarray(y, np.int64)
        self.n_classes_ = int(n_classes if n_classes is not None else self.y_.max() + 1)
        return self

    def kneighbors(self, x: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarity and index (into the fitted rows) of the ``k`` nearest
        neighbours of each row of ``x [M, D]``, nearest first: two ``[M, k]`` arrays."""
        sim = np.asarray(x, np.float32) @ self.x_.T
        k = min(k or self.k, sim.shape[1])
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top_sim = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        return np.take_along_axis(top_sim, order, axis=1), np.take_along_axis(top, order, axis=1)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """float32 ``[M, n_classes]`` class probabilities for features ``x [M, D]``."""
        top_sim, top = self.kneighbors(x)
        w = np.exp((top_sim - top_sim[:, :1]) / self.temperature)
        w /= w.sum(axis=1, keepdims=True)
        proba = np.zeros((len(x), self.n_classes_), np.float32)
        np.add.at(proba, (np.arange(len(x))[:, None], self.y_[top]), w)
        return proba

    def predict(self, x: np.ndarray) -> np.ndarray:
        """int64 ``[M]`` most probable class of each row of ``x``."""
        return self.predict_proba(x).argmax(axis=1)

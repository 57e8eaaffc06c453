"""Nearest-neighbour classifier and raw-pixel features on hand-made cases."""

import numpy as np
import pytest
from PIL import Image

from taxonlens.recognize.knn import KNNClassifier, pixel_features


def _unit(rows):
    x = np.asarray(rows, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_one_nearest_neighbour_by_cosine():
    x = _unit([[1, 0], [0, 1], [1, 1]])
    knn = KNNClassifier(k=1).fit(x, np.array([0, 1, 2]))
    assert knn.predict(_unit([[0.9, 0.1], [0.1, 0.9], [0.6, 0.5]])).tolist() == [0, 1, 2]


def test_kneighbors_sorted_and_votes_weighted():
    x = _unit([[1, 0], [0.9, 0.1], [0, 1]])
    knn = KNNClassifier(k=3, temperature=1e3).fit(x, np.array([0, 0, 1]), n_classes=3)
    sim, idx = knn.kneighbors(_unit([[1, 0.05]]))
    assert idx.tolist() == [[0, 1, 2]] and (np.diff(sim) <= 0).all()
    proba = knn.predict_proba(_unit([[1, 0.05]]))
    # a huge temperature makes the vote nearly uniform: 2/3 for class 0, 1/3 for class 1, 0 for class 2
    np.testing.assert_allclose(proba, [[2 / 3, 1 / 3, 0]], atol=1e-3)
    sharp = KNNClassifier(k=3, temperature=1e-3).fit(x, np.array([0, 0, 1]), n_classes=3)
    np.testing.assert_allclose(sharp.predict_proba(_unit([[0, 1]])), [[0, 1, 0]], atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        KNNClassifier(k=0)
    with pytest.raises(ValueError, match="as many labels"):
        KNNClassifier().fit(np.zeros((2, 3)), np.zeros(3))


def test_pixel_features_are_centred_unit_vectors():
    imgs = [Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("L", (10, 10), 128)]
    f = pixel_features(imgs, side=8)
    assert f.shape == (2, 3 * 8 * 8)
    np.testing.assert_allclose(f[0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(f[0]), 1, atol=1e-5)
    assert np.allclose(f[1], 0)  # a flat grey image has no signal left after centring

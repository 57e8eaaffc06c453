"""Raw-pixel features on hand-made images."""

import numpy as np
from PIL import Image

from taxonlens.recognize.pixels import pixel_features


def test_pixel_features_are_centred_unit_vectors():
    imgs = [Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("L", (10, 10), 128)]
    f = pixel_features(imgs, side=8)
    assert f.shape == (2, 3 * 8 * 8)
    np.testing.assert_allclose(f[0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(f[0]), 1, atol=1e-5)
    assert np.allclose(f[1], 0)  # a flat grey image has no signal left after centring

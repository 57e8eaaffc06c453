"""Raw-pixel features: the baseline every learned encoder must beat (and a learnability check
of synthworld)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image


def pixel_features(images: Iterable[Image.Image], side: int = 16) -> np.ndarray:
    """Each image resized to ``side x side`` RGB, flattened, centred and L2-normalised.
    Returns float32 ``[N, 3 * side * side]``."""
    rows = [np.asarray(img.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), np.float32).ravel()
            for img in images]
    x = np.stack(rows) / 255.0
    x -= x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)

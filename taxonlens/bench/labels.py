"""Label-embedding cache: time to embed a large label set once, and to load it afterwards."""

from __future__ import annotations

import tempfile

from taxonlens.bench import timed
from taxonlens.models.encoders import load_encoder
from taxonlens.recognize.zeroshot import ZeroShotClassifier
from taxonlens.synthworld import random_taxonomy


def bench_label_cache(n_labels: int = 100_000, model: str = "tiny-clip", seed: int = 0) -> dict[str, float | int | str]:
    """Seconds to embed the leaves of a random ``n_labels`` taxonomy with ``model``'s text tower
    (taxonomic captions) into an empty cache, and to build the same classifier again from the
    cache; the labels per second of the first, and the ratio of the two."""
    tax = random_taxonomy(n_labels, seed=seed)
    encoder = load_encoder(model, seed=seed)
    with tempfile.TemporaryDirectory() as cache:
        _, build = timed(lambda: ZeroShotClassifier(encoder, tax, cache_dir=cache))
        _, load = timed(lambda: ZeroShotClassifier(encoder, tax, cache_dir=cache))
    return {
        "model": model,
        "labels": tax.n_leaves,
        "embed_dim": encoder.embed_dim,
        "build_s": build,
        "labels_per_s": tax.n_leaves / build,
        "load_from_cache_s": load,
        "build_over_load": build / load,
    }

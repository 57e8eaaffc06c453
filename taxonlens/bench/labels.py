"""Label-embedding cache: time to embed a large label set once, and to load it afterwards."""

from __future__ import annotations

import tempfile

import torch

from taxonlens.bench import timed
from taxonlens.models.encoders import load_encoder
from taxonlens.recognize.labels import taxon_prompts
from taxonlens.recognize.zeroshot import ZeroShotClassifier
from taxonlens.synthworld import random_taxonomy


def bench_label_cache(n_labels: int = 100_000, model: str = "tiny-clip", seed: int = 0,
                      sample: int = 2048) -> dict[str, float | int | str]:
    """Seconds to embed the leaves of a random ``n_labels`` taxonomy with ``model``'s text tower
    (taxonomic captions) into an empty cache, and to build the same classifier again from the
    cache; labels per second of the first, against a plain open_clip loop (tokenize,
    ``encode_text`` in batches of 256) on the first ``sample`` captions, as a ratio."""
    tax = random_taxonomy(n_labels, seed=seed)
    encoder = load_encoder(model, seed=seed)
    captions = [p[0] for p in taxon_prompts(tax, tax.leaves[:sample])]

    def plain() -> None:
        with torch.inference_mode():
            for i in range(0, len(captions), 256):
                encoder.model.encode_text(encoder.tokenizer(captions[i:i + 256]))

    _, plain_s = timed(plain, repeats=2)
    _, ours_s = timed(lambda: encoder.encode_texts(captions), repeats=2)
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
        "plain_open_clip_captions_per_s": len(captions) / plain_s,
        "taxonlens_captions_per_s": len(captions) / ours_s,
        "text_speedup": plain_s / ours_s,
    }

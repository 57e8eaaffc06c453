"""Zero-shot recognition: images scored against the text embeddings of the taxa
at one rank, or at every rank for tree fusion."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from taxonlens.models.encoders import Encoder
from taxonlens.recognize.labels import label_embeddings, taxon_prompts
from taxonlens.taxonomy import Taxonomy


class ZeroShotClassifier:
    """Text-embedding classifier over the taxa at ``rank`` (default: the leaves).

    Args:
        encoder: the image-text model.
        taxonomy: the label tree.
        rank: a rank name or depth; ``None`` for the leaves (then probabilities feed
            :class:`~taxonlens.recognize.decode.TreeDecoder` directly).
        text_type: see :mod:`taxonlens.models.text` (``taxonomic`` by default, as BioCLIP).
        templates: ``photo`` or ``openai`` (average of the 80 ImageNet templates).
        common_names: node id -> common name, for the ``common`` text types.
        embeddings: precomputed label embeddings ``[N, D]`` (e.g. BioCLIP's TreeOfLife file);
            skips the text encoder.
        cache_dir: label-embedding cache folder (default ``~/.cache/taxonlens/labels``).

    Attributes:
        nodes: node ids of the classes, in column order ``[N]``.
        embeddings: float32 ``[N, D]`` unit vectors.
    """

    def __init__(self, encoder: Encoder, taxonomy: Taxonomy, rank: str | int | None = None,
                 text_type: str = "taxonomic", templates: str = "photo", common_names: dict[int, str] | None = None,
                 embeddings: torch.Tensor | None = None, cache_dir: str | Path | None = None,
                 progress: Callable[[int], None] | None = None):
        self.encoder, self.taxonomy, self.rank = encoder, taxonomy, rank
        self.nodes: np.ndarray = taxonomy.leaves if rank is None else taxonomy.nodes_at_rank(rank)
        if embeddings is None:
            prompts = taxon_prompts(taxonomy, self.nodes, text_type, templates, common_names)
            embeddings = label_embeddings(encoder, prompts, cache_dir, progress)
        if embeddings.shape != (len(self.nodes), encoder.embed_dim):
            raise ValueError(f"label embeddings have shape {tuple(embeddings.shape)}, expected "
                             f"({len(self.nodes)}, {encoder.embed_dim})")
        self.embeddings = embeddings.float()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` scaled cosine similarities of unit image features ``[B, D]``."""
        return self.encoder.logit_scale * features.float() @ self.embeddings.T

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` softmax over the classes."""
        return torch.softmax(self.logits(features), dim=1)


def rank_classifiers(encoder: Encoder, taxonomy: Taxonomy, text_type: str = "taxonomic", templates: str = "photo",
                     cache_dir: str | Path | None = None) -> dict[str, ZeroShotClassifier]:
    """One zero-shot classifier per rank (each rank's taxa embedded from their own paths),
    for :meth:`~taxonlens.recognize.decode.TreeDecoder.fuse`."""
    return {r: ZeroShotClassifier(encoder, taxonomy, r, text_type, templates, cache_dir=cache_dir)
            for r in taxonomy.ranks}

"""Zero-shot recognition: images scored against the text embeddings of the taxa
at one rank, or at every rank for tree fusion."""

from __future__ import annotations

from collections.abc import Callable
from enum import nonmember
from pathlib import Path

import numpy as np
import torch

from taxonlens.choices import Choice
from taxonlens.data.treeoflife import LabelSet
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
        embeddings: precomputed label embeddings ``[N, D]`` (e.g. BioCLIP's TreeOfLife file, see
            :meth:`from_labels`); skips the text encoder.
        column_leaf: with ``embeddings`` over the leaves: the leaf index of each of its N rows,
            when several rows name one leaf (their probabilities add up).
        cache_dir: label-embedding cache folder (default ``~/.cache/taxonlens/labels``).

    Attributes:
        nodes: node ids of the classes, in column order of the probabilities ``[K]``.
        embeddings: float32 ``[N, D]`` unit vectors (N = K unless ``column_leaf`` is given).
    """

    def __init__(self, encoder: Encoder, taxonomy: Taxonomy, rank: str | int | None = None,
                 text_type: str = "taxonomic", templates: str = "photo", common_names: dict[int, str] | None = None,
                 embeddings: torch.Tensor | None = None, cache_dir: str | Path | None = None,
                 progress: Callable[[int], None] | None = None, column_leaf: np.ndarray | None = None):
        self.encoder, self.taxonomy, self.rank = encoder, taxonomy, rank
        self.nodes: np.ndarray = taxonomy.leaves if rank is None else taxonomy.nodes_at_rank(rank)
        if column_leaf is not None and rank is not None:
            raise ValueError("column_leaf maps embeddings to leaves: it needs rank=None")
        if embeddings is None:
            prompts = taxon_prompts(taxonomy, self.nodes, text_type, templates, common_names)
            embeddings = label_embeddings(encoder, prompts, cache_dir, progress)
        rows = len(self.nodes) if column_leaf is None else len(column_leaf)
        if embeddings.shape != (rows, encoder.embed_dim):
            raise ValueError(f"label embeddings have shape {tuple(embeddings.shape)}, expected "
                             f"({rows}, {encoder.embed_dim})")
        if column_leaf is not None and np.array_equal(column_leaf, np.arange(len(self.nodes))):
            column_leaf = None  # one row per leaf, in leaf order: a plain softmax
        self.column_leaf = None if column_leaf is None else torch.as_tensor(np.asarray(column_leaf), dtype=torch.long)
        self.embeddings = embeddings.float()

    @classmethod
    def from_labels(cls, encoder: Encoder, labels: LabelSet) -> ZeroShotClassifier:
        """A leaf classifier over a :class:`~taxonlens.data.treeoflife.LabelSet` (precomputed embeddings)."""
        return cls(encoder, labels.taxonomy, embeddings=labels.embeddings, column_leaf=labels.column_leaf)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` scaled cosine similarities of unit image features ``[B, D]`` with each embedding."""
        return self.encoder.logit_scale * features.float() @ self.embeddings.T

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` probabilities of the classes: a softmax over the embeddings, the rows of
        one leaf summed where ``column_leaf`` maps several to it."""
        p = torch.softmax(self.logits(features), dim=1)
        if self.column_leaf is None:
            return p
        return p.new_zeros(len(p), len(self.nodes)).index_add_(1, self.column_leaf, p)


def rank_classifiers(encoder: Encoder, taxonomy: Taxonomy, text_type: str = "taxonomic", templates: str = "photo",
                     cache_dir: str | Path | None = None) -> dict[str, ZeroShotClassifier]:
    """One zero-shot classifier per rank (each rank's taxa embedded from their own paths),
    for :meth:`~taxonlens.recognize.decode.TreeDecoder.fuse`."""
    return {r: ZeroShotClassifier(encoder, taxonomy, r, text_type, templates, cache_dir=cache_dir)
            for r in taxonomy.ranks}


class Combine(Choice):
    """How per-rank scores become leaf probabilities (see :class:`PerRankClassifier`)."""

    what = nonmember("combination of per-rank scores")
    fuse = "fuse"
    leaves = "leaves"


class PerRankClassifier:
    """Leaf probabilities from zero-shot classifiers of every rank, each rank's taxa embedded
    and scored on their own (:func:`rank_classifiers`), combined over the tree by ``combine``:

    - ``fuse``: the product of the ranks' probabilities of a leaf's ancestors, normalised over
      the leaves (``softmax`` of :meth:`~taxonlens.recognize.decode.TreeDecoder.path_scores`
      of their logarithms): its most probable leaf is the tree-fusion path;
    - ``leaves``: the mean over ranks of each rank's distribution spread evenly over the leaves
      below each of its taxa (a mixture: every rank's marginal keeps a share of its own scores).

    Args:
        encoder, taxonomy, text_type, templates, cache_dir: as :class:`ZeroShotClassifier`.

    Raises:
        ChoiceError: an unknown ``combine``.
    """

    def __init__(self, encoder: Encoder, taxonomy: Taxonomy, text_type: str = "taxonomic", templates: str = "photo",
                 combine: str = "fuse", cache_dir: str | Path | None = None):
        from taxonlens.recognize.decode import TreeDecoder

        self.combine, self.taxonomy = Combine(combine), taxonomy
        self.per_rank = rank_classifiers(encoder, taxonomy, text_type, templates, cache_dir)
        self.decoder = TreeDecoder(taxonomy)
        leaves_under = np.asarray(taxonomy.leaf_ancestor_matrix().sum(axis=0)).ravel()  # [n_nodes]
        self._spread = {r: torch.from_numpy(1.0 / leaves_under[taxonomy.nodes_at_rank(r)]).float()
                        for r in taxonomy.ranks}

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, n_leaves]`` probabilities of unit image features ``[B, D]``."""
        probs = {r: clf.predict_proba(features) for r, clf in self.per_rank.items()}  # r -> [B, K_r]
        if self.combine == "fuse":
            return torch.softmax(self.decoder.path_scores({r: p.clamp_min(1e-30).log() for r, p in probs.items()}),
                                 dim=1)
        return self.decoder.path_scores({r: p * self._spread[r] for r, p in probs.items()}) / len(probs)

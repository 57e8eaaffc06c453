"""One answer per camera-trap photo from the answers of its animal boxes (the image-level rollup).

The rule, in the spirit of SpeciesNet's rollup (an answer moves up the tree until enough of the
evidence supports it):

1. Each classified box ``d`` votes for the taxon it reports (the end of its reached path after
   back-off, else of its path; the root when no rank is trusted) and is an animal with
   probability ``q_d``, the detector's confidence.
2. A taxon *holds the photo* when, with probability at least 1/2, every animal in it lies within
   the taxon: every box voting outside it is a false box, ``prod_{d outside} (1 - q_d) >= 1/2``.
   The photo's taxon ``A`` is the lowest common ancestor of the deepest taxa that hold it. When
   every box agrees, that is their common answer; when confident boxes disagree (two animals of
   different species), it is the lowest common ancestor of their answers; a box the detector
   doubts (below 0.5: a box on the background, say) does not pull a confident answer up; with no
   confidences (all 1) it is the lowest common ancestor of all answers.
3. The confidence at each rank of ``A``'s path is the noisy-OR of the marginals of the boxes that
   voted within ``A``: ``1 - prod_d (1 - m_d(taxon))``, the probability that at least one of them
   is that taxon. Agreeing boxes reinforce each other (two boxes at 0.6 give 0.84); disagreeing
   ones support their common ancestor, where each one's marginal is high. It shrinks down the
   path, as a confidence must.
4. Back-off applies as to one box: the decoder's thresholds give the rank reached.

The alternatives are the other answers voted for, each with the noisy-OR of all boxes' marginals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from taxonlens.recognize.decode import Prediction, TreeDecoder


@dataclass(frozen=True)
class Rollup:
    """The image-level answer: ``prediction`` (``None`` when it is the root: no rank is supported),
    the boxes that voted and those whose answers lie within it (``agreeing``)."""

    prediction: Prediction | None
    boxes: int
    agreeing: int


def vote_node(decoder: TreeDecoder, prediction: Prediction) -> int:
    """The taxon a box votes for: the end of its reached path, else of its path (no thresholds),
    the root (0) when no rank is trusted."""
    path = prediction.reached_path  # the whole path when there are no thresholds
    return decoder.taxonomy.node_of_path(path) if path else 0


def noisy_or(marginals: torch.Tensor) -> torch.Tensor:
    """``1 - prod_d (1 - m_d)`` over the boxes (dim 0): ``[D, K] -> [K]``."""
    return 1.0 - torch.prod(1.0 - marginals.clamp(0.0, 1.0), dim=0)


def rollup(decoder: TreeDecoder, leaf_probs: torch.Tensor, predictions: Sequence[Prediction],
           weights: Sequence[float], top_k: int = 5) -> Rollup:
    """The photo's answer from its boxes (see the module docstring).

    Args:
        leaf_probs: ``[D, n_leaves]`` probabilities of the ``D`` boxes' crops.
        predictions: each box's decoded answer (``decoder.decode`` of ``leaf_probs``).
        weights: each box's detector confidence ``[D]``, in [0, 1].
        top_k: the answer and at most ``top_k - 1`` alternatives.
    """
    tax = decoder.taxonomy
    if not predictions:
        return Rollup(None, 0, 0)
    votes = [vote_node(decoder, p) for p in predictions]
    false = 1.0 - np.clip(np.asarray(weights, dtype=np.float64), 0.0, 1.0)  # each box's chance to be no animal
    candidates = {a for node in votes for a in tax.path(node)}
    holding = [n for n in candidates
               if np.prod([f for node, f in zip(votes, false) if n not in tax.path(node)]) >= 0.5]
    deepest = [n for n in holding if not any(m != n and n in tax.path(m) for m in holding)]
    answer = deepest[0] if deepest else 0
    for n in deepest[1:]:
        answer = tax.lca(answer, n)
    within = [d for d, node in enumerate(votes) if answer == 0 or answer in tax.path(node)]
    if answer == 0:
        return Rollup(None, len(votes), len(within))
    path_nodes = torch.tensor(tax.path(answer))
    conf = noisy_or(decoder.marginals(leaf_probs[within], path_nodes))  # [depth of A]
    padded = torch.full((1, tax.max_depth), float("nan"))
    padded[0, : len(conf)] = conf
    depth = int(decoder.reached(padded)[0])
    ranks = tax.ranks[: len(conf)]
    others = sorted({n for n in votes if n not in (answer, 0)})
    alternatives = []
    if others:
        support = noisy_or(decoder.marginals(leaf_probs, torch.tensor(others)))
        alternatives = sorted(((tax.path_names(n), float(s)) for n, s in zip(others, support)), key=lambda a: -a[1])
    prediction = Prediction(path=tax.path_names(answer), leaf=int(tax.leaf_index[answer]),
                            confidence={r: float(c) for r, c in zip(ranks, conf)},
                            rank_reached=ranks[depth - 1] if depth > 0 else None,
                            alternatives=alternatives[: top_k - 1])
    return Rollup(prediction, len(votes), len(within))


__all__ = ["Rollup", "noisy_or", "rollup", "vote_node"]

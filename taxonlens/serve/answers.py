"""Leaf probabilities -> the rows ``predict`` writes, over the whole label set or a subset of it.

A request's ``subset`` (``RANK=NAME[,NAME...]``, as ``predict --subset``; never a file over
HTTP) keeps the leaves under the taxa named: their probabilities are renormalised over the
subset's own tree, so paths, confidences, back-off and alternatives stay within it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from taxonlens.data.treeoflife import named_leaves
from taxonlens.errors import DataError
from taxonlens.predict.recognizer import Recognizer
from taxonlens.predict.rows import prediction_row
from taxonlens.recognize.decode import TreeDecoder


@dataclass(frozen=True)
class Answerer:
    """Decodes ``[B, n_leaves]`` probabilities of the recognizer's labels into rows.

    Attributes:
        decoder: the decoder of the label set (or of the subset's tree), with the back-off thresholds.
        method: ``exact`` or ``greedy`` decoding.
        common_names: node id (of ``decoder``'s taxonomy) -> common name.
        leaves: leaf indices of a subset in the full label set, in the subset tree's leaf order;
            ``None``: every leaf.
    """

    decoder: TreeDecoder
    method: str
    common_names: dict[int, str] = field(default_factory=dict)
    leaves: torch.Tensor | None = None

    def rows(self, probs: torch.Tensor, names: Sequence[str], top_k: int, rank: str | None) -> list[dict]:
        """One ``predict`` row per photo of ``probs`` ``[B, n_leaves]`` (named ``names``)."""
        if self.leaves is not None:
            probs = probs[:, self.leaves]
            probs = probs / probs.sum(dim=1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)
        predictions = self.decoder.decode(probs, self.method, top_k=top_k, rank=rank)
        return [prediction_row(self.decoder.taxonomy, name, p, None, self.common_names)
                for name, p in zip(names, predictions)]

    def unreadable(self, name: str, reason: str) -> dict:
        """The row of a photo that could not be read: no answer, ``reason`` in ``error``."""
        return prediction_row(self.decoder.taxonomy, name, None, reason)


def full_answerer(recognizer: Recognizer) -> Answerer:
    """The answerer over every label of ``recognizer``."""
    return Answerer(recognizer.decoder, recognizer.method, recognizer.common_names)


def subset_answerer(recognizer: Recognizer, spec: str) -> Answerer:
    """The answerer within the taxa named by ``spec`` (``RANK=NAME[,NAME...]``).

    Raises:
        DataError: no ``=``, an unknown rank or names that are not taxa of that rank.
    """
    rank, sep, values = spec.partition("=")
    if not sep:
        raise DataError(f"subset {spec!r}: give RANK=NAME[,NAME...], e.g. genus=Quercus,Fagus")
    tax = recognizer.taxonomy
    leaves = named_leaves(tax, rank, [v.strip() for v in values.split(",") if v.strip()], spec)
    sub = tax.subset(leaves)
    common = {node: recognizer.common_names[full] for node in range(1, len(sub))
              if (full := tax.node_of_path(sub.path_names(node))) in recognizer.common_names}
    return Answerer(TreeDecoder(sub, recognizer.decoder.thresholds), recognizer.method, common,
                    torch.from_numpy(leaves.astype("int64")))

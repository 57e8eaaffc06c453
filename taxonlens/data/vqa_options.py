"""The taxa a hierarchical-VQA record's offered options stand for, and how many paths of the
taxonomy they spell: what a question builder checks (:mod:`taxonlens.data.vqa_build`) and what
the consistent decoder (:mod:`taxonlens.recognize.vqa`) searches.

Option names match taxa case-insensitively (after ``strip`` and ``casefold``); level ``k``
(0-based) of a record is depth ``k + 1`` of the taxonomy.
"""

from __future__ import annotations

import numpy as np

from taxonlens.data.vqa import VQARecord
from taxonlens.errors import DataError
from taxonlens.taxonomy import ROOT, Taxonomy

#: per level, per offered option: the node ids of the taxa the option's name stands for
Candidates = list[list[tuple[int, ...]]]


def option_nodes(record: VQARecord, taxonomy: Taxonomy) -> Candidates:
    """The taxa that every offered option can stand for.

    Returns:
        ``out[k][j]``: node ids (ascending) of the taxa at depth ``k + 1`` named
        ``record.choices[k][j]`` (case-insensitive): one id normally, several for a
        homonym, ``()`` when the name is not a taxon of that level.

    Raises:
        DataError: the record is deeper than the taxonomy.
    """
    if len(record.choices) > taxonomy.max_depth:
        raise DataError(
            f"{record.where} has {len(record.choices)} levels but the taxonomy only {taxonomy.max_depth}"
        )
    index = taxonomy._name_index  # (depth, casefolded name) -> node ids, built once per taxonomy
    return [
        [tuple(sorted(index.get((k, name.strip().casefold()), ()))) for name in offered]
        for k, offered in enumerate(record.choices, start=1)
    ]


def count_paths(cands: Candidates, parent: np.ndarray) -> int:
    """Number of chains of taxa through ``cands``, one taxon per level, each the parent of the
    next (``parent``: ``(n_nodes,)`` parent node id of every node)."""
    counts = {ROOT: 1}
    for level in cands:
        nodes = {n for options in level for n in options}
        counts = {n: counts[int(parent[n])] for n in nodes if int(parent[n]) in counts}
        if not counts:
            return 0
    return sum(counts.values())


def consistent_path_count(record: VQARecord, taxonomy: Taxonomy) -> int:
    """How many full-depth paths of the taxonomy can be spelled with the offered options
    (one option per level; an option offered twice counts once).

    1 means a consistent decoder answers the record without looking at the image
    (when the truth is a path of the taxonomy, that one path is the truth).
    """
    return count_paths(option_nodes(record, taxonomy), taxonomy.parent)

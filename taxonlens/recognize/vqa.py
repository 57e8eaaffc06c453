"""Consistent answers to hierarchical multiple-choice questions.

A multimodal LLM answers a hierarchical-VQA record (:class:`~taxonlens.data.vqa.VQARecord`)
one level at a time, giving a log-probability to each offered option. Its per-level
answers need not form a path of the taxonomy; :func:`consistent_decode` picks the
combination of offered options, one per level, that is a path of the taxonomy and
has the highest (weighted) sum of log-probabilities.

The offered options also leak the answer: when only one combination of options is a
path of the taxonomy, a consistent decoder answers right without looking at the image.
:func:`~taxonlens.data.vqa_options.consistent_path_count`, :func:`blind_decode` (uniform
option probabilities) and :func:`leakage` measure this.

Conventions:

- Level ``k`` (0-based) of a record is depth ``k + 1`` of the taxonomy; a record
  may be shallower than the taxonomy (variable-depth trees), then a full path is
  one of ``len(record.levels)`` levels, ending at any taxon of that depth.
- Option names match taxa case-insensitively (after ``strip`` and ``casefold``, as
  :meth:`Taxonomy.node_of_path` does).
- Homonyms: an option name may name several taxa at its level (the same genus
  under two families). Every such taxon is kept as a candidate; the decoder's
  state is an (option, taxon) pair, so the parent chosen at the level above
  decides which candidate a path uses. Since a taxon is fixed by its name path,
  two different paths of taxa never spell the same names, and every path of
  taxa counts as one path of option names.
- Ties (equal scores, compared exactly as summed from the deepest level up): the
  path whose option indices, read from level 1 down, are lexicographically smallest
  wins (the option offered first); between homonym candidates of one option, the
  smaller node id. The result is thus a function of the record and the scores alone.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from taxonlens.data.vqa import VQARecord
from taxonlens.data.vqa_options import Candidates, count_paths, option_nodes
from taxonlens.errors import DataError
from taxonlens.taxonomy import ROOT, Taxonomy


@dataclass(frozen=True)
class ConsistentAnswer:
    """The decoder's answer to one record.

    Attributes:
        path: the chosen option's name at every level, as offered (``len(record.levels)`` names).
        indices: the chosen option's index in ``record.choices[k]`` at every level.
        nodes: the taxon of the chosen option at every level of the consistent prefix,
            -1 on the levels of a partial answer filled by the per-level argmax.
        score: weighted sum of the chosen options' log-probabilities over all levels
            (-inf when ``impossible > 0``).
        impossible: chosen options of log-probability -inf on levels of non-zero weight.
        consistent_depth: levels ``1..consistent_depth`` form a path of the taxonomy
            (``len(path)`` unless partial; 0 when no level-1 option is a taxon).
        partial: no combination of the offered options is a full-depth path of the
            taxonomy; the answer is the best consistent prefix, then per-level argmax.
    """

    path: tuple[str, ...]
    indices: tuple[int, ...]
    nodes: tuple[int, ...]
    score: float
    impossible: int
    consistent_depth: int
    partial: bool


@dataclass(frozen=True)
class LeakageSummary:
    """How much the offered options alone reveal, over a list of records.

    Attributes:
        n_records: records summarised.
        path_counts: number of full consistent paths -> number of records with that many.
        n_unique: records with exactly one consistent path (answerable without the image).
        n_unique_truth: of those, the records whose one consistent path is the truth.
        n_blind_correct: records whose :func:`blind_decode` answer is the truth at every level.
        expected_blind_correct: the same count expected when ties among consistent paths are
            broken uniformly at random instead of by option order: the sum over records whose
            truth is a path of the taxonomy of ``1 / number of consistent paths``.
    """

    n_records: int
    path_counts: dict[int, int]
    n_unique: int
    n_unique_truth: int
    n_blind_correct: int
    expected_blind_correct: float

    @property
    def share_unique(self) -> float:
        """Fraction (0..1) of the records with exactly one consistent path."""
        return self.n_unique / self.n_records if self.n_records else 0.0

    @property
    def blind_hca(self) -> float:
        """Percent of records the image-blind control answers right at every level."""
        return 100 * self.n_blind_correct / self.n_records if self.n_records else 0.0

    @property
    def expected_blind_hca(self) -> float:
        """Percent of records the image-blind control answers right, expected under random tie-breaking."""
        return 100 * self.expected_blind_correct / self.n_records if self.n_records else 0.0


Key = tuple[int, float]  # (-number of impossible options, weighted sum of the other log-probabilities)


def _add(a: Key, b: Key) -> Key:
    return (a[0] + b[0], a[1] + b[1])


def _keys(
    record: VQARecord, level_logprobs: Sequence[Sequence[float] | np.ndarray | None], weights: Sequence[float] | None
) -> tuple[list[list[float]], list[list[Key]]]:
    """Checked ``(logprobs, keys)``: per level, one float and one score key per offered option.

    A level with a single option may be given as ``None`` (log-probability 0). An
    option's key is ``(-1, 0.0)`` when its log-probability is -inf on a level of
    non-zero weight (an impossible option), else ``(0, weight * logprob)`` (0 for
    weight 0). Keys add component-wise and compare as tuples, so a path with fewer
    impossible options always wins, and the first component adds exactly.
    """
    depth = len(record.choices)
    if len(level_logprobs) != depth:
        raise DataError(f"{record.where}: {len(level_logprobs)} arrays of log-probabilities for {depth} levels")
    if weights is None:
        weights = [1.0] * depth
    elif len(weights) != depth:
        raise DataError(f"{record.where}: {len(weights)} level weights for {depth} levels")
    raw, keys = [], []
    for k, (lp, offered, w) in enumerate(zip(level_logprobs, record.choices, weights), start=1):
        if lp is None and len(offered) == 1:
            lp = [0.0]
        arr = np.asarray(lp, dtype=np.float64) if lp is not None else np.empty(0)
        if arr.shape != (len(offered),):
            raise DataError(
                f"{record.where}: level {k} offers {len(offered)} options but got log-probabilities of "
                f"shape {arr.shape}"
            )
        if np.isnan(arr).any() or (arr == np.inf).any():
            raise DataError(f"{record.where}: level {k} log-probabilities must not be NaN or +inf: {arr.tolist()}")
        if not (math.isfinite(w) and w >= 0):
            raise DataError(f"{record.where}: the weight of level {k} must be finite and >= 0, got {w}")
        values = arr.tolist()
        raw.append(values)
        keys.append([(0, 0.0) if w == 0 else (-1, 0.0) if x == -math.inf else (0, w * x) for x in values])
    return raw, keys


def _through(keys: list[list[Key]], indices: list[int], k: int, suffix: Key) -> Key:
    """The key of the chosen options above level ``k`` plus ``suffix``, added from level ``k - 1`` up."""
    for i in reversed(range(k)):
        suffix = _add(keys[i][indices[i]], suffix)
    return suffix


def _decode(
    record: VQARecord, cands: Candidates, raw: list[list[float]], keys: list[list[Key]], parent: np.ndarray
) -> ConsistentAnswer:
    """Dynamic programme over (option, taxon) states; see :func:`consistent_decode`."""
    depth = len(cands)
    states = [[(j, n) for j, options in enumerate(level) for n in options] for level in cands]
    # m: the deepest level a chain of offered taxa from level 1 reaches
    m, reached = 0, {ROOT}
    for level in states:
        reached = {n for _, n in level if int(parent[n]) in reached}
        if not reached:
            break
        m += 1
    # backward pass: value[k][(j, n)] = best key of levels k..m-1 over the chains from (j, n) down to level m
    value: list[dict[tuple[int, int], Key]] = [{} for _ in range(m)]
    for k in reversed(range(m)):
        best_child: dict[int, Key] | None = None
        if k + 1 < m:
            best_child = {}
            for (_, n2), v in value[k + 1].items():
                p = int(parent[n2])
                if p not in best_child or v > best_child[p]:
                    best_child[p] = v
        for j, n in states[k]:
            if best_child is None:
                value[k][(j, n)] = keys[k][j]
            elif n in best_child:
                value[k][(j, n)] = _add(keys[k][j], best_child[n])
    # forward walk: at each level the first state (smallest option, then node) under the chosen
    # parent through which some chain reaches the best total, the total summed as the backward pass does
    indices: list[int] = []
    nodes: list[int] = []
    total: Key = max(value[0].values()) if m else (0, 0.0)
    prev = ROOT
    for k in range(m):
        j, prev = next(state for state, v in value[k].items() if int(parent[state[1]]) == prev
                       and _through(keys, indices, k, v) == total)
        indices.append(j)
        nodes.append(prev)
    for k in range(m, depth):
        j = int(np.argmax(raw[k]))
        indices.append(j)
        nodes.append(-1)
        total = _add(total, keys[k][j])
    return ConsistentAnswer(
        path=tuple(record.choices[k][j] for k, j in enumerate(indices)),
        indices=tuple(indices),
        nodes=tuple(nodes),
        score=-math.inf if total[0] else float(total[1]),
        impossible=-total[0],
        consistent_depth=m,
        partial=m < depth,
    )


def consistent_decode(
    record: VQARecord,
    taxonomy: Taxonomy,
    level_logprobs: Sequence[Sequence[float] | np.ndarray | None],
    weights: Sequence[float] | None = None,
) -> ConsistentAnswer:
    """The best combination of offered options that is a path of the taxonomy.

    Args:
        record: the question set; ``record.choices[k]`` are the options of level ``k``.
        taxonomy: the tree that decides which combinations are consistent.
        level_logprobs: one float array per level, ``[len(record.choices[k])]``, the
            log-probability (or any score, higher is better) of each offered option;
            -inf marks an impossible option; ``None`` for a level with a single option.
        weights: optional ``[n_levels]`` non-negative weight per level (default all 1).

    Returns:
        Normally the full-depth path of the taxonomy, spelled with one offered option
        per level, maximising ``sum_k weights[k] * level_logprobs[k][option_k]``.
        Paths are compared by their number of impossible options first (fewest wins;
        with one-hot log-probabilities this picks the consistent path that agrees with
        the most per-level answers), then by that sum over their other options; ties:
        see the module docstring. When no full-depth path exists among the options
        (``partial=True``), the best consistent *prefix*: prefixes are compared by
        length first (only the deepest level that any chain of offered taxa from level 1
        reaches counts), then as paths are; each level below the prefix gets its own
        argmax option (the first on a tie), and ``score`` sums all levels.

    Raises:
        DataError: wrong number or length of arrays, NaN or +inf scores, bad weights.
    """
    raw, keys = _keys(record, level_logprobs, weights)
    return _decode(record, option_nodes(record, taxonomy), raw, keys, taxonomy.parent)


def _uniform(record: VQARecord) -> list[list[float]]:
    """Uniform log-probabilities, ``[len(record.choices[k])]`` per level."""
    return [[-math.log(len(offered))] * len(offered) for offered in record.choices]


def blind_decode(record: VQARecord, taxonomy: Taxonomy) -> ConsistentAnswer:
    """The image-blind control: :func:`consistent_decode` with uniform option probabilities.

    Every full consistent path then scores the same, so the answer is the consistent
    path whose option indices are lexicographically smallest (the first offered option
    at the first level that differs); a partial answer takes the first offered option
    below its prefix. Its accuracy measures what the taxonomy alone reveals.
    """
    return consistent_decode(record, taxonomy, _uniform(record))


def _is_truth(record: VQARecord, path: Sequence[str]) -> bool:
    return [x.lower() for x in path] == [x.lower() for x in record.levels]


def leakage(records: Sequence[VQARecord], taxonomy: Taxonomy) -> LeakageSummary:
    """Count the records whose offered options leave one consistent path, and whether it
    is the truth; and how many the image-blind control answers right at every level."""
    counts: Counter[int] = Counter()
    n_unique = n_unique_truth = n_blind = 0
    expected: list[float] = []  # summed with fsum: exact for the benchmark's 1/2, 1/3, 1/4
    for record in records:
        cands = option_nodes(record, taxonomy)
        n_paths = count_paths(cands, taxonomy.parent)
        counts[n_paths] += 1
        uniform = _uniform(record)
        blind = _decode(record, cands, uniform, [[(0, x) for x in lp] for lp in uniform], taxonomy.parent)
        correct = _is_truth(record, blind.path)
        n_blind += correct
        if n_paths and taxonomy.try_node_of_path(record.levels) is not None:
            expected.append(1 / n_paths)
        if n_paths == 1:
            n_unique += 1
            n_unique_truth += correct
    return LeakageSummary(
        n_records=len(records),
        path_counts=dict(sorted(counts.items())),
        n_unique=n_unique,
        n_unique_truth=n_unique_truth,
        n_blind_correct=n_blind,
        expected_blind_correct=math.fsum(expected),
    )

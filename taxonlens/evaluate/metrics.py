"""Hierarchical classification metrics: pure functions over lists of name paths.

The core metrics follow the reference evaluation of LLM-Hierarchical-Consistency
(Tan, Qing, Gong 2025; ``utils/metric.py``, also used unchanged by TARA), so their
figures can be compared with published ones:

- ``truths[i]`` and ``preds[i]`` hold only the *scored* levels of record ``i``,
  top level first (select them with :func:`select_levels`);
- names are compared after ``str.lower()`` and nothing else (no strip, no
  underscore mapping): ``" Rosa"`` does not equal ``"rosa"``;
- each metric is a value per record averaged over the N records (per-level
  accuracy is pooled per level), returned in percent (0..100), unrounded.

The taxonomy-aware metrics (:func:`valid_path_pct`, :func:`mistake_severity`,
:func:`backoff`) take FULL paths from level 1, because a path is only meaningful
in the tree as a whole.

Deliberate differences from the reference script: :func:`per_level_accuracy`
omits positions that no truth has (the reference reports 0.0 for them), and an
empty prediction is scored as wrong rather than dropping the record from N.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from taxonlens.taxonomy import Taxonomy

Paths = Sequence[Sequence[str]]


def select_levels(path: Sequence[str], levels: Iterable[int]) -> list[str]:
    """The names of ``path`` at the given 0-based level indices (ascending), skipping
    indices the path does not reach, as the reference extracts its scored levels.

    >>> select_levels(["Plantae", "Rosa", "Rosa canina"], [1, 2, 5])
    ['Rosa', 'Rosa canina']
    """
    return [path[k] for k in levels if k < len(path)]


def _lowered(truths: Paths, preds: Paths) -> list[tuple[list[str], list[str]]]:
    """Lower-cased (truth, pred) pairs; raises ``ValueError`` on unusable input."""
    if len(truths) != len(preds):
        raise ValueError(f"{len(truths)} truths but {len(preds)} predictions")
    if not truths:
        raise ValueError("no records to score")
    if any(len(t) == 0 for t in truths):
        raise ValueError("every truth needs at least one scored level")
    return [([x.lower() for x in t], [x.lower() for x in p]) for t, p in zip(truths, preds)]


def _mean_pct(values: Iterable[float], n: int) -> float:
    return sum(values) / n * 100


# per record (lower-cased truth t and prediction p), in [0, 1]
def _hca(t: list[str], p: list[str]) -> float:
    return float(p == t)


def _leaf(t: list[str], p: list[str]) -> float:
    return float(bool(p) and p[-1] == t[-1])


def _por(t: list[str], p: list[str]) -> float:
    return sum(a == b for a, b in zip(p, t)) / len(t)


def _s_por(t: list[str], p: list[str]) -> float:
    n = 0
    while n < min(len(t), len(p)) and p[n] == t[n]:
        n += 1
    return n / len(t)


def _tor(t: list[str], p: list[str]) -> float:
    if len(t) < 2:
        return 0.0
    hits = [a == b for a, b in zip(p, t)]
    return sum(hits[j] and hits[j + 1] for j in range(len(hits) - 1)) / (len(t) - 1)


_PER_RECORD = {"hca": _hca, "acc_leaf": _leaf, "por": _por, "s_por": _s_por, "tor": _tor}


def per_record(truths: Paths, preds: Paths) -> dict[str, np.ndarray]:
    """Each record's own value of :func:`hca` (``hca``), :func:`leaf_accuracy` (``acc_leaf``),
    :func:`por`, :func:`s_por` and :func:`tor`, in percent, float64 ``[N]`` each: the means of
    these are the metrics, and intervals over records (:mod:`taxonlens.evaluate.uncertainty`)
    resample them.

    >>> truths = [["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> preds = [["plantae", "Rosa", "Rosa rugosa"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> per_record(truths, preds)["hca"].tolist()
    [0.0, 100.0]
    """
    pairs = _lowered(truths, preds)
    return {name: np.asarray([fn(t, p) * 100 for t, p in pairs], dtype=np.float64) for name, fn in _PER_RECORD.items()}


def hca(truths: Paths, preds: Paths) -> float:
    """Hierarchical consistent accuracy: percent of records whose predicted list
    equals the true list exactly (same length, every level correct).

    >>> truths = [["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> preds = [["plantae", "Rosa", "Rosa rugosa"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> hca(truths, preds)
    50.0
    """
    pairs = _lowered(truths, preds)
    return _mean_pct((_hca(t, p) for t, p in pairs), len(pairs))


def leaf_accuracy(truths: Paths, preds: Paths) -> float:
    """Percent of records whose last predicted name equals the last true name
    (whatever the depths; an empty prediction is wrong).

    >>> truths = [["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> preds = [["plantae", "Rosa", "Rosa rugosa"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> leaf_accuracy(truths, preds)
    50.0
    """
    pairs = _lowered(truths, preds)
    return _mean_pct((_leaf(t, p) for t, p in pairs), len(pairs))


def por(truths: Paths, preds: Paths) -> float:
    """Point-overlap ratio: per record, the number of positions ``j`` with
    ``pred[j] == truth[j]`` divided by ``len(truth)``; averaged, in percent.

    >>> truths = [["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> preds = [["plantae", "Rosa", "Rosa rugosa"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> round(por(truths, preds), 2)  # (2/3 + 3/3) / 2
    83.33
    """
    pairs = _lowered(truths, preds)
    return _mean_pct((_por(t, p) for t, p in pairs), len(pairs))


def s_por(truths: Paths, preds: Paths) -> float:
    """Strict point-overlap ratio: per record, the length of the longest correct
    prefix (from the top scored level) divided by ``len(truth)``; averaged, in percent.

    >>> truths = [["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> preds = [["plantae", "Rosa", "Rosa rugosa"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> round(s_por(truths, preds), 2)  # (2/3 + 3/3) / 2
    83.33
    >>> round(s_por([["a", "b", "c"]], [["a", "x", "c"]]), 2)  # the prefix stops at the first miss
    33.33
    """
    pairs = _lowered(truths, preds)
    return _mean_pct((_s_por(t, p) for t, p in pairs), len(pairs))


def tor(truths: Paths, preds: Paths) -> float:
    """Top-overlap ratio: per record, the number of adjacent scored pairs
    ``(j, j + 1)`` with both levels correct, divided by ``len(truth) - 1``;
    averaged, in percent.

    As in the reference, a record with a single scored level has no pair: it
    contributes 0 (even when correct) but still counts in N.

    >>> truths = [["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> preds = [["plantae", "Rosa", "Rosa rugosa"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> tor(truths, preds)  # (1/2 + 2/2) / 2
    75.0
    """
    pairs = _lowered(truths, preds)
    return _mean_pct((_tor(t, p) for t, p in pairs), len(pairs))


def per_level_accuracy(truths: Paths, preds: Paths) -> dict[int, float]:
    """Accuracy at each position of the scored lists, pooled over the records whose
    truth has that position (a prediction too short for it is wrong there).

    Returns:
        0-based position in the scored lists -> percent, for every position some truth has.

    >>> truths = [["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> preds = [["plantae", "Rosa", "Rosa rugosa"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> per_level_accuracy(truths, preds)
    {0: 100.0, 1: 100.0, 2: 50.0}
    """
    pairs = _lowered(truths, preds)
    depth = max(len(t) for t, _ in pairs)
    out: dict[int, float] = {}
    for j in range(depth):
        hits = [j < len(p) and p[j] == t[j] for t, p in pairs if j < len(t)]
        out[j] = _mean_pct(hits, len(hits))
    return out


# ------------------------------------------------------------- taxonomy-aware
def _node(taxonomy: Taxonomy, path: Sequence[str]) -> int | None:
    """Node id of a name path, or ``None`` unless every name matches after ``lower()``."""
    if not path:
        return None
    node = taxonomy.try_node_of_path(path)
    if node is None:
        return None
    found = taxonomy.path_names(node)
    return node if all(a.lower() == b.lower() for a, b in zip(found, path)) else None


def valid_path_pct(preds: Paths, taxonomy: Taxonomy) -> float:
    """Percent of predicted FULL paths (from level 1) that are paths of ``taxonomy``,
    ending at any rank; an empty path is not valid.

    >>> tax = Taxonomy.from_paths([["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Rosa", "Rosa rugosa"],
    ...                            ["Plantae", "Bellis", "Bellis perennis"]])
    >>> valid_path_pct([["Plantae", "Rosa"], ["Plantae", "Bellis", "Rosa canina"]], tax)
    50.0
    """
    if not preds:
        raise ValueError("no predictions to check")
    return float(valid_per_record(preds, taxonomy).mean())


def valid_per_record(preds: Paths, taxonomy: Taxonomy) -> np.ndarray:
    """Each predicted FULL path's own :func:`valid_path_pct`: 100.0 when it is a path of
    ``taxonomy``, else 0.0, float64 ``[N]``.

    >>> tax = Taxonomy.from_paths([["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]])
    >>> valid_per_record([["Plantae", "Rosa"], ["Plantae", "Bellis", "Rosa canina"]], tax).tolist()
    [100.0, 0.0]
    """
    return np.asarray([100.0 * (_node(taxonomy, p) is not None) for p in preds], dtype=np.float64)


@dataclass(frozen=True)
class Severity:
    """How far wrong the wrong answers are.

    Attributes:
        n: records whose predicted leaf is wrong and whose predicted path is valid.
        mean_distance: mean number of tree edges between the predicted and the true
            node (``None`` when ``n == 0``).
        mean_lca_depth: mean depth of their lowest common ancestor (0 = only the root
            shared, 1 = same first rank, ...; ``None`` when ``n == 0``).
    """

    n: int
    mean_distance: float | None
    mean_lca_depth: float | None


def mistake_severity(truths: Paths, preds: Paths, taxonomy: Taxonomy) -> Severity:
    """Mistake severity over FULL paths: among the records whose last predicted name
    differs from the last true name and whose predicted path is a path of ``taxonomy``,
    the mean tree distance and mean LCA depth between prediction and truth.

    Raises:
        TaxonNotFoundError: a true path is not in ``taxonomy``.

    >>> truths = [["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> preds = [["plantae", "Rosa", "Rosa rugosa"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> tax = Taxonomy.from_paths([["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Rosa", "Rosa rugosa"],
    ...                            ["Plantae", "Bellis", "Bellis perennis"]])
    >>> mistake_severity(truths, preds, tax)  # Rosa rugosa for Rosa canina: 2 edges apart, LCA the genus
    Severity(n=1, mean_distance=2.0, mean_lca_depth=2.0)
    """
    pairs = []
    for t, p in zip(truths, preds, strict=True):
        if not p or p[-1].lower() == t[-1].lower():
            continue
        node = _node(taxonomy, p)
        if node is not None:
            pairs.append((taxonomy.node_of_path(t), node))
    if not pairs:
        return Severity(0, None, None)
    a, b = np.asarray(pairs).T
    distance = taxonomy.distance(a, b)
    lca_depth = taxonomy.depth[taxonomy.lca(a, b)]
    return Severity(len(pairs), float(np.mean(distance)), float(np.mean(lca_depth)))


@dataclass(frozen=True)
class Backoff:
    """Predictions that stop above the true path's depth (open-set back-off).

    Attributes:
        n: records whose predicted path is non-empty and shorter than the truth.
        accuracy: percent of them whose last name is the truth at that depth
            (``None`` when ``n == 0``).
        level_pct: 0-based level index of the last predicted name -> percent of them.
    """

    n: int
    accuracy: float | None
    level_pct: dict[int, float]


def backoff(truths: Paths, preds: Paths) -> Backoff:
    """Back-off metrics over FULL paths: for each prediction that stops at a higher
    rank than the truth (``0 < len(pred) < len(truth)``), whether its last name is
    correct at that depth, and how the stopping levels are distributed.

    >>> truths = [["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> backoff(truths, [["Plantae", "Rosa"], ["Plantae", "Rosa"]])  # both stop at genus, one rightly
    Backoff(n=2, accuracy=50.0, level_pct={1: 100.0})
    """
    stops = [
        (len(p) - 1, p[-1].lower() == t[len(p) - 1].lower())
        for t, p in zip(truths, preds, strict=True)
        if 0 < len(p) < len(t)
    ]
    if not stops:
        return Backoff(0, None, {})
    counts: dict[int, int] = {}
    for level, _ in sorted(stops):
        counts[level] = counts.get(level, 0) + 1
    return Backoff(
        n=len(stops),
        accuracy=_mean_pct((ok for _, ok in stops), len(stops)),
        level_pct={level: c / len(stops) * 100 for level, c in counts.items()},
    )


# ----------------------------------------------------------------- bundle
def reported_rank_accuracy(truths: Paths, preds: Paths) -> float:
    """Percent of records whose deepest predicted name is right at its own depth (a path
    that stops at genus is right when the genus is): the precision of what a back-off
    decoder chose to report. FULL paths; an empty prediction (abstention) counts as wrong.

    >>> truths = [["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> reported_rank_accuracy(truths, [["Plantae", "Rosa"], []])  # a right genus; an abstention
    50.0
    """
    pairs = _lowered(truths, preds)
    return _mean_pct((0 < len(p) <= len(t) and p[-1] == t[len(p) - 1] for t, p in pairs), len(pairs))


@dataclass(frozen=True)
class HierarchicalReport:
    """Every metric of one evaluation (percent unless stated).

    Attributes:
        n: scored records.
        hca, acc_leaf, por, s_por, tor: see the functions of the same meaning.
        per_level: 0-based level index (in the full path) -> accuracy.
        valid_path_pct: percent of non-empty predictions that are taxonomy paths
            (``None`` without a taxonomy or without any non-empty prediction).
        severity: :func:`mistake_severity` (``None`` without a taxonomy).
        backoff: :func:`backoff`.
    """

    n: int
    hca: float
    acc_leaf: float
    por: float
    s_por: float
    tor: float
    per_level: dict[int, float]
    valid_path_pct: float | None
    severity: Severity | None
    backoff: Backoff


def hierarchical_report(
    truths: Paths, preds: Paths, levels: Iterable[int] | None = None, taxonomy: Taxonomy | None = None
) -> HierarchicalReport:
    """Score FULL paths (from level 1) on the chosen levels.

    Args:
        truths: true paths, one per record.
        preds: predicted paths (empty when a record has no prediction).
        levels: 0-based level indices to score (default: every level); each list is
            restricted to those it reaches (:func:`select_levels`).
        taxonomy: enables :func:`valid_path_pct` and :func:`mistake_severity`.

    Records whose truth reaches none of ``levels`` are left out, as in the reference.

    Raises:
        ValueError: no record has a scored level.

    >>> truths = [["Plantae", "Rosa", "Rosa canina"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> preds = [["plantae", "Rosa", "Rosa rugosa"], ["Plantae", "Bellis", "Bellis perennis"]]
    >>> report = hierarchical_report(truths, preds, levels=[1, 2])  # score genus and species
    >>> report.n, report.hca, report.per_level
    (2, 50.0, {1: 100.0, 2: 50.0})
    """
    if levels is None:
        levels = range(max((len(p) for p in [*truths, *preds]), default=0))
    levels = sorted(set(levels))
    kept = [(t, p) for t, p in zip(truths, preds, strict=True) if select_levels(t, levels)]
    if not kept:
        raise ValueError(f"no record has a level among {levels}")
    full_t = [t for t, _ in kept]
    full_p = [p for _, p in kept]
    st = [select_levels(t, levels) for t in full_t]
    sp = [select_levels(p, levels) for p in full_p]
    answered = [p for p in full_p if p]
    return HierarchicalReport(
        n=len(kept),
        hca=hca(st, sp),
        acc_leaf=leaf_accuracy(st, sp),
        por=por(st, sp),
        s_por=s_por(st, sp),
        tor=tor(st, sp),
        per_level={levels[j]: acc for j, acc in per_level_accuracy(st, sp).items()},
        valid_path_pct=valid_path_pct(answered, taxonomy) if taxonomy is not None and answered else None,
        severity=mistake_severity(full_t, full_p, taxonomy) if taxonomy is not None else None,
        backoff=backoff(full_t, full_p),
    )

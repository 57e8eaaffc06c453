"""Per-record figures over seeds, their intervals, and the verdict on each paper's claim.

A benchmark that trains arms over seeds keeps, per seed and arm, every record's own value of
every figure (``{figure key: [N values]}``, the same N records under every seed and arm:
:func:`~taxonlens.evaluate.metrics.per_record` gives them for the hierarchical figures).
:func:`stack` turns its runs into ``[S, N]`` arrays; :func:`estimates` gives each arm's mean
with its two-way bootstrap 95% interval (:func:`~taxonlens.evaluate.uncertainty.bootstrap_mean`);
a :class:`Claim` names an arm, its baseline, the figure and the paper's direction, and
:func:`judge` gives the paired difference, its interval and the verdict (``reproduced``,
``not reproduced`` with the smallest effect the run could have detected, ``reversed``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from taxonlens.bench.cells import table
from taxonlens.evaluate.uncertainty import Estimate, bootstrap_mean, paired_difference, verdict

#: a figure's key path, e.g. ``("seen", "consistent", "hca")``
Key = tuple[str, ...]


@dataclass(frozen=True)
class Claim:
    """A paper's claim that ``arm`` beats ``baseline`` on ``figure`` (``direction`` +1: higher,
    -1: lower), in words (``statement``)."""

    paper: str
    statement: str
    arm: str
    baseline: str
    figure: Key
    direction: int = 1


def stack(runs: Mapping[int, Mapping[str, Mapping[Key | str, Sequence[float]]]]) -> dict[str, dict[Key, np.ndarray]]:
    """``runs[seed][arm][key]`` (per-record values) -> ``{arm: {key: [S, N]}}`` over the seeds in
    order; a key is a tuple or its ``"/"``-joined string (JSON-ready runs), given back as a tuple; a
    figure some seed lacks, or whose record counts differ between seeds, is refused.

    Raises:
        ValueError: ragged runs.
    """
    runs = {seed: {arm: {tuple(k.split("/")) if isinstance(k, str) else tuple(k): v for k, v in figures.items()}
                   for arm, figures in run.items()} for seed, run in runs.items()}
    seeds = list(runs)
    arms = list(dict.fromkeys(arm for run in runs.values() for arm in run))
    out: dict[str, dict[Key, np.ndarray]] = {}
    for arm in arms:
        keys = list(dict.fromkeys(k for run in runs.values() for k in run.get(arm, {})))
        for key in keys:
            rows = [runs[s].get(arm, {}).get(key) for s in seeds]
            if any(r is None for r in rows) or len({len(r) for r in rows}) != 1:
                raise ValueError(f"{arm} {'/'.join(key)}: every seed needs the same records")
            out.setdefault(arm, {})[key] = np.asarray(rows, dtype=np.float64)
    return out


def estimates(values: Mapping[str, Mapping[Key, np.ndarray]]) -> dict[str, dict[Key, Estimate]]:
    """Each arm's mean of each figure with its 95% interval over seeds and records."""
    return {arm: {key: bootstrap_mean(v) for key, v in figures.items()} for arm, figures in values.items()}


def estimates_json(values: Mapping[str, Mapping[Key, np.ndarray]]) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`estimates` JSON-ready: ``{arm: {"split/figure": {mean, low, high, se}}}``."""
    return {arm: {"/".join(k): e.to_dict() for k, e in figures.items()} for arm, figures in estimates(values).items()}


def judge(claims: Sequence[Claim], values: Mapping[str, Mapping[Key, np.ndarray]]) -> list[dict[str, Any]]:
    """For each claim whose arm and baseline were run: the two means, the paired difference with
    its interval and the verdict (JSON-ready)."""
    out = []
    for c in claims:
        if c.figure not in values.get(c.arm, {}) or c.figure not in values.get(c.baseline, {}):
            continue
        arm, base = values[c.arm][c.figure], values[c.baseline][c.figure]
        v = verdict(paired_difference(arm, base), c.direction)
        out.append({"paper": c.paper, "statement": c.statement, "arm": c.arm, "baseline": c.baseline,
                    "figure": "/".join(c.figure), "direction": c.direction,
                    "arm_estimate": bootstrap_mean(arm).to_dict(), "baseline_estimate": bootstrap_mean(base).to_dict(),
                    "seeds": int(arm.shape[0]), "records": int(arm.shape[1]), **v.to_dict()})
    return out


def interval_cell(e: Mapping[str, float] | Estimate | None, digits: int = 1, signed: bool = False) -> str:
    """``mean [low, high]`` of an estimate (or its dict); empty for none."""
    if e is None:
        return ""
    d = e.to_dict() if isinstance(e, Estimate) else e
    f = f"+.{digits}f" if signed else f".{digits}f"
    return f"{d['mean']:{f}} [{d['low']:{f}}, {d['high']:{f}}]"


def claims_table(title: str, judged: Sequence[Mapping[str, Any]]):
    """A rich table of :func:`judge`'s rows: claim, arm and baseline with intervals, the paired
    difference, the verdict and the smallest detectable effect."""
    out = table(title, ("claim", "figure", "arm", "baseline", "difference", "verdict", "detectable"),
                left=("claim", "figure", "verdict"))
    for row in judged:
        out.add_row(f"{row['paper']}: {row['statement']}", row["figure"], interval_cell(row["arm_estimate"]),
                    interval_cell(row["baseline_estimate"]), interval_cell(row["difference"], signed=True),
                    row["label"], f"{row['detectable']:.1f}")
    return out


__all__ = ["Claim", "Key", "claims_table", "estimates", "estimates_json", "interval_cell", "judge", "stack"]

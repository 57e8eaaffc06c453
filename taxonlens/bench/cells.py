"""The rich tables benchmark results render to, and their cell formats (answer figures, mean +-
sd cells); ``taxonlens.cli`` prints its own tables with the same :func:`table` and
:func:`figures_table`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from rich.table import Table

#: the figures of each hierarchical-VQA answer, as
#: :func:`~taxonlens.recognize.vqa_answer.consistency_report` names them
FIGURES = ("hca", "acc_leaf", "por", "s_por", "tor", "valid_path_pct")
#: their column headers, in that order
FIGURE_HEADERS = ("HCA", "leaf", "POR", "S-POR", "TOR", "valid")


def table(title: str, columns: Sequence[str], left: Collection[str] = (), no_wrap: bool = False) -> Table:
    """A table whose ``left`` columns are left-justified (labels) and the others right-justified
    (figures)."""
    out = Table(title=title)
    for col in columns:
        out.add_column(col, justify="left" if col in left else "right", no_wrap=no_wrap)
    return out


def figures_table(title: str, figures: Mapping[str, float | int | str]) -> Table:
    """A two-column table of named figures (floats to 4 significant digits)."""
    out = Table(title=title)
    out.add_column("measure")
    out.add_column("value", justify="right")
    for k, v in figures.items():
        out.add_row(k, f"{v:,.4g}" if isinstance(v, float) else str(v))
    return out


def percent(value: float | None) -> str:
    """A percentage to one decimal; "-" for none."""
    return "-" if value is None else f"{value:.1f}"


def figure_cells(scores: Mapping[str, Any], cell: Callable[[Any], str] = percent) -> list[str]:
    """The answer figures of ``scores`` (a :func:`~taxonlens.recognize.vqa_answer.consistency_report`
    answer, or a summary of them over seeds), one cell each by ``cell`` (``None`` where missing)."""
    return [cell(scores.get(k)) for k in FIGURES]


def sd_cell(node: Mapping[str, Any] | None, digits: int = 1) -> str:
    """``mean +- sd`` of a summary node ``{mean, sd, ...}`` (:func:`~taxonlens.bench.mean_sd`);
    empty where there is none."""
    return f"{node['mean']:.{digits}f} +- {node['sd']:.{digits}f}" if node else ""


def dig(tree: Mapping[str, Any], *path: str) -> Any:
    """``tree[path[0]][path[1]]...``, or ``{}`` where a key is missing."""
    for k in path:
        tree = tree.get(k, {})
    return tree


def answers_table(title: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], list[str]]],
                  left: Collection[str] | None = None) -> Table:
    """A table of answer figures, one row per ``(label cells, figure cells)``; the ``left`` label
    columns (default: all) are left-justified."""
    out = table(title, (*labels, *FIGURE_HEADERS), left=labels if left is None else left, no_wrap=True)
    for cells, figures in rows:
        out.add_row(*cells, *figures)
    return out

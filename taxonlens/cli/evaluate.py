"""``taxonlens evaluate``: score predicted paths."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from taxonlens.bench.cells import table
from taxonlens.cli.common import console, load_taxonomy


class OutputFormat(StrEnum):
    """How ``evaluate`` prints its report."""

    table = "table"
    json = "json"


#: the headline figures of a report, and their column headers
HEADLINE = {"hca": "HCA", "acc_leaf": "leaf acc", "por": "POR", "s_por": "S-POR", "tor": "TOR"}


def evaluate(
    benchmark: Annotated[Path, typer.Argument(help="Hierarchical-VQA JSONL, or a manifest (.jsonl/.csv/.parquet).")],
    predictions: Annotated[Path, typer.Argument(help="Predictions JSONL {image, path} or the reference result JSON.")],
    format: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = OutputFormat.table,
    ranks: Annotated[list[str] | None, typer.Option("--ranks", help="Score only these ranks (names or level numbers).")] = None,
    taxonomy: Annotated[str | None, typer.Option(help="Taxonomy for path validity and mistake severity "
                                                      "(default: built from the benchmark).")] = None,
) -> None:
    """Score predicted paths: per-rank accuracy, HCA, leaf accuracy, POR, S-POR, TOR (percent)."""
    from taxonlens.evaluate import evaluate_files

    tax = load_taxonomy(taxonomy, allow_homonyms=True) if taxonomy else None
    rank_args = [int(r) if r.isdigit() else r for r in ranks] if ranks else None
    report = evaluate_files(benchmark, predictions, ranks=rank_args, taxonomy=tax).to_dict()
    if format is OutputFormat.json:
        print(json.dumps(report))
        return
    print_report(report)


def print_report(report: dict) -> None:
    """An evaluation report as two tables (headline figures, accuracy per rank) and its other figures
    as JSON."""
    headline = table(f"{report['n']} images", list(HEADLINE.values()))
    headline.add_row(*(f"{report[k]:.2f}" for k in HEADLINE))
    console.print(headline)
    per_rank = table("accuracy per rank (%)", list(report["per_rank"]))
    per_rank.add_row(*(f"{v:.2f}" for v in report["per_rank"].values()))
    console.print(per_rank)
    extras = {k: v for k, v in report.items() if k not in (*HEADLINE, "per_rank", "n")}
    if extras:
        console.print(json.dumps(extras, indent=1))

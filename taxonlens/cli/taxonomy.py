"""``taxonlens taxonomy``: inspect and validate taxonomies."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from taxonlens.cli.common import console, load_taxonomy

app = typer.Typer(no_args_is_help=True, help="Inspect and validate taxonomies.")


@app.command("info")
def taxonomy_info(
    file: Annotated[str, typer.Argument(help="Taxonomy file or built-in name.")],
    allow_homonyms: Annotated[bool, typer.Option(help="Accept a name whose parent changes within a kingdom.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Load and validate a taxonomy; print its size per rank."""
    summary = load_taxonomy(file, allow_homonyms).summary()
    if as_json:
        print(json.dumps(summary))
        return
    table = Table(caption=f"{summary['leaves']:,} leaves, {summary['taxa']:,} taxa")
    table.add_column("rank")
    table.add_column("taxa", justify="right")
    for rank, n in summary["taxa_per_rank"].items():
        table.add_row(rank, f"{n:,}")
    console.print(table)
    console.print(f"leaf depths: {summary['leaf_depths']}")

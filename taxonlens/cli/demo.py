"""``taxonlens demo``: the main job, offline, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from taxonlens.cli.common import console, print_wide, progress_bar


def demo(
    out: Annotated[Path, typer.Option(help="Output folder (world, runs, report.html, report.json).")] = Path(
        "taxonlens-demo"),
    # defaults live in DemoSettings (a test checks that these shown values are its own)
    species: Annotated[int | None, typer.Option(help="Species drawn from the built-in iNat21 plant taxonomy.",
                                                show_default="200")] = None,
    images_per_species: Annotated[int | None, typer.Option(show_default="12")] = None,
    size: Annotated[int | None, typer.Option(help="Image side in pixels.", show_default="64")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per text type.", show_default="24")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """The main job, offline: train a tiny BioCLIP three ways on a synthworld of real plant taxa,
    predict seen and novel species, compare training texts and decoders, write an HTML report
    and predictions.csv. Re-running resumes."""
    from taxonlens.demo import DECODERS, DemoSettings, run_demo, world_ranks

    given = {"species": species, "images_per_species": images_per_species, "size": size, "epochs": epochs}
    settings = DemoSettings(out=str(out), seed=seed, **{k: v for k, v in given.items() if v is not None})
    with progress_bar() as bar:

        def track(description: str, total: int):
            task = bar.add_task(description, total=total)
            return lambda n: bar.advance(task, n)

        results = run_demo(settings, progress=track)
    ranks = world_ranks(results)
    table = Table(title="training text: accuracy per rank (%), consistent path")
    table.add_column("text", no_wrap=True)
    table.add_column("split")
    for r in ranks:
        table.add_column(r[:7], justify="right")
    for arm, m in results["arms"].items():
        for split in ("test", "novel"):
            per_rank = m[split]["consistent path"]["per_rank"]
            table.add_row(arm, "seen" if split == "test" else "novel", *(f"{per_rank[r]:.1f}" for r in ranks))
    print_wide(table, 110)
    table = Table(title="decoding, taxonomic text (%)")
    table.add_column("decoder", no_wrap=True)
    for col in ("split", "HCA", "leaf", "POR", "S-POR", "TOR", "valid", "at reported rank"):
        table.add_column(col, justify="right")
    for name in DECODERS:
        for split in ("test", "novel"):
            m = results["arms"]["taxonomic"][split][name]
            table.add_row(name, "seen" if split == "test" else "novel",
                          *(f"{m[k]:.1f}" for k in ("hca", "acc_leaf", "por", "s_por", "tor", "valid_path_pct",
                                                    "reported_rank_acc")))
    print_wide(table, 110)
    console.print(f"report: {out / 'report.html'}, predictions of the photo files: {results['predictions']}")

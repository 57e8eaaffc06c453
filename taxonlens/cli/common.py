"""What the command modules share: the consoles, the progress bar, option types, loading a
taxonomy or labelled photos, and printing figures and tables."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from taxonlens.bench.cells import figures_table
from taxonlens.errors import TaxonlensError
from taxonlens.models.device import Device, Precision
from taxonlens.models.mllm import Quantization

if TYPE_CHECKING:
    from taxonlens.data import Record
    from taxonlens.taxonomy import Taxonomy

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

TaxonomyOpt = Annotated[
    str,
    typer.Option(help="Taxonomy file (.json, .csv, .tsv, .jsonl) or a built-in name: "
                      "inat21-plantae, inat21-animalia, imagenet-animal."),
]
ModelOpt = Annotated[str, typer.Option(help="Encoder: bioclip, bioclip-2, hf-hub:ORG/REPO, a model folder, "
                                            "an open_clip ARCH[:FILE|:TAG], or a tiny preset.")]
LabelsTaxonomyOpt = Annotated[str | None, typer.Option(
    "--taxonomy", help="Label tree (.json/.csv/.tsv/.jsonl or a built-in name), or a TreeOfLife "
                       "txt_emb_species.json; default: the TreeOfLife labels of the model, as pybioclip.")]
SplitOpt = Annotated[str | None, typer.Option(help="Only photos of this split.")]
DeviceOpt = Annotated[Device, typer.Option(help="Where the model runs: auto (a CUDA GPU, then Apple MPS, else the "
                                                "CPU), cpu, cuda or mps.")]
PrecisionOpt = Annotated[Precision, typer.Option(help="Number format of the model: auto (bf16 on GPUs that support "
                                                      "it, fp16 on older ones, on the CPU bf16 where it is fast), "
                                                      "fp32, bf16 or fp16.")]
QuantizeOpt = Annotated[Quantization, typer.Option(help="Load a checkpoint's weights in 8 or 4 bits through "
                                                        "bitsandbytes (pip install 'taxonlens[quantize]'; CUDA GPUs).")]
WorkersOpt = Annotated[int | None, typer.Option(help="Processes that read, decode and preprocess photos while the "
                                                   "model encodes (0: none, read between batches; default: half "
                                                   "the cores, at most 8).", min=0)]
OverwriteOpt = Annotated[bool, typer.Option(help="Start OUT afresh instead of resuming it (a resumed OUT must "
                                                 "have been written with the same settings).")]


def progress_bar() -> Progress:
    """The rich progress bar every long command shows."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=False)


def loader_workers(workers: int | None) -> int:
    """``--workers``, or the default of this machine (:func:`~taxonlens.data.loader.default_workers`)."""
    from taxonlens.data.loader import default_workers

    return default_workers() if workers is None else workers


def say(message: str) -> None:
    """A long command's progress message, dimmed."""
    console.print(f"[dim]{message}[/]")


def load_taxonomy(taxonomy: str, allow_homonyms: bool = False) -> Taxonomy:
    """A taxonomy from a file, a built-in name or a hierarchical-VQA benchmark
    (:func:`taxonlens.data.taxonomy_or_benchmark`)."""
    from taxonlens.data import taxonomy_or_benchmark

    return taxonomy_or_benchmark(taxonomy, allow_homonyms=allow_homonyms)


def read_records(data: Path, taxonomy: Taxonomy | None = None, split: str | None = None) -> list[Record]:
    """The labelled photos of a manifest or an image folder (of ``split`` only, if given)."""
    from taxonlens.data import read_image_folder, read_manifest

    records = read_image_folder(data, taxonomy) if data.is_dir() else read_manifest(data, taxonomy)
    records = [r for r in records if r.path and (split is None or r.split == split)]
    if not records:
        raise TaxonlensError(f"{data}: no labelled photos{f' in split {split!r}' if split else ''}")
    return records


def print_skipped(failures: Iterable[object]) -> None:
    """One line on stderr per photo that could not be read."""
    for f in failures:
        err_console.print(f"[yellow]skipped[/] {f}", highlight=False)


def print_figures(title: str, figures: dict[str, float | int | str]) -> None:
    """A two-column table of named figures (:func:`~taxonlens.bench.cells.figures_table`)."""
    console.print(figures_table(title, figures))


def print_wide(out: RenderableType, min_width: int) -> None:
    """Print ``out`` at least ``min_width`` columns wide: a log file or a narrow terminal would wrap
    its cells unreadably."""
    console.print(out, width=max(console.width, min_width))

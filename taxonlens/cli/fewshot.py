"""``taxonlens fewshot fit``: a few-shot classifier (prototypes or a linear probe over an
encoder's features of labelled photos) for ``predict --classifier``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from taxonlens.cli.common import DeviceOpt, ModelOpt, SplitOpt, console, progress_bar, read_records
from taxonlens.errors import TaxonlensError
from taxonlens.models.device import Device, Precision
from taxonlens.recognize.fewshot import FewShotMethod

app = typer.Typer(no_args_is_help=True, help="Few-shot classifiers from a handful of labelled photos per species.")


def _shots(value: str) -> int | None:
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise TaxonlensError(f"--shots {value!r}: a number of photos per species (1, 5, ...) or all")
    return int(value)


@app.command("fit")
def fewshot_fit(
    manifest: Annotated[Path, typer.Argument(help="Labelled photos: a manifest or an image folder.")],
    out: Annotated[Path, typer.Option(help="Classifier folder, for `taxonlens predict --classifier`.")],
    model: ModelOpt = "bioclip-2",
    shots: Annotated[str, typer.Option(help="Photos per species: a number (BioCLIP: 1 or 5) or all.")] = "5",
    method: Annotated[FewShotMethod, typer.Option(help="simpleshot (class prototypes, BioCLIP's) or linear "
                                                       "(a linear probe).")] = FewShotMethod.simpleshot,
    taxonomy: Annotated[str | None, typer.Option(help="Label tree whose leaves are the classes (default: the "
                                                      "photos' own paths).")] = None,
    split: SplitOpt = "train",
    precision: Annotated[Precision, typer.Option(help="Number format of the model: use the same with "
                                                      "`predict --classifier`.")] = Precision.auto,
    device: DeviceOpt = Device.auto,
    seed: Annotated[int, typer.Option(help="Seed of the draw of the shots.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Photos per batch.")] = 32,
) -> None:
    """Fit a few-shot classifier on SHOTS labelled photos per species; unreadable photos are skipped."""
    from taxonlens.cli.common import load_taxonomy
    from taxonlens.index.fewshot import fit_fewshot
    from taxonlens.models.encoders import load_encoder

    k = _shots(shots)
    tax = load_taxonomy(taxonomy, allow_homonyms=True) if taxonomy else None
    records = read_records(manifest, tax, split)
    encoder = load_encoder(model, precision=precision, device=device)
    with progress_bar() as bar:
        task = bar.add_task("encoding photos", total=None)
        folder = fit_fewshot(records, encoder, out, k, method, seed, tax, batch_size,
                             lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"{method} classifier of {shots} shot(s) per species from {len(records)} photos: {folder}; "
                  f"use it with `taxonlens predict --model {model} --precision {precision} --classifier {folder}`")

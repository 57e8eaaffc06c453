"""``taxonlens index``: vector memories (faiss) for retrieval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from taxonlens.cli.common import (
    DeviceOpt,
    ModelOpt,
    SplitOpt,
    WorkersOpt,
    console,
    load_taxonomy,
    loader_workers,
    progress_bar,
    read_records,
)
from taxonlens.index.memory import IndexKind
from taxonlens.models.device import Device, Precision

app = typer.Typer(no_args_is_help=True, help="Vector memories (faiss) for retrieval.")


@app.command("build")
def index_build(
    data: Annotated[Path, typer.Argument(help="Labelled photos (manifest or image folder).")],
    out: Annotated[Path, typer.Option(help="Memory folder (index.faiss, labels.npy, memory.json, taxonomy).")],
    model: ModelOpt = "bioclip-2",
    taxonomy: Annotated[str | None, typer.Option(help="Label tree (default: built from the photos' paths).")] = None,
    kind: Annotated[IndexKind, typer.Option(help="flat (exact), hnsw or ivf.")] = IndexKind.flat,
    per_class: Annotated[int, typer.Option(help="Exemplar photos per class (0: all).")] = 0,
    split: SplitOpt = "train",
    batch_size: Annotated[int, typer.Option()] = 32,
    precision: Annotated[Precision, typer.Option(help="auto, fp32 or bf16: use the same with `predict --memory`.")
                         ] = Precision.auto,
    device: DeviceOpt = Device.auto,
    embeddings: Annotated[Path | None, typer.Option(help="Photo embeddings from `taxonlens embed` with the same "
                                                         "--model and --precision: those photos are not encoded "
                                                         "again.")] = None,
    workers: WorkersOpt = None,
) -> None:
    """An image-exemplar memory: photo embeddings with their class, for retrieval (`predict --memory`)."""
    from taxonlens.index.embeddings import read_embeddings
    from taxonlens.index.exemplars import build_exemplar_memory
    from taxonlens.models.encoders import load_encoder

    tax = load_taxonomy(taxonomy, allow_homonyms=True) if taxonomy else None
    records = read_records(data, tax, split)
    encoder = load_encoder(model, precision=precision, device=device)
    known = read_embeddings(embeddings, encoder.fingerprint()) if embeddings is not None else None
    with progress_bar() as bar:
        task = bar.add_task("encoding exemplars", total=None)
        memory = build_exemplar_memory(records, encoder, out, tax, kind, per_class, batch_size,
                                       progress=lambda done, total: bar.update(task, completed=done, total=total),
                                       known=known, workers=loader_workers(workers))
    console.print(f"{len(memory):,} exemplars of {len(set(memory.labels.tolist())):,} classes in {out}")

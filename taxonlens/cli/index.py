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
from taxonlens.cli.config_options import ConfigValues, config_options
from taxonlens.index.memory import IndexKind
from taxonlens.models.device import Device, Precision
from taxonlens.predict.ray_engine import Engine, EngineOptions

app = typer.Typer(no_args_is_help=True, help="Vector memories (faiss) for retrieval.")


@app.command("build")
@config_options(EngineOptions, panel="Engine")
def index_build(
    data: Annotated[Path, typer.Argument(help="Labelled photos (manifest or image folder).")],
    settings: ConfigValues,
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

    engine = settings.build(EngineOptions)
    tax = load_taxonomy(taxonomy, allow_homonyms=True) if taxonomy else None
    records = read_records(data, tax, split)
    encoder = load_encoder(model, precision=precision, device=device)
    known = read_embeddings(embeddings, encoder.fingerprint()) if embeddings is not None else {}
    with progress_bar() as bar:
        if engine.engine == Engine.ray:  # the photos not embedded before, encoded on Ray
            from taxonlens.predict.ray_engine import encode_ray, ray_cluster

            todo = [r.image for r in records if str(Path(r.image).resolve()) not in known]
            task = bar.add_task("encoding exemplars on Ray", total=len(todo))
            with ray_cluster(engine.address):
                known |= encode_ray(encoder, todo, engine, batch_size, lambda n: bar.advance(task, n))
            bar.update(task, visible=False)
        task = bar.add_task("encoding exemplars", total=None)
        memory = build_exemplar_memory(records, encoder, out, tax, kind, per_class, batch_size,
                                       progress=lambda done, total: bar.update(task, completed=done, total=total),
                                       known=known, workers=loader_workers(workers))
    console.print(f"{len(memory):,} exemplars of {len(set(memory.labels.tolist())):,} classes in {out}")

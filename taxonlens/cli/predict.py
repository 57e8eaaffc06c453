"""``taxonlens predict`` and ``taxonlens calibrate``: name the organisms in photos, and calibrate
the back-off thresholds with the same recognizer options (the same names, the same meaning)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from taxonlens.cli.common import (
    DeviceOpt,
    ModelOpt,
    WorkersOpt,
    console,
    loader_workers,
    print_figures,
    print_skipped,
    progress_bar,
)
from taxonlens.cli.config_options import ConfigValues, config_options
from taxonlens.errors import TaxonlensError
from taxonlens.models.device import Device, Precision
from taxonlens.predict.ray_engine import Engine, EngineOptions
from taxonlens.predict.recognizer import RecognizerOptions
from taxonlens.predict.rows import RowFormat

PANEL = "Recognizer"
BatchOpt = Annotated[int, typer.Option(help="Photos per batch.")]
DETECTIONS = "Camera-trap detections"


def _recognizer(bar, options: RecognizerOptions):
    """The recognizer of ``options``, with a progress line while labels are embedded."""
    task = bar.add_task("loading the model and embedding labels", total=None)
    recognizer = options.build(progress=lambda n: bar.advance(task, n))
    bar.update(task, visible=False)
    return recognizer


def _check_counts(**counts: int) -> None:
    bad = [f"--{name.replace('_', '-')}" for name, n in counts.items() if n < 1]
    if bad:
        raise TaxonlensError(f"{' and '.join(bad)} must be at least 1")


@config_options(RecognizerOptions, EngineOptions, panel=PANEL)
def predict(
    paths: Annotated[list[Path] | None, typer.Argument(help="Image files, folders (searched recursively) and "
                                                             "manifests (.csv/.tsv/.jsonl/.parquet with an image "
                                                             "column).")] = None,
    *,
    settings: ConfigValues,
    rank: Annotated[str | None, typer.Option(help="Answer at this rank (default: the deepest).")] = None,
    top_k: Annotated[int, typer.Option(help="Answers per photo: the best and top_k - 1 alternatives.")] = 5,
    out: Annotated[Path, typer.Option(help="Output .csv, .tsv, .jsonl or .parquet; an interrupted run resumes "
                                           "(OUT.journal.jsonl and OUT.run.json beside it record how); with "
                                           "--engine ray a folder of Parquet shards.")] = Path(
        "predictions.csv"),
    output_format: Annotated[RowFormat, typer.Option("--format", help="taxonlens (one row per photo, with "
                                                                      "paths, confidences and back-off) or "
                                                                      "pybioclip (its rows and columns).")
                             ] = RowFormat.taxonlens,
    overwrite: Annotated[bool, typer.Option(help="Start OUT afresh instead of resuming it.")] = False,
    thresholds: Annotated[Path | None, typer.Option(help="Back-off thresholds JSON from `taxonlens calibrate` "
                                                         "(made with the same recognizer options).")] = None,
    batch_size: BatchOpt = 32,
    detections: Annotated[Path | None, typer.Option(
        help="MegaDetector batch output (instead of PATHS): classify its animal boxes; --out .json writes the file "
             "back with classifications, a table writes a row per box and OUT.images.<ext> a row per photo.",
        rich_help_panel=DETECTIONS)] = None,
    min_conf: Annotated[float, typer.Option(help="Lowest detector confidence of a box classified.",
                                            rich_help_panel=DETECTIONS)] = 0.2,
    crop_pad: Annotated[float, typer.Option(help="Padding of each crop, a fraction of the box's side.",
                                            rich_help_panel=DETECTIONS)] = 0.1,
    image_root: Annotated[Path | None, typer.Option(help="Folder the detector's file names are relative to "
                                                         "(default: the detections file's).",
                                                    rich_help_panel=DETECTIONS)] = None,
    workers: WorkersOpt = None,
) -> None:
    """Name the organism in each photo: a consistent taxonomy path, a confidence per rank, the rank
    reached after back-off and the top-k alternatives. Unreadable files are listed, not fatal.
    With --detections, name the animals in a camera-trap detector's boxes instead."""
    from taxonlens.predict import expand_inputs, predict_files, read_thresholds
    from taxonlens.predict.detections import check_detections_output, predict_detections

    options, engine = settings.build(RecognizerOptions), settings.build(EngineOptions)
    _check_counts(top_k=top_k, batch_size=batch_size, rerank_k=options.rerank_k)
    if (detections is None) == (not paths):
        raise TaxonlensError("give photo PATHS or --detections FILE (one of them)")
    if detections is not None and (output_format != RowFormat.taxonlens or engine.engine == Engine.ray):
        raise TaxonlensError("--detections writes taxonlens rows or the detector's JSON on the local engine: "
                             "--format pybioclip does not apply, nor does --engine ray")
    _check_out(engine, out) if detections is None else check_detections_output(out)
    if thresholds is not None:
        read_thresholds(thresholds)  # a malformed file fails before the model loads
    if detections is not None:
        from taxonlens.data.megadetector import read_detections

        read_detections(detections)  # so does a missing or malformed detections file
    files = expand_inputs(paths) if detections is None else []
    with progress_bar() as bar:
        recognizer = _recognizer(bar, options)
        if thresholds is not None:
            recognizer.decoder.thresholds = read_thresholds(thresholds, recognizer)
        if rank is not None:
            recognizer.taxonomy.rank_depth(rank)  # an unknown rank fails before any photo is read
        if detections is not None:
            task = bar.add_task("classifying boxes", total=None)
            run = predict_detections(recognizer, detections, out, min_conf, crop_pad, image_root, batch_size, top_k,
                                     rank, lambda n: bar.advance(task, n), overwrite, loader_workers(workers))
            return _detections_done(run)
        task = bar.add_task("predicting", total=len(files))
        run = {"progress": lambda n: bar.advance(task, n), "overwrite": overwrite, "output_format": output_format}
        if engine.engine == Engine.ray:
            from taxonlens.predict.ray_engine import predict_ray, ray_cluster

            with ray_cluster(engine.address):
                written, failures = predict_ray(recognizer, files, out, engine, batch_size, top_k, rank, **run)
        else:
            written, failures = predict_files(recognizer, files, out, batch_size, top_k, rank,
                                              workers=loader_workers(workers), **run)
    print_skipped(failures)
    console.print(f"{len(files) - len(failures)} photos predicted, {len(failures)} unreadable: {written}")


def _detections_done(run) -> None:
    """Print a finished ``predict --detections`` run: each photo's problems, then the counts."""
    print_skipped(run.problems)
    console.print(f"{run.classified} boxes classified in {run.photos} photos, {len(run.problems)} problems: "
                  f"{', '.join(map(str, run.written))}")


def _check_out(engine: EngineOptions, out: Path) -> None:
    """A bad ``--out`` fails before any model loads: a table for the local engine, a folder of shards on Ray."""
    from taxonlens.predict.files import check_output
    from taxonlens.predict.ray_engine import check_shard_folder

    if engine.engine == Engine.ray:
        check_shard_folder(out)
    else:
        check_output(out)


def _precision_at(values: list[str]) -> dict[str, float]:
    """``RANK=P`` pairs as ``{rank: target}``."""
    out = {}
    for v in values:
        rank, sep, target = v.partition("=")
        try:
            out[rank.strip()] = float(target)
        except ValueError:
            sep = ""
        if not sep or not rank.strip():
            raise TaxonlensError(f"--precision-at {v!r}: write RANK=TARGET, e.g. genus=0.9")
    return out


@config_options(RecognizerOptions, panel=PANEL)
def calibrate(
    manifest: Annotated[Path, typer.Argument(help="Labelled photos (manifest or image folder); the val split "
                                                  "is used when there is one.")],
    settings: ConfigValues,
    target_precision: Annotated[float, typer.Option(help="Target precision of the answers at every rank not "
                                                         "given by --precision-at.")] = 0.9,
    precision_at: Annotated[list[str] | None, typer.Option(help="A rank's own target, RANK=TARGET (repeat for "
                                                                "more ranks), e.g. genus=0.9.")] = None,
    out: Annotated[Path, typer.Option(help="Thresholds JSON for `taxonlens predict --thresholds`; the reliability "
                                           "diagram is drawn beside it (OUT.reliability.png).")] = Path(
        "thresholds.json"),
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
) -> None:
    """Back-off thresholds per rank: the lowest confidence at which answers at that rank are right at
    least --target-precision of the time on labelled photos, with a reliability diagram per rank."""
    from taxonlens.predict import calibrate_thresholds, write_thresholds
    from taxonlens.predict.thresholds import reliability_plot_path
    from taxonlens.tables import check_writable

    options = settings.build(RecognizerOptions)
    _check_counts(batch_size=batch_size, rerank_k=options.rerank_k)
    targets = _precision_at(precision_at or [])
    bad = {k: v for k, v in {"--target-precision": target_precision, **targets}.items() if not 0 < v <= 1}
    if bad:
        raise TaxonlensError(f"target precision must lie in (0, 1]; got {bad}")
    check_writable(out)
    with progress_bar() as bar:
        recognizer = _recognizer(bar, options)
        task = bar.add_task("calibrating", total=None)
        calibration = calibrate_thresholds(recognizer, manifest, target_precision, batch_size,
                                           lambda done, total: bar.update(task, completed=done, total=total),
                                           precision_at=targets, workers=loader_workers(workers))
    written = write_thresholds(calibration, recognizer, out)
    print_figures(f"thresholds on {calibration.n_photos} photos ({written}; reliability: "
                  f"{reliability_plot_path(written).name})",
                  {f"{r} (target {calibration.targets[r]:g})": "never" if t == float("inf") else t
                   for r, t in calibration.thresholds.items()})


@config_options(EngineOptions, panel="Engine")
def embed(
    paths: Annotated[list[Path], typer.Argument(help="Image files, folders (searched recursively) and manifests.")],
    settings: ConfigValues,
    model: ModelOpt = "bioclip-2",
    out: Annotated[Path, typer.Option(help="Output .parquet (or .jsonl, .csv, .tsv): file_name, embedding, dim, "
                                           "model fingerprint, error; an interrupted run resumes.")] = Path(
        "embeddings.parquet"),
    overwrite: Annotated[bool, typer.Option(help="Start OUT afresh instead of resuming it.")] = False,
    precision: Annotated[Precision, typer.Option(help="Number format of the model (as `predict --precision`).")
                         ] = Precision.auto,
    device: DeviceOpt = Device.auto,
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
) -> None:
    """One unit image embedding per photo, for your own analyses or `index build --embeddings`.
    Unreadable files are listed, and written as rows with an error."""
    from taxonlens.models.encoders import load_encoder
    from taxonlens.predict import expand_inputs
    from taxonlens.predict.embed import embed_files

    engine = settings.build(EngineOptions)
    _check_counts(batch_size=batch_size)
    _check_out(engine, out)
    files = expand_inputs(paths)
    encoder = load_encoder(model, precision=precision, device=device)
    with progress_bar() as bar:
        task = bar.add_task("embedding", total=len(files))
        if engine.engine == Engine.ray:
            from taxonlens.predict.ray_engine import embed_ray, ray_cluster

            with ray_cluster(engine.address):
                written, failures = embed_ray(encoder, files, out, engine, batch_size,
                                              lambda n: bar.advance(task, n), overwrite)
        else:
            written, failures = embed_files(encoder, files, out, batch_size, lambda n: bar.advance(task, n), overwrite,
                                            loader_workers(workers))
    print_skipped(failures)
    console.print(f"{len(files) - len(failures)} photos embedded ({encoder.embed_dim} dimensions), "
                  f"{len(failures)} unreadable: {written}")

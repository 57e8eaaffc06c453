"""``taxonlens predict`` and ``taxonlens calibrate``: name the organisms in photos, and calibrate
the back-off thresholds with the same recognizer options (the same names, the same meaning)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from taxonlens.cli.common import (
    DeviceOpt,
    LabelsTaxonomyOpt,
    ModelOpt,
    console,
    print_figures,
    print_skipped,
    progress_bar,
)
from taxonlens.errors import TaxonlensError
from taxonlens.models.device import Device, Precision
from taxonlens.models.text import LabelTextType, PromptTemplates
from taxonlens.predict.recognizer import Scores
from taxonlens.predict.rows import RowFormat
from taxonlens.recognize.answers import AnswerFormat
from taxonlens.recognize.decode import DecodingMethod
from taxonlens.recognize.rerank import RerankMethod
from taxonlens.recognize.zeroshot import Combine

# The recognizer options predict and calibrate share.
LabelsOpt = Annotated[Path | None, typer.Option(help="Plain labels, one per line, instead of a taxonomy.")]
SubsetOpt = Annotated[str | None, typer.Option(help="Only these taxa: RANK=NAME[,NAME...] or a CSV whose first "
                                                    "column is headed by a rank (as pybioclip's --subset).")]
TextTypeOpt = Annotated[LabelTextType, typer.Option(help="Label text embedded for each taxon.")]
TemplatesOpt = Annotated[PromptTemplates, typer.Option(help="photo (one caption) or openai (80 templates "
                                                            "averaged).")]
MethodOpt = Annotated[DecodingMethod, typer.Option(help="exact (most probable leaf) or greedy (top-down).")]
PrecisionOpt = Annotated[Precision, typer.Option(help="Number format of the model: auto (bf16 where this CPU is fast "
                                                      "at it), fp32 or bf16.")]
ScoresOpt = Annotated[Scores, typer.Option(help="leaves (each leaf's text scored) or per-rank (each rank's taxa "
                                                "embedded and scored on their own, combined by --combine).")]
CombineOpt = Annotated[Combine, typer.Option(help="With --scores per-rank: fuse (product over ranks: the tree-"
                                                  "fusion path) or leaves (mean of ranks spread over the leaves).")]
MemoryOpt = Annotated[Path | None, typer.Option(help="Classify by nearest exemplars in a memory from "
                                                     "`taxonlens index build` (instead of label text).")]
ClassifierOpt = Annotated[Path | None, typer.Option(help="Classify with a few-shot classifier from "
                                                         "`taxonlens fewshot fit` (instead of label text).")]
RerankOpt = Annotated[str | None, typer.Option(help="RAR: a multimodal LLM (preset, folder or hub name) that "
                                                    "reranks the top --rerank-k candidates.")]
RerankKOpt = Annotated[int, typer.Option(help="Candidates the LLM ranks.")]
RerankMethodOpt = Annotated[RerankMethod, typer.Option(help="score (option likelihoods) or generate (a ranked "
                                                            "list).")]
RerankAnswerOpt = Annotated[AnswerFormat, typer.Option(help="How the ranker answers: letter or name (as "
                                                            "fine-tuned).")]
RerankSystemOpt = Annotated[bool, typer.Option(help="Ask the ranker with the reference system prompt.")]
BatchOpt = Annotated[int, typer.Option(help="Photos per batch.")]


def _recognizer(bar, **options):
    """:func:`~taxonlens.predict.build_recognizer` with a progress line while labels are embedded."""
    from taxonlens.predict import build_recognizer

    task = bar.add_task("loading the model and embedding labels", total=None)
    recognizer = build_recognizer(**options, progress=lambda n: bar.advance(task, n))
    bar.update(task, visible=False)
    return recognizer


def _check_counts(**counts: int) -> None:
    bad = [f"--{name.replace('_', '-')}" for name, n in counts.items() if n < 1]
    if bad:
        raise TaxonlensError(f"{' and '.join(bad)} must be at least 1")


def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (searched recursively).")],
    model: ModelOpt = "bioclip-2",
    taxonomy: LabelsTaxonomyOpt = None,
    labels: LabelsOpt = None,
    subset: SubsetOpt = None,
    rank: Annotated[str | None, typer.Option(help="Answer at this rank (default: the deepest).")] = None,
    top_k: Annotated[int, typer.Option(help="Answers per photo: the best and top_k - 1 alternatives.")] = 5,
    out: Annotated[Path, typer.Option(help="Output .csv, .tsv, .jsonl or .parquet; an interrupted run resumes "
                                           "(OUT.journal.jsonl and OUT.run.json beside it record how).")] = Path(
        "predictions.csv"),
    output_format: Annotated[RowFormat, typer.Option("--format", help="taxonlens (one row per photo, with "
                                                                      "paths, confidences and back-off) or "
                                                                      "pybioclip (its rows and columns).")
                             ] = RowFormat.taxonlens,
    overwrite: Annotated[bool, typer.Option(help="Start OUT afresh instead of resuming it.")] = False,
    thresholds: Annotated[Path | None, typer.Option(help="Back-off thresholds JSON from `taxonlens calibrate` "
                                                         "(made with the same recognizer options).")] = None,
    text_type: TextTypeOpt = LabelTextType.taxonomic,
    templates: TemplatesOpt = PromptTemplates.photo,
    method: MethodOpt = DecodingMethod.exact,
    scores: ScoresOpt = Scores.leaves,
    combine: CombineOpt = Combine.fuse,
    precision: PrecisionOpt = Precision.auto,
    device: DeviceOpt = Device.auto,
    memory: MemoryOpt = None,
    classifier: ClassifierOpt = None,
    rerank: RerankOpt = None,
    rerank_k: RerankKOpt = 5,
    rerank_method: RerankMethodOpt = RerankMethod.score,
    rerank_answer: RerankAnswerOpt = AnswerFormat.letter,
    rerank_system: RerankSystemOpt = True,
    batch_size: BatchOpt = 32,
) -> None:
    """Name the organism in each photo: a consistent taxonomy path, a confidence per rank, the rank
    reached after back-off and the top-k alternatives. Unreadable files are listed, not fatal."""
    from taxonlens.predict import OUTPUT_FORMATS, expand_inputs, predict_files, read_thresholds
    from taxonlens.tables import check_writable, table_format

    _check_counts(top_k=top_k, batch_size=batch_size, rerank_k=rerank_k)
    table_format(check_writable(out), "output", OUTPUT_FORMATS)
    if thresholds is not None:
        read_thresholds(thresholds)  # a malformed file fails before the model loads
    files = expand_inputs(paths)
    with progress_bar() as bar:
        recognizer = _recognizer(bar, model=model, taxonomy=taxonomy, labels=labels, subset=subset,
                                 text_type=text_type, templates=templates, precision=precision, method=method,
                                 scores=scores, combine=combine, memory=memory, classifier=classifier, rerank=rerank,
                                 rerank_k=rerank_k, rerank_method=rerank_method, rerank_answer=rerank_answer,
                                 rerank_system=rerank_system, device=device)
        if thresholds is not None:
            recognizer.decoder.thresholds = read_thresholds(thresholds, recognizer)
        if rank is not None:
            recognizer.taxonomy.rank_depth(rank)  # an unknown rank fails before any photo is read
        task = bar.add_task("predicting", total=len(files))
        written, failures = predict_files(recognizer, files, out, batch_size, top_k, rank,
                                          progress=lambda n: bar.advance(task, n), overwrite=overwrite,
                                          output_format=output_format)
    print_skipped(failures)
    console.print(f"{len(files) - len(failures)} photos predicted, {len(failures)} unreadable: {written}")


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


def calibrate(
    manifest: Annotated[Path, typer.Argument(help="Labelled photos (manifest or image folder); the val split "
                                                  "is used when there is one.")],
    model: ModelOpt = "bioclip-2",
    taxonomy: LabelsTaxonomyOpt = None,
    labels: LabelsOpt = None,
    subset: SubsetOpt = None,
    target_precision: Annotated[float, typer.Option(help="Target precision of the answers at every rank not "
                                                         "given by --precision-at.")] = 0.9,
    precision_at: Annotated[list[str] | None, typer.Option(help="A rank's own target, RANK=TARGET (repeat for "
                                                                "more ranks), e.g. genus=0.9.")] = None,
    out: Annotated[Path, typer.Option(help="Thresholds JSON for `taxonlens predict --thresholds`; the reliability "
                                           "diagram is drawn beside it (OUT.reliability.png).")] = Path(
        "thresholds.json"),
    text_type: TextTypeOpt = LabelTextType.taxonomic,
    templates: TemplatesOpt = PromptTemplates.photo,
    method: MethodOpt = DecodingMethod.exact,
    scores: ScoresOpt = Scores.leaves,
    combine: CombineOpt = Combine.fuse,
    precision: PrecisionOpt = Precision.auto,
    device: DeviceOpt = Device.auto,
    memory: MemoryOpt = None,
    classifier: ClassifierOpt = None,
    rerank: RerankOpt = None,
    rerank_k: RerankKOpt = 5,
    rerank_method: RerankMethodOpt = RerankMethod.score,
    rerank_answer: RerankAnswerOpt = AnswerFormat.letter,
    rerank_system: RerankSystemOpt = True,
    batch_size: BatchOpt = 32,
) -> None:
    """Back-off thresholds per rank: the lowest confidence at which answers at that rank are right at
    least --target-precision of the time on labelled photos, with a reliability diagram per rank."""
    from taxonlens.predict import calibrate_thresholds, write_thresholds
    from taxonlens.predict.thresholds import reliability_plot_path
    from taxonlens.tables import check_writable

    _check_counts(batch_size=batch_size, rerank_k=rerank_k)
    targets = _precision_at(precision_at or [])
    bad = {k: v for k, v in {"--target-precision": target_precision, **targets}.items() if not 0 < v <= 1}
    if bad:
        raise TaxonlensError(f"target precision must lie in (0, 1]; got {bad}")
    check_writable(out)
    with progress_bar() as bar:
        recognizer = _recognizer(bar, model=model, taxonomy=taxonomy, labels=labels, subset=subset,
                                 text_type=text_type, templates=templates, precision=precision, method=method,
                                 scores=scores, combine=combine, memory=memory, classifier=classifier, rerank=rerank,
                                 rerank_k=rerank_k, rerank_method=rerank_method, rerank_answer=rerank_answer,
                                 rerank_system=rerank_system, device=device)
        task = bar.add_task("calibrating", total=None)
        calibration = calibrate_thresholds(recognizer, manifest, target_precision, batch_size,
                                           lambda done, total: bar.update(task, completed=done, total=total),
                                           precision_at=targets)
    written = write_thresholds(calibration, recognizer, out)
    print_figures(f"thresholds on {calibration.n_photos} photos ({written}; reliability: "
                  f"{reliability_plot_path(written).name})",
                  {f"{r} (target {calibration.targets[r]:g})": "never" if t == float("inf") else t
                   for r, t in calibration.thresholds.items()})


def embed(
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (searched recursively).")],
    model: ModelOpt = "bioclip-2",
    out: Annotated[Path, typer.Option(help="Output .parquet (or .jsonl, .csv, .tsv): file_name, embedding, dim, "
                                           "model fingerprint, error; an interrupted run resumes.")] = Path(
        "embeddings.parquet"),
    overwrite: Annotated[bool, typer.Option(help="Start OUT afresh instead of resuming it.")] = False,
    precision: PrecisionOpt = Precision.auto,
    device: DeviceOpt = Device.auto,
    batch_size: BatchOpt = 32,
) -> None:
    """One unit image embedding per photo, for your own analyses or `index build --embeddings`.
    Unreadable files are listed, and written as rows with an error."""
    from taxonlens.models.encoders import load_encoder
    from taxonlens.predict import OUTPUT_FORMATS, expand_inputs
    from taxonlens.predict.embed import embed_files
    from taxonlens.tables import check_writable, table_format

    _check_counts(batch_size=batch_size)
    table_format(check_writable(out), "output", OUTPUT_FORMATS)
    files = expand_inputs(paths)
    encoder = load_encoder(model, precision=precision, device=device)
    with progress_bar() as bar:
        task = bar.add_task("embedding", total=len(files))
        written, failures = embed_files(encoder, files, out, batch_size, lambda n: bar.advance(task, n), overwrite)
    print_skipped(failures)
    console.print(f"{len(files) - len(failures)} photos embedded ({encoder.embed_dim} dimensions), "
                  f"{len(failures)} unreadable: {written}")

"""``taxonlens predict`` and ``taxonlens calibrate``: name the organisms in photos, and calibrate
the back-off thresholds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from taxonlens.cli.common import LabelsTaxonomyOpt, ModelOpt, console, print_figures, print_skipped, progress_bar
from taxonlens.errors import TaxonlensError
from taxonlens.models.encoders import Precision
from taxonlens.models.text import LabelTextType, PromptTemplates
from taxonlens.recognize.answers import AnswerFormat
from taxonlens.recognize.decode import DecodingMethod
from taxonlens.recognize.rerank import RerankMethod


def read_thresholds(path: Path | None) -> dict[str, float] | None:
    """Back-off thresholds ``{rank: minimum confidence}`` from a `taxonlens calibrate` JSON file."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TaxonlensError(f"thresholds file {path}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
        raise TaxonlensError(f"thresholds file {path}: expected a JSON object {{rank: minimum confidence}}, "
                             "as written by `taxonlens calibrate`")
    return {str(k): float(v) for k, v in data.items()}


def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (searched recursively).")],
    model: ModelOpt = "bioclip-2",
    taxonomy: LabelsTaxonomyOpt = None,
    labels: Annotated[Path | None, typer.Option(help="Plain labels, one per line, instead of a taxonomy.")] = None,
    subset: Annotated[str | None, typer.Option(help="Only these taxa: RANK=NAME[,NAME...] or a CSV whose first "
                                                    "column is headed by a rank (as pybioclip's --subset).")] = None,
    rank: Annotated[str | None, typer.Option(help="Answer at this rank (default: the deepest).")] = None,
    top_k: Annotated[int, typer.Option(help="Answers per photo: the best and top_k - 1 alternatives.")] = 5,
    out: Annotated[Path, typer.Option(help="Output .csv, .jsonl or .parquet; an interrupted run resumes.")] = Path(
        "predictions.csv"),
    thresholds: Annotated[Path | None, typer.Option(help="Back-off thresholds JSON from `taxonlens calibrate`.")
                          ] = None,
    text_type: Annotated[LabelTextType, typer.Option(help="Label text: taxonomic, scientific, common, ...")
                         ] = LabelTextType.taxonomic,
    templates: Annotated[PromptTemplates, typer.Option(help="photo (one caption) or openai (80 templates averaged).")
                         ] = PromptTemplates.photo,
    method: Annotated[DecodingMethod, typer.Option(help="exact (most probable leaf) or greedy (top-down).")
                      ] = DecodingMethod.exact,
    batch_size: Annotated[int, typer.Option()] = 32,
    precision: Annotated[Precision, typer.Option(help="auto (bf16 where this CPU is fast at it), fp32 or bf16.")
                         ] = Precision.auto,
    rerank: Annotated[str | None, typer.Option(help="RAR: a multimodal LLM (preset, folder or hub name) that "
                                                    "reranks the top --rerank-k candidates.")] = None,
    rerank_k: Annotated[int, typer.Option(help="Candidates the LLM ranks.")] = 5,
    rerank_method: Annotated[RerankMethod, typer.Option(help="score (option likelihoods) or generate (a ranked "
                                                             "list).")] = RerankMethod.score,
    memory: Annotated[Path | None, typer.Option(help="Classify by nearest exemplars in a memory from "
                                                     "`taxonlens index build` (instead of label text).")] = None,
    rerank_answer: Annotated[AnswerFormat, typer.Option(help="How the ranker answers: letter or name (as "
                                                             "fine-tuned).")] = AnswerFormat.letter,
    rerank_system: Annotated[bool, typer.Option(help="Ask the ranker with the reference system prompt.")] = True,
) -> None:
    """Name the organism in each photo: a consistent taxonomy path, a confidence per rank, the rank
    reached after back-off and the top-k alternatives. Unreadable files are listed, not fatal."""
    from taxonlens.predict import build_recognizer, expand_inputs, predict_files

    if top_k < 1 or batch_size < 1:
        raise TaxonlensError("--top-k and --batch-size must be at least 1")
    files = expand_inputs(paths)
    with progress_bar() as bar:
        task = bar.add_task("embedding labels", total=None)
        recognizer = build_recognizer(model, taxonomy, labels, subset, text_type, templates, precision,
                                      read_thresholds(thresholds), method,
                                      progress=lambda n: bar.advance(task, n), rerank=rerank, rerank_k=rerank_k,
                                      rerank_method=rerank_method, memory=memory, rerank_answer=rerank_answer,
                                      rerank_system=rerank_system)
        if rank is not None:
            recognizer.taxonomy.rank_depth(rank)  # an unknown rank fails before any photo is read
        bar.update(task, visible=False)
        task = bar.add_task("predicting", total=len(files))
        written, failures = predict_files(recognizer, files, out, batch_size, top_k, rank,
                                          progress=lambda n: bar.advance(task, n))
    print_skipped(failures)
    console.print(f"{len(files) - len(failures)} photos predicted, {len(failures)} unreadable: {written}")


def calibrate(
    manifest: Annotated[Path, typer.Argument(help="Labelled photos (manifest or image folder); the val split "
                                                  "is used when there is one.")],
    model: ModelOpt = "bioclip-2",
    taxonomy: LabelsTaxonomyOpt = None,
    precision_target: Annotated[float, typer.Option("--precision", help="Target precision at every rank.")] = 0.9,
    out: Annotated[Path, typer.Option(help="Thresholds JSON for `taxonlens predict --thresholds`.")] = Path(
        "thresholds.json"),
    text_type: Annotated[LabelTextType, typer.Option()] = LabelTextType.taxonomic,
    batch_size: Annotated[int, typer.Option()] = 32,
) -> None:
    """Back-off thresholds per rank: the lowest confidence at which answers at that rank are right at
    least --precision of the time on labelled photos."""
    from taxonlens.predict import build_recognizer, calibrate_thresholds

    if not 0 < precision_target <= 1:
        raise TaxonlensError("--precision must lie in (0, 1]")
    recognizer = build_recognizer(model, taxonomy, text_type=text_type)
    with progress_bar() as bar:
        task = bar.add_task("calibrating", total=None)
        result = calibrate_thresholds(recognizer, manifest, precision_target, batch_size,
                                      progress=lambda done, total: bar.update(task, completed=done, total=total))
    out.write_text(json.dumps(result, indent=1) + "\n")
    print_figures(f"thresholds for precision {precision_target} ({out})", result)

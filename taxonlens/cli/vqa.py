"""``taxonlens vqa``: build hierarchical multiple-choice questions, measure their leakage, answer
them with a multimodal LLM, and write RAR ranker data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from taxonlens.bench.cells import FIGURE_HEADERS, figure_cells, table
from taxonlens.cli.common import (
    DeviceOpt,
    LabelsTaxonomyOpt,
    ModelOpt,
    OverwriteOpt,
    PrecisionOpt,
    QuantizeOpt,
    SplitOpt,
    TaxonomyOpt,
    console,
    load_taxonomy,
    print_figures,
    progress_bar,
    read_records,
)
from taxonlens.data.vqa_build import DistractorMode
from taxonlens.models.device import Device, Precision
from taxonlens.models.mllm import Quantization
from taxonlens.recognize.answers import AnswerFormat
from taxonlens.recognize.vqa_answer import AnsweringMode
from taxonlens.tables import check_writable

app = typer.Typer(no_args_is_help=True, help="Hierarchical visual question answering with multimodal LLMs.")
BenchTaxonomyOpt = Annotated[str | None, typer.Option(help="Taxonomy (default: built from the benchmark).")]


@app.command("build")
def vqa_build(
    data: Annotated[Path, typer.Argument(help="Labelled photos: a manifest or an image folder.")],
    out: Annotated[Path, typer.Option(help="Benchmark JSONL to write.")],
    taxonomy: TaxonomyOpt = "inat21-plantae",
    options: Annotated[int, typer.Option(help="Options per level, the truth included.")] = 4,
    mode: Annotated[DistractorMode, typer.Option(help="random, similar (nearest taxa by --encoder text embeddings) "
                                                      "or path (whole alternative paths: no consistency leakage).")
                    ] = DistractorMode.random,
    encoder: Annotated[str, typer.Option(help="Encoder whose taxon text embeddings define 'similar'.")] = "bioclip",
    split: SplitOpt = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write hierarchical multiple-choice questions (the benchmark's JSONL format) for labelled photos."""
    from taxonlens.data.vqa import write_vqa_benchmark
    from taxonlens.data.vqa_build import build_vqa
    from taxonlens.recognize.vqa import leakage

    tax = load_taxonomy(taxonomy, allow_homonyms=True)
    similarity = None
    if mode == DistractorMode.similar:
        from taxonlens.models.encoders import load_encoder
        from taxonlens.recognize.zeroshot import rank_classifiers

        similarity = {r: c.embeddings.numpy() for r, c in rank_classifiers(load_encoder(encoder), tax).items()}
    records = build_vqa(read_records(data, tax, split), tax, options, mode, seed, similarity)
    write_vqa_benchmark(records, out)
    summary = leakage(records, tax)
    console.print(f"wrote {len(records)} question sets to {out}; {summary.n_unique} "
                  f"({100 * summary.share_unique:.1f}%) have a single consistent path among their options")


@app.command("leakage")
def vqa_leakage(
    benchmark: Annotated[Path, typer.Argument(help="Hierarchical-VQA JSONL.")],
    taxonomy: BenchTaxonomyOpt = None,
) -> None:
    """How much the offered options alone reveal: consistent paths per record, and what an image-blind
    consistent decoder scores."""
    from taxonlens.data.vqa import read_vqa_benchmark
    from taxonlens.recognize.vqa import leakage

    records = read_vqa_benchmark(benchmark)  # first: a missing benchmark is named as such
    s = leakage(records, load_taxonomy(taxonomy or str(benchmark), allow_homonyms=True))
    print_figures(f"{benchmark.name}: consistency leakage", {
        "records": s.n_records, **{f"records with {k} consistent paths": v for k, v in sorted(s.path_counts.items())},
        "single consistent path (%)": 100 * s.share_unique, "of those, the truth": s.n_unique_truth,
        "image-blind HCA (%)": s.blind_hca, "image-blind HCA, random tie-break (%)": s.expected_blind_hca})


@app.command("answer")
def vqa_answer(
    benchmark: Annotated[Path, typer.Argument(help="Hierarchical-VQA JSONL (its images must be readable).")],
    model: Annotated[str, typer.Option(help="Multimodal LLM: tiny preset, folder, or hub name.")],
    out: Annotated[Path, typer.Option(help="Answers JSONL (scored by `taxonlens evaluate`); resumes.")],
    mode: Annotated[AnsweringMode, typer.Option(help="generate, score or consistent.")] = AnsweringMode.consistent,
    taxonomy: BenchTaxonomyOpt = None,
    images: Annotated[Path | None, typer.Option(help="Folder the benchmark's image paths are relative to.")] = None,
    organism: Annotated[str, typer.Option(help="The word used in the questions.")] = "organism",
    answer: Annotated[AnswerFormat, typer.Option(help="What score/consistent score: each option's letter (the "
                                                      "reference protocol) or name (a model fine-tuned with "
                                                      "--answer name).")] = AnswerFormat.letter,
    system: Annotated[bool, typer.Option(help="Ask after the reference system prompt (--no-system for a model "
                                              "fine-tuned without it).")] = True,
    batch_size: Annotated[int, typer.Option()] = 16,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    quantize: QuantizeOpt = Quantization.none,
) -> None:
    """Answer every level of every record; print HCA, leaf accuracy, POR, S-POR, TOR on all records and on
    the leakage-free ones, beside the image-blind control."""
    from taxonlens.data.vqa import read_vqa_benchmark
    from taxonlens.models.mllm import load_lmm
    from taxonlens.recognize.answers import SYSTEM_PROMPT
    from taxonlens.recognize.vqa_answer import answer_benchmark, consistency_report

    check_writable(out)
    records = read_vqa_benchmark(benchmark)
    tax = load_taxonomy(taxonomy or str(benchmark), allow_homonyms=True)
    lmm = load_lmm(model, precision, device=device, quantize=quantize)
    with progress_bar() as bar:
        task = bar.add_task(f"answering ({mode})", total=len(records))
        answer_benchmark(lmm, records, out, images, mode, tax, organism, progress=lambda n: bar.advance(task, n),
                         overwrite=overwrite, batch_size=batch_size, answer=answer, system=SYSTEM_PROMPT if system else None)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    report = consistency_report(records, rows, tax)
    scores = table(f"{model}, {mode} ({out})", ("records", "n", "decoder", *FIGURE_HEADERS))
    for subset, figures in report.items():
        for name in ("answers", "blind_control"):
            if name in figures:
                scores.add_row(subset, str(figures["n"]), name, *figure_cells(figures[name]))
    console.print(scores)


@app.command("ranker-data")
def vqa_ranker_data(
    data: Annotated[Path, typer.Argument(help="Labelled photos: a manifest or an image folder.")],
    out: Annotated[Path, typer.Option(help="Question sets JSONL for `taxonlens train sft --ranks RANK`.")],
    model: ModelOpt = "bioclip-2",
    taxonomy: LabelsTaxonomyOpt = None,
    k: Annotated[int, typer.Option(help="Candidates per photo.")] = 5,
    split: SplitOpt = "train",
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
) -> None:
    """RAR ranker fine-tuning data: per photo, the encoder's top-k candidates (the truth among them) as
    the options of one question at the label rank."""
    from taxonlens.data.vqa import write_vqa_benchmark
    from taxonlens.predict import build_recognizer
    from taxonlens.recognize.rerank import ranker_records

    recognizer = build_recognizer(model, taxonomy, precision=precision, device=device)
    records = ranker_records(recognizer, read_records(data, recognizer.taxonomy, split), k, seed)
    write_vqa_benchmark(records, out)
    console.print(f"wrote {len(records)} ranking questions at the {recognizer.taxonomy.ranks[-1]} rank to {out}")

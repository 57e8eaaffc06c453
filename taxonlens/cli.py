"""The ``taxonlens`` command line: a thin typer layer over the Python API.

Input errors (:class:`~taxonlens.errors.TaxonlensError`) are printed to stderr
as one red line and exit with status 2; no traceback.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from taxonlens.errors import TaxonlensError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Recognise organisms across the tree of life with consistent taxonomy paths.")
taxonomy_app = typer.Typer(no_args_is_help=True, help="Inspect and validate taxonomies.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: print figures and ratios measured on this machine.")
train_app = typer.Typer(no_args_is_help=True, help="Train models (contrastive BioCLIP objective, ...).")
vqa_app = typer.Typer(no_args_is_help=True, help="Hierarchical visual question answering with multimodal LLMs.")
index_app = typer.Typer(no_args_is_help=True, help="Vector memories (faiss) for retrieval.")
app.add_typer(taxonomy_app, name="taxonomy")
app.add_typer(train_app, name="train")
app.add_typer(vqa_app, name="vqa")
app.add_typer(index_app, name="index")
app.add_typer(bench_app, name="bench")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)

TaxonomyOpt = Annotated[
    str,
    typer.Option(help="Taxonomy file (.json, .csv, .tsv, .jsonl) or a built-in name: "
                      "inat21-plantae, inat21-animalia, imagenet-animal."),
]


def progress_bar() -> Progress:
    """The rich progress bar every long command shows."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=False)


def _load(taxonomy: str, allow_homonyms: bool = False):
    from taxonlens.data import taxonomy_or_benchmark

    return taxonomy_or_benchmark(taxonomy, allow_homonyms=allow_homonyms)


def _print_figures(title: str, figures: dict[str, float | int]) -> None:
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in figures.items():
        table.add_row(k, f"{v:,.4g}" if isinstance(v, float) else str(v))
    console.print(table)


# --------------------------------------------------------------------- taxonomy
@taxonomy_app.command("info")
def taxonomy_info(
    file: Annotated[str, typer.Argument(help="Taxonomy file or built-in name.")],
    allow_homonyms: Annotated[bool, typer.Option(help="Accept a name whose parent changes within a kingdom.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Load and validate a taxonomy; print its size per rank."""
    summary = _load(file, allow_homonyms).summary()
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


# ------------------------------------------------------------------- synthworld
@app.command()
def synthworld(
    out: Annotated[Path, typer.Option(help="Output folder (images/, manifest.jsonl, taxonomy, world.json).")],
    taxonomy: TaxonomyOpt = "inat21-plantae",
    species: Annotated[int, typer.Option(help="Number of species (sibling clusters are chosen).")] = 200,
    images_per_species: Annotated[int, typer.Option(help="Photos of each species.")] = 20,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
    novel_fraction: Annotated[float, typer.Option(help="Share of species held out as the novel split.")] = 0.15,
    nuisance: Annotated[float, typer.Option(help="0..1 strength of pose, clutter, lighting, noise, occlusion.")] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    random_tree: Annotated[bool, typer.Option(help="Ignore --taxonomy and generate a random tree of life.")] = False,
) -> None:
    """Write a procedural tree-of-life image set (PNGs + manifest). Re-running resumes."""
    from taxonlens.synthworld import SynthWorld, random_taxonomy

    tax = random_taxonomy(species, seed=seed) if random_tree else _load(taxonomy)
    world = SynthWorld.create(tax, species, images_per_species, novel_fraction, size, seed, nuisance)
    with progress_bar() as bar:
        task = bar.add_task("rendering", total=len(world.index()))
        manifest = world.write(out, progress=lambda n: bar.advance(task, n))
    counts = world.config()["images_per_split"]
    console.print(f"wrote {manifest} ({world.taxonomy.n_leaves} species, {len(world.novel)} novel): {counts}")


# --------------------------------------------------------------------- evaluate
class OutputFormat(str, Enum):
    table = "table"
    json = "json"


@app.command()
def evaluate(
    benchmark: Annotated[Path, typer.Argument(help="Hierarchical-VQA JSONL, or a manifest (.jsonl/.csv/.parquet).")],
    predictions: Annotated[Path, typer.Argument(help="Predictions JSONL {image, path} or the reference result JSON.")],
    format: Annotated[OutputFormat, typer.Option("--format", help="table or json.")] = OutputFormat.table,
    ranks: Annotated[list[str] | None, typer.Option("--ranks", help="Score only these ranks (names or level numbers).")] = None,
    taxonomy: Annotated[str | None, typer.Option(help="Taxonomy for path validity and mistake severity "
                                                      "(default: built from the benchmark).")] = None,
) -> None:
    """Score predicted paths: per-rank accuracy, HCA, leaf accuracy, POR, S-POR, TOR (percent)."""
    from taxonlens.evaluate import evaluate_files

    tax = _load(taxonomy, allow_homonyms=True) if taxonomy else None
    rank_args = [int(r) if r.isdigit() else r for r in ranks] if ranks else None
    report = evaluate_files(benchmark, predictions, ranks=rank_args, taxonomy=tax).to_dict()
    if format is OutputFormat.json:
        print(json.dumps(report))
        return
    _print_report(report)


def _print_report(report: dict) -> None:
    table = Table(title=f"{report['n']} images")
    for col in ("HCA", "leaf acc", "POR", "S-POR", "TOR"):
        table.add_column(col, justify="right")
    table.add_row(*(f"{report[k]:.2f}" for k in ("hca", "acc_leaf", "por", "s_por", "tor")))
    console.print(table)
    per_rank = Table(title="accuracy per rank (%)")
    for rank in report["per_rank"]:
        per_rank.add_column(rank, justify="right")
    per_rank.add_row(*(f"{v:.2f}" for v in report["per_rank"].values()))
    console.print(per_rank)
    extras = {k: v for k, v in report.items() if k not in ("hca", "acc_leaf", "por", "s_por", "tor", "per_rank", "n")}
    if extras:
        console.print(json.dumps(extras, indent=1))


# ---------------------------------------------------------------------- predict
def _read_thresholds(path: Path | None) -> dict[str, float] | None:
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


ModelOpt = Annotated[str, typer.Option(help="Encoder: bioclip, bioclip-2, hf-hub:ORG/REPO, a model folder, "
                                            "an open_clip ARCH[:FILE|:TAG], or a tiny preset.")]
LabelsTaxonomyOpt = Annotated[str | None, typer.Option(
    "--taxonomy", help="Label tree (.json/.csv/.tsv/.jsonl or a built-in name), or a TreeOfLife "
                       "txt_emb_species.json; default: the TreeOfLife labels of the model, as pybioclip.")]


@app.command()
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
    text_type: Annotated[str, typer.Option(help="Label text: taxonomic, scientific, common, ...")] = "taxonomic",
    templates: Annotated[str, typer.Option(help="photo (one caption) or openai (80 templates averaged).")] = "photo",
    method: Annotated[str, typer.Option(help="exact (most probable leaf) or greedy (top-down).")] = "exact",
    batch_size: Annotated[int, typer.Option()] = 32,
    precision: Annotated[str, typer.Option(help="auto (bf16 where this CPU is fast at it), fp32 or bf16.")] = "auto",
    rerank: Annotated[str | None, typer.Option(help="RAR: a multimodal LLM (preset, folder or hub name) that "
                                                    "reranks the top --rerank-k candidates.")] = None,
    rerank_k: Annotated[int, typer.Option(help="Candidates the LLM ranks.")] = 5,
    rerank_method: Annotated[str, typer.Option(help="score (option likelihoods) or generate (a ranked list).")
                             ] = "score",
    memory: Annotated[Path | None, typer.Option(help="Classify by nearest exemplars in a memory from "
                                                     "`taxonlens index build` (instead of label text).")] = None,
    rerank_answer: Annotated[str, typer.Option(help="How the ranker answers: letter or name (as fine-tuned).")
                             ] = "letter",
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
                                      _read_thresholds(thresholds), method,
                                      progress=lambda n: bar.advance(task, n), rerank=rerank, rerank_k=rerank_k,
                                      rerank_method=rerank_method, memory=memory, rerank_answer=rerank_answer,
                                      rerank_system=rerank_system)
        if rank is not None:
            recognizer.taxonomy.rank_depth(rank)  # an unknown rank fails before any photo is read
        bar.update(task, visible=False)
        task = bar.add_task("predicting", total=len(files))
        written, failures = predict_files(recognizer, files, out, batch_size, top_k, rank,
                                          progress=lambda n: bar.advance(task, n))
    for f in failures:
        err_console.print(f"[yellow]skipped[/] {f}", highlight=False)
    console.print(f"{len(files) - len(failures)} photos predicted, {len(failures)} unreadable: {written}")


@app.command()
def calibrate(
    manifest: Annotated[Path, typer.Argument(help="Labelled photos (manifest or image folder); the val split "
                                                  "is used when there is one.")],
    model: ModelOpt = "bioclip-2",
    taxonomy: LabelsTaxonomyOpt = None,
    precision_target: Annotated[float, typer.Option("--precision", help="Target precision at every rank.")] = 0.9,
    out: Annotated[Path, typer.Option(help="Thresholds JSON for `taxonlens predict --thresholds`.")] = Path(
        "thresholds.json"),
    text_type: Annotated[str, typer.Option()] = "taxonomic",
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
    _print_figures(f"thresholds for precision {precision_target} ({out})", result)


# -------------------------------------------------------------------------- vqa
def _read_records(data: Path, taxonomy=None, split: str | None = None):
    from taxonlens.data import read_image_folder, read_manifest

    records = read_image_folder(data, taxonomy) if data.is_dir() else read_manifest(data, taxonomy)
    records = [r for r in records if r.path and (split is None or r.split == split)]
    if not records:
        raise TaxonlensError(f"{data}: no labelled photos{f' in split {split!r}' if split else ''}")
    return records


@vqa_app.command("build")
def vqa_build(
    data: Annotated[Path, typer.Argument(help="Labelled photos: a manifest or an image folder.")],
    out: Annotated[Path, typer.Option(help="Benchmark JSONL to write.")],
    taxonomy: TaxonomyOpt = "inat21-plantae",
    options: Annotated[int, typer.Option(help="Options per level, the truth included.")] = 4,
    mode: Annotated[str, typer.Option(help="random, similar (nearest taxa by --encoder text embeddings) or path "
                                           "(whole alternative paths: no consistency leakage).")] = "random",
    encoder: Annotated[str, typer.Option(help="Encoder whose taxon text embeddings define 'similar'.")] = "bioclip",
    split: Annotated[str | None, typer.Option(help="Only photos of this split.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write hierarchical multiple-choice questions (the benchmark's JSONL format) for labelled photos."""
    from taxonlens.data.vqa import write_vqa_benchmark
    from taxonlens.data.vqa_build import build_vqa
    from taxonlens.recognize.vqa import leakage

    tax = _load(taxonomy, allow_homonyms=True)
    similarity = None
    if mode == "similar":
        from taxonlens.models.encoders import load_encoder
        from taxonlens.recognize.zeroshot import rank_classifiers

        similarity = {r: c.embeddings.numpy() for r, c in rank_classifiers(load_encoder(encoder), tax).items()}
    records = build_vqa(_read_records(data, tax, split), tax, options, mode, seed, similarity)
    write_vqa_benchmark(records, out)
    summary = leakage(records, tax)
    console.print(f"wrote {len(records)} question sets to {out}; {summary.n_unique} "
                  f"({100 * summary.share_unique:.1f}%) have a single consistent path among their options")


@vqa_app.command("leakage")
def vqa_leakage(
    benchmark: Annotated[Path, typer.Argument(help="Hierarchical-VQA JSONL.")],
    taxonomy: Annotated[str | None, typer.Option(help="Taxonomy (default: built from the benchmark).")] = None,
) -> None:
    """How much the offered options alone reveal: consistent paths per record, and what an image-blind
    consistent decoder scores."""
    from taxonlens.data.vqa import read_vqa_benchmark
    from taxonlens.recognize.vqa import leakage

    records = read_vqa_benchmark(benchmark)  # first: a missing benchmark is named as such
    s = leakage(records, _load(taxonomy or str(benchmark), allow_homonyms=True))
    _print_figures(f"{benchmark.name}: consistency leakage", {
        "records": s.n_records, **{f"records with {k} consistent paths": v for k, v in sorted(s.path_counts.items())},
        "single consistent path (%)": 100 * s.share_unique, "of those, the truth": s.n_unique_truth,
        "image-blind HCA (%)": s.blind_hca, "image-blind HCA, random tie-break (%)": s.expected_blind_hca})


@vqa_app.command("answer")
def vqa_answer(
    benchmark: Annotated[Path, typer.Argument(help="Hierarchical-VQA JSONL (its images must be readable).")],
    model: Annotated[str, typer.Option(help="Multimodal LLM: tiny preset, folder, or hub name.")],
    out: Annotated[Path, typer.Option(help="Answers JSONL (scored by `taxonlens evaluate`); resumes.")],
    mode: Annotated[str, typer.Option(help="generate, score or consistent.")] = "consistent",
    taxonomy: Annotated[str | None, typer.Option(help="Taxonomy (default: built from the benchmark).")] = None,
    images: Annotated[Path | None, typer.Option(help="Folder the benchmark's image paths are relative to.")] = None,
    organism: Annotated[str, typer.Option(help="The word used in the questions.")] = "organism",
    answer: Annotated[str, typer.Option(help="What score/consistent score: each option's letter (the reference "
                                             "protocol) or name (a model fine-tuned with --answer name).")
                      ] = "letter",
    system: Annotated[bool, typer.Option(help="Ask after the reference system prompt (--no-system for a model "
                                              "fine-tuned without it).")] = True,
    batch_size: Annotated[int, typer.Option()] = 16,
) -> None:
    """Answer every level of every record; print HCA, leaf accuracy, POR, S-POR, TOR on all records and on
    the leakage-free ones, beside the image-blind control."""
    from taxonlens.data.vqa import read_vqa_benchmark
    from taxonlens.models.mllm import load_lmm
    from taxonlens.recognize.answers import SYSTEM_PROMPT
    from taxonlens.recognize.vqa_answer import answer_benchmark, consistency_report

    records = read_vqa_benchmark(benchmark)
    tax = _load(taxonomy or str(benchmark), allow_homonyms=True)
    lmm = load_lmm(model)
    with progress_bar() as bar:
        task = bar.add_task(f"answering ({mode})", total=len(records))
        answer_benchmark(lmm, records, out, images, mode, tax, organism, progress=lambda n: bar.advance(task, n),
                         batch_size=batch_size, answer=answer, system=SYSTEM_PROMPT if system else None)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    report = consistency_report(records, rows, tax)
    table = Table(title=f"{model}, {mode} ({out})")
    for col in ("records", "n", "decoder", "HCA", "leaf", "POR", "S-POR", "TOR", "valid"):
        table.add_column(col, justify="right")
    for subset, figures in report.items():
        for name in ("answers", "blind_control"):
            if name in figures:
                f = figures[name]
                table.add_row(subset, str(figures["n"]), name, *(f"{f[k]:.1f}" for k in ("hca", "acc_leaf", "por",
                                                                                           "s_por", "tor")),
                              f"{f['valid_path_pct']:.1f}" if f["valid_path_pct"] is not None else "-")
    console.print(table)


@vqa_app.command("ranker-data")
def vqa_ranker_data(
    data: Annotated[Path, typer.Argument(help="Labelled photos: a manifest or an image folder.")],
    out: Annotated[Path, typer.Option(help="Question sets JSONL for `taxonlens train sft --ranks RANK`.")],
    model: ModelOpt = "bioclip-2",
    taxonomy: LabelsTaxonomyOpt = None,
    k: Annotated[int, typer.Option(help="Candidates per photo.")] = 5,
    split: Annotated[str | None, typer.Option(help="Only photos of this split.")] = "train",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """RAR ranker fine-tuning data: per photo, the encoder's top-k candidates (the truth among them) as
    the options of one question at the label rank."""
    from taxonlens.data.vqa import write_vqa_benchmark
    from taxonlens.predict import build_recognizer
    from taxonlens.recognize.rerank import ranker_records

    recognizer = build_recognizer(model, taxonomy)
    records = ranker_records(recognizer, _read_records(data, recognizer.taxonomy, split), k, seed)
    write_vqa_benchmark(records, out)
    console.print(f"wrote {len(records)} ranking questions at the {recognizer.taxonomy.ranks[-1]} rank to {out}")


# ------------------------------------------------------------------- attributes
attributes_app = typer.Typer(no_args_is_help=True, help="Finedefics attribute knowledge: mine attribute names, "
                                                        "extract their values per photo, describe each photo.")
app.add_typer(attributes_app, name="attributes")
OrganismOpt = Annotated[str, typer.Option(help="The word for what the photos show, used in the questions.")]


@attributes_app.command("mine")
def attributes_mine(
    out: Annotated[Path, typer.Option(help="Mined attributes JSON, for `attributes extract`.")],
    super_category: Annotated[str, typer.Option(help="What the photos show: birds, flowering plants, ...")
                              ] = "organisms",
    model: Annotated[str | None, typer.Option(help="Ask this multimodal LLM (preset, folder or hub name).")] = None,
    from_file: Annotated[Path | None, typer.Option(help="Names from a file: one per line, or a JSON list.")] = None,
    synthworld: Annotated[bool, typer.Option("--synthworld", help="synthworld's own factor names.")] = False,
    manifest: Annotated[Path | None, typer.Option(help="Photos shown with the question (--model; default: a "
                                                       "blank picture).")] = None,
    images: Annotated[int, typer.Option(help="Photos of different labels asked about (--model).")] = 4,
    n: Annotated[int, typer.Option("--n", help="Names kept, the most often given first (--model).")] = 10,
    max_new_tokens: Annotated[int, typer.Option()] = 160,
) -> None:
    """The attribute names that tell the species of a super-category apart, from one source: --model,
    --from-file or --synthworld."""
    from taxonlens.knowledge import attributes_from_file, example_images, mine_with_lmm
    from taxonlens.synthworld import synthworld_attributes

    if sum((model is not None, from_file is not None, synthworld)) != 1:
        raise TaxonlensError("give one source of attribute names: --model, --from-file or --synthworld")
    if from_file is not None:
        mined = attributes_from_file(from_file, super_category)
    elif synthworld:
        mined = synthworld_attributes(super_category)
    else:
        from taxonlens.models.mllm import load_lmm

        photos = example_images(_read_records(manifest), images) if manifest is not None else []
        mined = mine_with_lmm(load_lmm(model), super_category, photos, n, max_new_tokens)
    mined.save(out)
    console.print(f"{len(mined.attributes)} attributes of {mined.super_category} ({mined.source}) in {out}: "
                  f"{', '.join(mined.attributes)}", highlight=False)


@attributes_app.command("extract")
def attributes_extract(
    manifest: Annotated[Path, typer.Argument(help="Labelled photos: a manifest or an image folder.")],
    attributes: Annotated[Path, typer.Option(help="Mined attributes JSON from `attributes mine`.")],
    model: Annotated[str, typer.Option(help="Multimodal LLM that answers (preset, folder or hub name).")],
    out: Annotated[Path, typer.Option(help="Extracted attributes JSONL; an interrupted run resumes.")],
    organism: OrganismOpt = "organism",
    split: Annotated[str | None, typer.Option(help="Only photos of this split.")] = None,
    batch_size: Annotated[int, typer.Option(help="Questions per model call.")] = 32,
    max_new_tokens: Annotated[int, typer.Option()] = 16,
) -> None:
    """Ask the model one short question per attribute and photo; append one JSON line per photo. Where
    the photos carry known values (synthworld), print the accuracy per attribute."""
    from taxonlens.knowledge import MinedAttributes, extract_records, extraction_accuracy, read_attribute_rows
    from taxonlens.models.mllm import load_lmm

    mined = MinedAttributes.load(attributes)  # first: a bad attributes file fails before the model loads
    records = _read_records(manifest, split=split)
    lmm = load_lmm(model)
    with progress_bar() as bar:
        task = bar.add_task("extracting", total=len(records))
        written, failures = extract_records(lmm, records, mined.attributes, out, organism, batch_size, max_new_tokens,
                                            progress=lambda k: bar.advance(task, k))
    for f in failures:
        err_console.print(f"[yellow]skipped[/] {f}", highlight=False)
    console.print(f"{len(records) - len(failures)} photos extracted, {len(failures)} unreadable: {written}")
    if any(name in r.attributes for r in records for name in mined.attributes):
        scores = extraction_accuracy(read_attribute_rows(written), records)
        table = Table(title="extraction accuracy against the photos' known values")
        for col in ("attribute", "photos", "correct", "accuracy %"):
            table.add_column(col, justify="left" if col == "attribute" else "right")
        for name, s in scores.items():
            table.add_row(name, str(s["n"]), str(s["correct"]), f"{s['accuracy']:.1f}")
        console.print(table)


@attributes_app.command("describe")
def attributes_describe(
    manifest: Annotated[Path, typer.Argument(help="Labelled photos: a manifest or an image folder.")],
    out: Annotated[Path, typer.Option(help="Described attributes JSONL; an interrupted run resumes. The manifest "
                                           "for training is written beside it (OUT_STEM.manifest.jsonl).")],
    extracted: Annotated[Path | None, typer.Option(help="Extracted attributes JSONL (default: the values the "
                                                        "manifest's records carry, as synthworld's).")] = None,
    method: Annotated[str, typer.Option(help="template (deterministic) or lmm (asks --model).")] = "template",
    model: Annotated[str | None, typer.Option(help="Multimodal LLM for --method lmm.")] = None,
    organism: OrganismOpt = "organism",
    split: Annotated[str | None, typer.Option(help="Only photos of this split.")] = None,
    manifest_out: Annotated[Path | None, typer.Option(help="Where to write the described manifest instead.")
                            ] = None,
    batch_size: Annotated[int, typer.Option(help="Photos per model call.")] = 8,
    max_new_tokens: Annotated[int, typer.Option()] = 64,
) -> None:
    """One description per photo from its attribute values; writes the described JSONL and a manifest
    whose records carry the values and the description (what the Finedefics trainer reads)."""
    from taxonlens.knowledge import describe_manifest

    if model is not None and method != "lmm":
        raise TaxonlensError("--model is used by --method lmm only")
    records = _read_records(manifest, split=split)
    answerer = None
    if method == "lmm" and model is not None:
        from taxonlens.models.mllm import load_lmm

        answerer = load_lmm(model)
    with progress_bar() as bar:
        task = bar.add_task("describing", total=None)
        written, described, failures = describe_manifest(
            records, out, extracted, method, answerer, organism, manifest_out, batch_size, max_new_tokens,
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    for f in failures:
        err_console.print(f"[yellow]skipped[/] {f}", highlight=False)
    console.print(f"{len(failures)} unreadable photos; descriptions in {written}; the manifest to train on: "
                  f"{described}", highlight=False)


# ------------------------------------------------------------------------ index
@index_app.command("build")
def index_build(
    data: Annotated[Path, typer.Argument(help="Labelled photos (manifest or image folder).")],
    out: Annotated[Path, typer.Option(help="Memory folder (index.faiss, labels.npy, memory.json, taxonomy).")],
    model: ModelOpt = "bioclip-2",
    taxonomy: Annotated[str | None, typer.Option(help="Label tree (default: built from the photos' paths).")] = None,
    kind: Annotated[str, typer.Option(help="flat (exact), hnsw or ivf.")] = "flat",
    per_class: Annotated[int, typer.Option(help="Exemplar photos per class (0: all).")] = 0,
    split: Annotated[str | None, typer.Option(help="Only photos of this split.")] = "train",
    batch_size: Annotated[int, typer.Option()] = 32,
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16: use the same with `predict --memory`.")
                         ] = "auto",
) -> None:
    """An image-exemplar memory: photo embeddings with their class, for retrieval (`predict --memory`)."""
    from taxonlens.index.exemplars import build_exemplar_memory
    from taxonlens.models.encoders import load_encoder

    tax = _load(taxonomy, allow_homonyms=True) if taxonomy else None
    encoder = load_encoder(model, precision=precision)
    with progress_bar() as bar:
        task = bar.add_task("encoding exemplars", total=None)
        memory = build_exemplar_memory(_read_records(data, tax, split), encoder, out, tax, kind, per_class, batch_size,
                                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"{len(memory):,} exemplars of {len(set(memory.labels.tolist())):,} classes in {out}")


# ------------------------------------------------------------------------ train
@train_app.command("contrastive")
def train_contrastive_cmd(
    manifest: Annotated[Path, typer.Argument(help="Manifest (.jsonl/.csv/.parquet) with train and val splits, "
                                                  "e.g. from `taxonlens synthworld`.")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint.pt, metrics.jsonl, model/.")],
    encoder: Annotated[str, typer.Option(help="Starting encoder: preset, bioclip, hf-hub:..., dir, open_clip arch.")
                       ] = "tiny-clip",
    text_type: Annotated[str, typer.Option(help="taxonomic, scientific, common, scientific+common, "
                                                "taxonomic+common or mixed.")] = "taxonomic",
    epochs: Annotated[int, typer.Option()] = 10,
    batch_size: Annotated[int, typer.Option()] = 64,
    lr: Annotated[float, typer.Option()] = 5e-4,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT exactly.")] = False,
    taxonomy: Annotated[str | None, typer.Option(help="Taxonomy of the evaluation (default: from the manifest).")
                        ] = None,
) -> None:
    """CLIP loss with a learnable temperature on captioned images; checkpoints every epoch, exact resume,
    zero-shot evaluation on the val split per epoch."""
    from taxonlens.data import read_manifest
    from taxonlens.train.contrastive import ContrastiveConfig, train_contrastive

    tax = _load(taxonomy, allow_homonyms=True) if taxonomy else None
    records = read_manifest(manifest, taxonomy=tax)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"] or None
    config = ContrastiveConfig(encoder=encoder, text_type=text_type, epochs=epochs, batch_size=batch_size, lr=lr,
                               seed=seed, out=str(out))
    with progress_bar() as bar:
        task = bar.add_task("training", total=None)

        def show(log) -> None:
            bar.update(task, completed=log.step, total=log.total_steps,
                       description=f"epoch {log.epoch} loss {log.loss:.3f}")

        result = train_contrastive(config, train, val, taxonomy=tax, resume=resume, progress=show)
    for row in result.metrics:
        console.print(json.dumps(row))
    console.print(f"model saved to {result.model_dir} (load it with --model {result.model_dir})")


@train_app.command("finedefics")
def train_finedefics_cmd(
    manifest: Annotated[Path, typer.Argument(help="Labelled photos (manifest or image folder); stage 1 needs their "
                                                  "attribute descriptions (`taxonlens attributes describe`).")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint.pt, metrics.jsonl, model/.")],
    stage: Annotated[int, typer.Option(help="1: attribute-augmented contrastive alignment; 2: recognition-centric "
                                            "instruction tuning (--model a stage-1 OUT/model).")] = 1,
    taxonomy: Annotated[str | None, typer.Option(help="Taxonomy whose classes label the photos (default: built from "
                                                      "the manifest).")] = None,
    model: Annotated[str, typer.Option(help="Multimodal LLM to train: preset, folder (e.g. a stage-1 OUT/model) or "
                                            "hub name.")] = "tiny-qwen2.5-vl",
    encoder: Annotated[str, typer.Option(help="Encoder whose text embeddings of the species define the most similar "
                                              "ones (stage-1 hard negatives, stage-2 distractors).")] = "bioclip",
    similar: Annotated[int, typer.Option(help="Most similar wrong species per photo.")] = 3,
    w_ntp: Annotated[float, typer.Option(help="Stage 1: weight of next-token prediction of the description.")] = 1.0,
    w_oac: Annotated[float, typer.Option(help="Stage 1: weight of object-attribute contrast (0: off).")] = 0.5,
    w_acc: Annotated[float, typer.Option(help="Stage 1: weight of attribute-category contrast (0: off).")] = 0.5,
    w_occ: Annotated[float, typer.Option(help="Stage 1: weight of object-category contrast (0: off).")] = 0.5,
    temperature: Annotated[float, typer.Option(help="Stage 1: initial temperature of every contrast.")] = 0.07,
    open_fraction: Annotated[float, typer.Option(help="Stage 2: share of open-set questions per epoch.")] = 0.5,
    full: Annotated[bool, typer.Option("--full/--lora", help="Train every weight, or LoRA adapters.")] = False,
    lora_targets: Annotated[str, typer.Option(help="language, language+head, all-linear, all-linear+head or a "
                                                   "regular expression.")] = "language",
    lora_r: Annotated[int, typer.Option()] = 8,
    epochs: Annotated[int, typer.Option()] = 3,
    batch_size: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option()] = 2e-4,
    split: Annotated[str, typer.Option(help="Photos trained on.")] = "train",
    val_split: Annotated[str | None, typer.Option(help="Photos evaluated after every epoch (none if absent).")] = "val",
    organism: Annotated[str, typer.Option(help="The word used in the questions.")] = "organism",
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT exactly.")] = False,
) -> None:
    """Finedefics: stage 1 aligns photos, attribute descriptions and species names inside the LLM (next-token
    prediction plus three contrasts with hard negatives); stage 2 tunes it on open-set and 4-option species
    questions. Checkpoints, exact resume, merged model in OUT/model."""
    from taxonlens.taxonomy import Taxonomy
    from taxonlens.train.finedefics import Stage1Config, Stage2Config, train_stage1, train_stage2

    if stage not in (1, 2):
        raise TaxonlensError(f"--stage is 1 (alignment) or 2 (instruction tuning), not {stage}")
    tax = _load(taxonomy, allow_homonyms=True) if taxonomy else None
    records = _read_records(manifest, tax)
    tax = tax or Taxonomy.from_paths(sorted({r.path for r in records}), allow_homonyms=True)
    train = [r for r in records if r.split == split]
    if not train:
        raise TaxonlensError(f"{manifest}: no labelled photos in split {split!r}")
    val = [r for r in records if r.split == val_split] or None
    common = {"model": model, "out": str(out), "encoder": encoder, "similar": similar, "organism": organism,
              "full_finetune": full, "lora_targets": lora_targets, "lora_r": lora_r, "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "seed": seed}
    if stage == 1:
        config = Stage1Config(**common, w_ntp=w_ntp, w_oac=w_oac, w_acc=w_acc, w_occ=w_occ, temperature=temperature)
    else:
        config = Stage2Config(**common, open_fraction=open_fraction)
    with progress_bar() as bar:
        task = bar.add_task(f"finedefics stage {stage}", total=None)

        def show(log) -> None:
            bar.update(task, completed=log.step, total=log.total_steps,
                       description=f"epoch {log.epoch} loss {log.loss:.3f}")

        result = (train_stage1 if stage == 1 else train_stage2)(config, train, tax, None, val, resume=resume,
                                                                 progress=show)
    for row in result.metrics:
        console.print(json.dumps(row))
    console.print(f"model saved to {result.model_dir} (use it with --model {result.model_dir})")


@train_app.command("sft")
def train_sft_cmd(
    benchmark: Annotated[Path, typer.Argument(help="Question sets (hierarchical-VQA JSONL, e.g. from `vqa build`).")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint.pt, metrics.jsonl, model/.")],
    model: Annotated[str, typer.Option(help="Multimodal LLM to fine-tune: preset, folder or hub name.")
                     ] = "tiny-qwen2.5-vl",
    answer: Annotated[str, typer.Option(help="letter (as the benchmark asks) or name (the option's text).")
                      ] = "letter",
    system: Annotated[bool, typer.Option(help="Ask with the reference system prompt.")] = True,
    lora_targets: Annotated[str, typer.Option(help="language, language+head, all-linear, all-linear+head or a "
                                                   "regular expression.")] = "language",
    lora_r: Annotated[int, typer.Option()] = 8,
    epochs: Annotated[int, typer.Option()] = 3,
    batch_size: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option()] = 2e-4,
    images: Annotated[Path | None, typer.Option(help="Folder the benchmark's image paths are relative to.")] = None,
    val: Annotated[Path | None, typer.Option(help="Question sets scored after every epoch.")] = None,
    taxonomy: Annotated[str | None, typer.Option(help="Rank names for the questions (default: the benchmark's).")
                        ] = None,
    ranks: Annotated[list[str] | None, typer.Option("--ranks", help="Rank names of the levels (overrides "
                                                                   "--taxonomy; e.g. --ranks species for ranker data).")
                     ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT exactly.")] = False,
) -> None:
    """Fine-tune a multimodal LLM with LoRA to answer hierarchical multiple-choice questions; checkpoints,
    exact resume, accuracy per level on --val after every epoch, merged model in OUT/model."""
    from taxonlens.data.vqa import read_vqa_benchmark
    from taxonlens.train.sft import SFTConfig, train_sft

    records = read_vqa_benchmark(benchmark)  # first: a missing benchmark is named as such
    rank_names = ranks or _load(taxonomy or str(benchmark), allow_homonyms=True).ranks
    config = SFTConfig(model=model, answer=answer, system=system, lora_targets=lora_targets, lora_r=lora_r,
                       epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, out=str(out))
    with progress_bar() as bar:
        task = bar.add_task("fine-tuning", total=None)

        def show(log) -> None:
            bar.update(task, completed=log.step, total=log.total_steps,
                       description=f"epoch {log.epoch} loss {log.loss:.3f}")

        result = train_sft(config, records, images, rank_names,
                           read_vqa_benchmark(val) if val else None, resume=resume, progress=show)
    for row in result.metrics:
        console.print(json.dumps(row))
    console.print(f"model saved to {result.model_dir} (use it with --model {result.model_dir})")


@train_app.command("grpo")
def train_grpo_cmd(
    benchmark: Annotated[Path, typer.Argument(help="Question sets (hierarchical-VQA JSONL, e.g. from `vqa build`).")],
    out: Annotated[Path, typer.Option(help="Run folder: config.json, metrics.jsonl, checkpoint-*/, model/.")],
    model: Annotated[str, typer.Option(help="Starting model, usually an SFT run's OUT/model (a random model "
                                            "earns no reward and learns nothing).")],
    tara: Annotated[bool, typer.Option(help="Alternate a TARA alignment update with every GRPO update.")] = False,
    bfm: Annotated[str, typer.Option(help="TARA's biology foundation model: a taxonlens encoder name or folder.")
                   ] = "tiny-clip",
    shots: Annotated[int, typer.Option(help="Records per species (0: all; the paper uses 1).")] = 0,
    answer: Annotated[str, typer.Option(help="name or letter: the format the starting model answers in.")] = "name",
    system: Annotated[bool, typer.Option(help="Ask with the reference system prompt.")] = False,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (0: full fine-tuning).")] = 8,
    epochs: Annotated[int, typer.Option()] = 1,
    questions_per_step: Annotated[int, typer.Option()] = 4,
    generations: Annotated[int, typer.Option(help="Answers sampled per question (the group).")] = 4,
    lr: Annotated[float, typer.Option()] = 1e-4,
    beta: Annotated[float, typer.Option(help="KL penalty to the starting model.")] = 0.04,
    images: Annotated[Path | None, typer.Option(help="Folder the benchmark's image paths are relative to.")] = None,
    taxonomy: Annotated[str | None, typer.Option(help="Rank names for the questions (default: the benchmark's).")
                        ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT exactly.")] = False,
) -> None:
    """Reinforcement fine-tuning without thinking (GRPO; with --tara, TARA alignment to a biology
    foundation model) on hierarchical multiple-choice questions, each asked at one random rank;
    reward 1 for the true option. Checkpoints, exact resume, merged model in OUT/model."""
    from taxonlens.data.vqa import read_vqa_benchmark
    from taxonlens.train.grpo import RFTConfig, shots_per_species, train_grpo

    records = read_vqa_benchmark(benchmark)
    if shots:
        records = shots_per_species(records, shots, seed)
    rank_names = _load(taxonomy or str(benchmark), allow_homonyms=True).ranks
    config = RFTConfig(model=model, out=str(out), tara=tara, bfm=bfm, answer=answer, system=system, lora_r=lora_r,
                       epochs=epochs, questions_per_step=questions_per_step, generations=generations, lr=lr,
                       beta=beta, seed=seed)
    with progress_bar() as bar:
        task = bar.add_task("GRPO" + " + TARA" * tara, total=None)

        def show(log) -> None:
            bar.update(task, completed=log.step, total=log.total_steps,
                       description=f"reward {log.figures['reward']:.2f} kl {log.figures.get('kl', 0):.4f}")

        result = train_grpo(config, records, images, rank_names, resume=resume, progress=show)
    rewards = [row["reward"] for row in result.metrics]
    tenth = max(1, len(rewards) // 10)
    first, last = sum(rewards[:tenth]) / tenth, sum(rewards[-tenth:]) / tenth
    console.print(f"{result.steps} steps in {result.seconds:.1f} s; mean reward {first:.3f} in the first tenth of "
                  f"the steps, {last:.3f} in the last")
    console.print(f"model saved to {result.model_dir} (use it with --model {result.model_dir})")


# ------------------------------------------------------------------------- demo
@app.command()
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
    width = max(console.width, 110)  # a log file or a narrow terminal would wrap the tables into unreadable cells
    console.print(table, width=width)
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
    console.print(table, width=width)
    console.print(f"report: {out / 'report.html'}, predictions of the photo files: {results['predictions']}")


# ------------------------------------------------------------------------ bench
@bench_app.command("taxonomy")
def bench_taxonomy(
    leaves: Annotated[int, typer.Option(help="Leaves of the synthetic 7-rank taxonomy.")] = 450_000,
    batch: Annotated[int, typer.Option(help="Images in the marginals batch.")] = 256,
) -> None:
    """Build, save, load and index a synthetic TreeOfLife-sized taxonomy."""
    from taxonlens.bench.foundation import bench_taxonomy as run

    _print_figures(f"taxonomy with {leaves:,} leaves (seconds)", run(leaves, batch))


@bench_app.command("synthworld")
def bench_synthworld(
    species: Annotated[int, typer.Option()] = 100,
    images_per_species: Annotated[int, typer.Option()] = 10,
    size: Annotated[int, typer.Option()] = 64,
) -> None:
    """synthworld generation speed (images/s), in memory and written to disk."""
    from taxonlens.bench.foundation import bench_synthworld as run

    _print_figures("synthworld generation", run(species, images_per_species, size))


@bench_app.command("decode")
def bench_decode(
    leaves: Annotated[int, typer.Option(help="Leaves of the synthetic 7-rank taxonomy.")] = 450_000,
    batch: Annotated[int, typer.Option(help="Images decoded at once.")] = 256,
) -> None:
    """Tree-consistent decoding of a batch over a TreeOfLife-sized taxonomy: seconds per stage."""
    from taxonlens.bench.decode import bench_decode as run

    _print_figures(f"decoding {batch} images over {leaves:,} leaves", run(leaves, batch))


@bench_app.command("encode")
def bench_encode(
    arch: Annotated[str, typer.Option(help="open_clip architecture (random weights: speed only).")] = "ViT-B-16",
    images: Annotated[int, typer.Option()] = 64,
    batch: Annotated[int, typer.Option()] = 32,
    labels: Annotated[int, typer.Option(help="Label embeddings scored and decoded.")] = 10_000,
) -> None:
    """Zero-shot prediction throughput: taxonlens (with consistent decoding and back-off) against a
    plain open_clip loop (encode, matmul, argmax), same photos, same run."""
    from taxonlens.bench.encoders import bench_encode as run

    _print_figures(f"zero-shot prediction, {arch}", run(arch, images, batch, labels))


@bench_app.command("labels")
def bench_labels(
    labels: Annotated[int, typer.Option(help="Labels to embed.")] = 100_000,
    model: Annotated[str, typer.Option(help="Encoder whose text tower embeds them.")] = "tiny-clip",
) -> None:
    """Label-embedding cache: build once, load afterwards."""
    from taxonlens.bench.labels import bench_label_cache as run

    _print_figures(f"label-embedding cache, {labels:,} labels", run(labels, model))


@bench_app.command("index")
def bench_index(
    vectors: Annotated[int, typer.Option(help="Stored unit vectors.")] = 1_000_000,
    dim: Annotated[int, typer.Option()] = 256,
    queries: Annotated[int, typer.Option()] = 200,
    k: Annotated[int, typer.Option(help="Neighbours per query (recall@k).")] = 10,
) -> None:
    """Vector memory: build time, query latency and recall@k, exact vs HNSW vs IVF."""
    from taxonlens.bench.index import bench_index as run

    _print_figures(f"vector memory, {vectors:,} vectors of {dim} dimensions", run(vectors, dim, queries, k))


@bench_app.command("lmm")
def bench_lmm(
    model: Annotated[str, typer.Option(help="Multimodal LLM (a tiny preset by default).")] = "tiny-qwen2.5-vl",
    questions: Annotated[int, typer.Option()] = 64,
    options: Annotated[int, typer.Option()] = 4,
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as set).")] = 1,
) -> None:
    """Asking a multimodal LLM: option scoring vs generation, questions per second."""
    from taxonlens.bench.lmm import bench_answering as run

    _print_figures(f"answering multiple-choice questions, {model}", run(model, questions, options,
                                                                          threads=threads or None))


@bench_app.command("rar")
def bench_rar(
    species: Annotated[int, typer.Option(help="synthworld species (all seen; at least the largest k).")] = 16,
    images_per_species: Annotated[int, typer.Option()] = 20,
    k: Annotated[list[int] | None, typer.Option("--k", help="Candidates retrieved per photo (repeat; default 3, 5, "
                                                            "10).")] = None,
    encoder_epochs: Annotated[int, typer.Option(help="Contrastive training epochs of the tiny encoder.")] = 30,
    model: Annotated[str, typer.Option(help="Multimodal LLM fine-tuned as the ranker (a tiny preset by default).")
                     ] = "tiny-qwen2.5-vl",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of the ranker.")] = 40,
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as set).")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """RAR on synthworld with tiny models trained here: the encoder's top-1 vs retrieving its top k and
    reranking them with a LoRA-fine-tuned LMM, for each k: top-1, HCA, leaf and per-rank accuracy of the
    consistent path, and the encoder's top-k recall."""
    from taxonlens.bench.rar import RAR_KS
    from taxonlens.bench.rar import bench_rar_evidence as run

    result = run(species, images_per_species, ks=tuple(k or RAR_KS), encoder_epochs=encoder_epochs, model=model,
                 epochs=epochs, threads=threads or None, seed=seed,
                 progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    enc, ranker, seconds = result["encoder_training"], result["ranker_training"], result["seconds"]
    _print_figures(f"tiny-clip retrieves, {model} reranks", {
        "species": result["world"]["species"],
        **{f"{split} records": n for split, n in result["world"]["records"].items()},
        "encoder steps": enc["steps"], "encoder first / last loss": f"{enc['first_loss']:.3f} / {enc['last_loss']:.3f}",
        "ranker questions": ranker["questions"], "ranker steps": ranker["steps"],
        "ranker first / last loss": f"{ranker['first_loss']:.3f} / {ranker['last_loss']:.3f}",
        **{f"{stage.replace('_', ' ')} s": v for stage, v in seconds.items()}, "total s": result["total_seconds"]})
    ranks = list(result["encoder"]["per_rank"])
    table = Table(title=f"test photos ({result['n_test']}; chance {result['chance']:.1f}%), percent")
    for col in ("answer", "top-k recall", "top-1", "HCA", "leaf", *ranks):
        table.add_column(col, justify="left" if col == "answer" else "right", no_wrap=True)
    arms = [("encoder top-1", "", result["encoder"]),
            *((f"top-{n} + rerank", f"{result['top_k_recall'][n]:.1f}", r) for n, r in result["rerank"].items())]
    for name, recall, r in arms:
        table.add_row(name, recall, *(f"{r[f]:.1f}" for f in ("top1", "hca", "acc_leaf")),
                      *(f"{r['per_rank'][rank]:.1f}" for rank in ranks))
    console.print(table, width=max(console.width, 100))


@bench_app.command("pybioclip")
def bench_pybioclip(
    species: Annotated[int, typer.Option(help="Synthetic TreeOfLife labels.")] = 100_000,
    images: Annotated[int, typer.Option(help="Photo files predicted at every rank.")] = 8,
    arch: Annotated[str, typer.Option(help="Model architecture (random weights), BioCLIP's by default.")
                    ] = "ViT-B-16",
    batch: Annotated[int, typer.Option()] = 8,
    ranks: Annotated[list[str] | None, typer.Option("--ranks", help="Ranks to compare (default: all).")] = None,
) -> None:
    """pybioclip and taxonlens side by side, offline, same weights, labels and photos: seconds per
    rank, the speed-up, and agreement of the top-5 answers and probabilities."""
    from taxonlens.bench.pybioclip import bench_pybioclip as run
    from taxonlens.taxonomy.tree import STANDARD_RANKS

    result = run(species, images, arch, batch, ranks=ranks or STANDARD_RANKS[::-1],
                 progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    per_rank = result.pop("ranks")
    _print_figures("pybioclip vs taxonlens", result)
    table = Table(title="per rank: seconds for all photos from their files, and for the rank step alone "
                        "(same probabilities)")
    for col in ("rank", "pybioclip s", "taxonlens s", "speed-up", "same top-5", "max |p diff|",
                "rank step: pybioclip s", "taxonlens s", "speed-up"):
        table.add_column(col, justify="right")
    for rank, r in per_rank.items():
        table.add_row(rank, f"{r['pybioclip_s']:.2f}", f"{r['taxonlens_s']:.2f}", f"{r['speedup']:.1f}x",
                      f"{100 * r['same_top_k']:.0f}%", f"{r['max_abs_prob_diff']:.1e}",
                      f"{r['pybioclip_rank_step_s']:.3f}", f"{r['taxonlens_rank_step_s']:.3f}",
                      f"{r['rank_step_speedup']:.0f}x")
    console.print(table, width=max(console.width, 130))


@bench_app.command("vqa")
def bench_vqa(
    species: Annotated[int, typer.Option(help="synthworld species (some held out as novel).")] = 8,
    images_per_species: Annotated[int, typer.Option()] = 15,
    novel_fraction: Annotated[float, typer.Option(help="Share of the species held out (novel).")] = 0.25,
    mode: Annotated[str, typer.Option(help="Distractors: path (leakage-free) or random.")] = "path",
    options: Annotated[int, typer.Option(help="Options per level.")] = 4,
    model: Annotated[str, typer.Option(help="Multimodal LLM fine-tuned (a tiny preset by default).")
                     ] = "tiny-qwen2.5-vl",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 40,
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as set).")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Hierarchical VQA on synthworld after LoRA fine-tuning of a tiny LMM: independent per-level
    answers vs consistent decoding vs the image-blind control (HCA, leaf accuracy, POR, S-POR,
    TOR, valid paths), seen and novel species, all and leakage-free records."""
    from taxonlens.bench.vqa import DECODERS, FIGURES
    from taxonlens.bench.vqa import bench_vqa_evidence as run

    result = run(species, images_per_species, novel_fraction, n_options=options, mode=mode, model=model,
                 epochs=epochs, threads=threads or None, seed=seed, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    training = result["training"]
    _print_figures(f"fine-tuning {model} ({mode} distractors)", {
        "species (novel)": f"{result['world']['species']} ({len(result['world']['novel_species'])})",
        **{f"{split} records": n for split, n in result["world"]["records"].items()},
        "training questions": training["questions"], "epochs": training["epochs"], "steps": training["steps"],
        "first / last epoch loss": f"{training['first_loss']:.3f} / {training['last_loss']:.3f}",
        "training s": training["train_seconds"], "answering s": result["answer_seconds"],
        "total s": result["total_seconds"]})
    table = Table(title="answers per split and subset (percent)")
    for col in ("species", "records", "n", "answers", "HCA", "leaf", "POR", "S-POR", "TOR", "valid"):
        table.add_column(col, justify="left" if col in ("species", "records", "answers") else "right", no_wrap=True)
    for split, r in result["splits"].items():
        for subset in ("all", "leakage_free"):
            for decoder in DECODERS if r[subset]["n"] else ():
                table.add_row(split, subset.replace("_", "-"), str(r[subset]["n"]), decoder.replace("_", " "),
                              *(f"{r[subset][decoder][k]:.1f}" for k in FIGURES))
    console.print(table, width=max(console.width, 100))
    for split, r in result["splits"].items():
        console.print(f"{split}: {r['questions']} questions, independent per-question accuracy "
                      f"{r['question_acc']:.1f}% (chance {r['chance']:.1f}%); records answerable from the options "
                      f"alone {r['leakage']['share_unique_pct']:.1f}%")


@bench_app.command("tara")
def bench_tara(
    species: Annotated[int, typer.Option(help="synthworld species (some held out as novel).")] = 8,
    images_per_species: Annotated[int, typer.Option()] = 10,
    model: Annotated[str, typer.Option(help="Tiny LMM preset.")] = "tiny-qwen2.5-vl",
    sft_epochs: Annotated[int, typer.Option(help="Epochs of the SFT warm start.")] = 10,
    rl_epochs: Annotated[int, typer.Option(help="Budget of every arm after the warm start, in epochs.")] = 6,
    seeds: Annotated[int, typer.Option(help="Seeds (one warm start and three arms each).")] = 3,
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as set).")] = 1,
    out: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here.")] = None,
) -> None:
    """SFT only vs + GRPO vs + GRPO + TARA on synthworld, same budget, several seeds: HCA, leaf
    accuracy, POR, S-POR and TOR (mean +- sd over seeds) of independent and consistent answers
    on seen and novel species."""
    from taxonlens.bench.tara import ARMS, DECODERS
    from taxonlens.bench.tara import bench_tara_evidence as run
    from taxonlens.bench.vqa import FIGURES

    result = run(species, images_per_species, model=model, sft_epochs=sft_epochs, rl_epochs=rl_epochs,
                 seeds=tuple(range(seeds)), threads=threads or None,
                 progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    if out is not None:
        out.write_text(json.dumps(result, indent=1))
    table = Table(title=f"mean +- sd over {seeds} seeds (percent)")
    for col in ("species", "arm", "answers", "HCA", "leaf", "POR", "S-POR", "TOR", "valid"):
        table.add_column(col, justify="left" if col in ("species", "arm", "answers") else "right", no_wrap=True)
    for split in ("seen", "novel"):
        for arm in ARMS:
            for decoder in DECODERS:
                cells = result["summary"].get(arm, {}).get(split, {}).get(decoder)
                if cells:
                    table.add_row(split, arm, decoder, *(f"{cells[k]['mean']:.1f} +- {cells[k]['sd']:.1f}"
                                                         for k in FIGURES))
    console.print(table, width=max(console.width, 140))
    for seed, run_ in result["runs"].items():
        rl = {arm: f"reward {run_[arm]['reward_first_epoch']:.2f} -> {run_[arm]['reward_last_epoch']:.2f}"
              for arm in ("grpo", "grpo+tara")}
        console.print(f"seed {seed}: grpo {rl['grpo']}; grpo+tara {rl['grpo+tara']}, label loss "
                      f"{run_['grpo+tara']['label_loss_first_last'][0]:.2f} -> "
                      f"{run_['grpo+tara']['label_loss_first_last'][1]:.2f}")
    console.print(f"total {result['total_seconds']:.0f} s")


@bench_app.command("finedefics")
def bench_finedefics(
    species: Annotated[int, typer.Option(help="synthworld species (some held out as novel; all seen with --cost).")
                       ] = 8,
    images_per_species: Annotated[int, typer.Option()] = 15,
    model: Annotated[str, typer.Option(help="Tiny LMM preset (the evidence; --cost runs every tiny preset).")
                     ] = "tiny-qwen2.5-vl",
    stage1_epochs: Annotated[int, typer.Option(help="Stage I epochs (stage2_only gets them as Stage II epochs).")
                             ] = 10,
    stage2_epochs: Annotated[int, typer.Option(help="Stage II epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Photos per step, both stages.")] = 4,
    seeds: Annotated[int, typer.Option(help="Seeds (one starting model and four arms each).")] = 3,
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as set).")] = 1,
    out: Annotated[Path, typer.Option(help="Folder for result.json and alignment.png (cost.json with --cost).")
                   ] = Path("taxonlens-bench-finedefics"),
    cost: Annotated[bool, typer.Option("--cost", help="Instead: seconds per step and peak memory of Stage I (all "
                                                      "terms), Stage I (NTP only) and Stage II on every tiny preset, "
                                                      "one epoch each.")] = False,
) -> None:
    """Finedefics on synthworld, same budget, several seeds: Stage II only vs Stage I (object-category contrast
    only; the three contrasts; all four terms) + Stage II. Species-level 4-option and open-set accuracy, HCA, leaf,
    POR, S-POR, TOR (mean +- sd over seeds) on seen and novel species, and image -> name alignment inside the LLM
    before and after Stage I, with a plot. --cost: what each stage costs per step."""
    from taxonlens.bench import finedefics as fd
    from taxonlens.bench.tara import DECODERS
    from taxonlens.bench.vqa import FIGURES

    def say(msg: str) -> None:
        console.print(f"[dim]{msg}[/]")

    out.mkdir(parents=True, exist_ok=True)
    if cost:
        result = fd.bench_finedefics_cost(n_species=species, images_per_species=images_per_species,
                                          batch_size=batch_size, threads=threads or None, progress=say)
        (out / "cost.json").write_text(json.dumps(result, indent=1))
        table = Table(title=f"cost per optimizer step: {result['photos']} photos at batch {batch_size}, one epoch "
                            f"per run, a fresh process each ({threads or 'default'} thread(s))")
        for col in ("preset", "stage", "steps", "s / step (median)", "x stage 2", "peak MiB over the loaded model",
                    "x stage 2"):
            table.add_column(col, justify="left" if col in ("preset", "stage") else "right", no_wrap=True)
        for preset, stages in result["stages"].items():
            for stage, r in stages.items():
                base = stages["stage2"]
                table.add_row(preset, stage, str(r["steps"]), f"{r['seconds_per_step']:.4f}",
                              f"{r['seconds_per_step'] / base['seconds_per_step']:.2f}", f"{r['peak_mb']:.1f}",
                              f"{r['peak_mb'] / base['peak_mb']:.2f}" if base["peak_mb"] else "-")
        console.print(table, width=max(console.width, 130))
        ratios = Table(title="ratios (time / memory)")
        ratios.add_column("preset")
        for a, b in fd.COST_RATIOS:
            ratios.add_column(f"{a} / {b}", justify="right")
        for preset, r in result["ratios"].items():
            ratios.add_row(preset, *(" / ".join("-" if r[f"{a}/{b}"][k] is None else f"{r[f'{a}/{b}'][k]:.2f}"
                                                for k in ("seconds_per_step", "peak_mb")) for a, b in fd.COST_RATIOS))
        console.print(ratios, width=max(console.width, 130))
        console.print(f"written {out / 'cost.json'}; total {result['total_seconds']:.0f} s")
        return
    result = fd.bench_finedefics_evidence(species, images_per_species, model=model, stage1_epochs=stage1_epochs,
                                          stage2_epochs=stage2_epochs, batch_size=batch_size,
                                          seeds=tuple(range(seeds)), threads=threads or None, out=out, progress=say)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    summary = result["summary"]

    def cell(*path: str, digits: int = 1) -> str:
        node = summary
        for k in path:
            node = node.get(k, {})
        return f"{node['mean']:.{digits}f} +- {node['sd']:.{digits}f}" if node else ""

    steps = {arm: sorted({run[arm]["steps"] for run in result["runs"].values()}) for arm in fd.ARMS}
    table = Table(title=f"species level, mean +- sd over {seeds} seeds (percent; 4 options, similar distractors)")
    for col in ("species", "arm", "steps", "4-option", "open set", "open: names a species"):
        table.add_column(col, justify="left" if col in ("species", "arm") else "right", no_wrap=True)
    for split in fd.SPLITS:
        for arm in fd.ARMS:
            table.add_row(split, arm, "/".join(map(str, steps[arm])), cell(arm, split, "mc_acc"),
                          cell(arm, split, "open_acc"), cell(arm, split, "open_named"))
    console.print(table, width=max(console.width, 120))
    table = Table(title="hierarchical questions (every rank, path distractors), mean +- sd (percent)")
    for col in ("species", "arm", "answers", "HCA", "leaf", "POR", "S-POR", "TOR", "valid"):
        table.add_column(col, justify="left" if col in ("species", "arm", "answers") else "right", no_wrap=True)
    for split in fd.SPLITS:
        for arm in fd.ARMS:
            for decoder in DECODERS:
                table.add_row(split, arm, decoder, *(cell(arm, split, decoder, k) for k in FIGURES))
    console.print(table, width=max(console.width, 150))
    table = Table(title="alignment inside the LLM: image -> species-name retrieval (percent) and cosine gap true - "
                        "hardest wrong, mean +- sd")
    for col in ("model", "seen: retrieval", "seen: gap", "novel: retrieval", "novel: gap"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    rows = [("starting model", "start", "before")] + [(f"{arm}, after Stage {roman}", arm, stage) for arm in fd.ARMS
                                                      for stage, roman in (("after_stage1", "I"), ("after_stage2", "II"))]
    for label, arm, stage in rows:
        if summary.get(arm, {}).get("alignment", {}).get(stage):
            table.add_row(label, *(cell(arm, "alignment", stage, split, k, digits=d) for split in fd.SPLITS
                                   for k, d in (("retrieval_acc", 1), ("cosine_gap", 3))))
    console.print(table, width=max(console.width, 120))
    for arm in fd.ARMS:
        per_seed = {f"{split} {name}": summary.get(arm, {}).get(split, {}).get(key, {}).get("values", [])
                    for split in fd.SPLITS for key, name in (("mc_acc", "4-option"), ("open_acc", "open"))}
        console.print(f"{arm}, per seed: " + "; ".join(f"{k} {', '.join(f'{v:.0f}' for v in vals)}"
                                                       for k, vals in per_seed.items()))
    console.print(f"plot {result['plot']}; result {out / 'result.json'}; total {result['total_seconds']:.0f} s")


def main() -> None:
    """Entry point of the ``taxonlens`` command."""
    try:
        app()
    except TaxonlensError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise SystemExit(2) from None

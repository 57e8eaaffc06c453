"""``taxonlens train``: contrastive (BioCLIP), Finedefics, supervised and GRPO fine-tuning."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from taxonlens.cli.common import console, load_taxonomy, progress_bar, read_records
from taxonlens.cli.config_options import ConfigValues, config_options
from taxonlens.errors import TaxonlensError
from taxonlens.train.contrastive import ContrastiveConfig
from taxonlens.train.finedefics import Stage1Config, Stage2Config
from taxonlens.train.grpo import RFTConfig
from taxonlens.train.sft import SFTConfig

app = typer.Typer(no_args_is_help=True, help="Train models (contrastive BioCLIP objective, ...).")
ResumeOpt = Annotated[bool, typer.Option(help="Continue an interrupted run in OUT exactly.")]
QuestionsArg = Annotated[Path, typer.Argument(help="Question sets (hierarchical-VQA JSONL, e.g. from `vqa build`).")]
ImagesOpt = Annotated[Path | None, typer.Option(help="Folder the benchmark's image paths are relative to.")]
RankNamesOpt = Annotated[str | None, typer.Option(help="Rank names for the questions (default: the benchmark's).")]
NumProcessesOpt = Annotated[int, typer.Option(
    min=1, help="Data-parallel processes on this machine: N > 1 runs this command N times through `accelerate "
                "launch` (the same as `accelerate launch -m taxonlens train ...`; gloo on the CPU, a GPU each on "
                "GPUs). --batch-size stays the global batch, split over the processes.")]


def launched(num_processes: int) -> bool:
    """Start this command in ``num_processes`` processes through accelerate when asked and not
    already inside such a launch; True when it did (and they finished)."""
    from taxonlens.train.parallel import launch, launched_processes

    if num_processes == 1 or launched_processes() > 1:
        return False
    code = launch(sys.argv[1:], num_processes)
    if code:
        raise typer.Exit(code)
    return True


def epoch_and_loss(log: Any) -> str:
    """The progress description of a supervised step: its epoch and loss."""
    return f"epoch {log.epoch} loss {log.loss:.3f}"


@contextmanager
def training_progress(title: str, describe: Callable[[Any], str] = epoch_and_loss) -> Iterator[Callable[[Any], None]]:
    """A progress bar for a training run; yields the ``progress`` callback a trainer calls with each step's log."""
    from taxonlens.train.parallel import main_process

    if not main_process():  # of several data-parallel processes, the main one shows the progress
        yield lambda log: None
        return
    with progress_bar() as bar:
        task = bar.add_task(title, total=None)
        yield lambda log: bar.update(task, completed=log.step, total=log.total_steps, description=describe(log))


def print_run_end(result: Any, summary: str | None = None) -> None:
    """The end of a training run: its metrics, one JSON line per row (or a ``summary`` line instead), and
    where its model was saved (by the main process of a data-parallel run)."""
    from taxonlens.train.parallel import main_process

    if not main_process():
        return
    if summary is None:
        for row in result.metrics:
            console.print(json.dumps(row))
    else:
        console.print(summary)
    console.print(f"model saved to {result.model_dir} (use it with --model {result.model_dir})")


@app.command("contrastive")
@config_options(ContrastiveConfig, required=("out",))
def train_contrastive_cmd(
    manifest: Annotated[Path, typer.Argument(help="Manifest (.jsonl/.csv/.parquet) with train and val splits, "
                                                  "e.g. from `taxonlens synthworld`.")],
    settings: ConfigValues,
    resume: ResumeOpt = False,
    taxonomy: Annotated[str | None, typer.Option(help="Taxonomy of the evaluation (default: from the manifest).")
                        ] = None,
    num_processes: NumProcessesOpt = 1,
) -> None:
    """CLIP loss with a learnable temperature on captioned images; checkpoints every epoch, exact resume,
    zero-shot evaluation on the val split per epoch."""
    if launched(num_processes):
        return
    from taxonlens.data import read_manifest
    from taxonlens.train.contrastive import train_contrastive

    tax = load_taxonomy(taxonomy, allow_homonyms=True) if taxonomy else None
    records = read_manifest(manifest, taxonomy=tax)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"] or None
    config = settings.build(ContrastiveConfig)
    with training_progress("training") as show:
        result = train_contrastive(config, train, val, taxonomy=tax, resume=resume, progress=show)
    print_run_end(result)


@app.command("finedefics")
@config_options(Stage1Config, Stage2Config, required=("out",))
def train_finedefics_cmd(
    manifest: Annotated[Path, typer.Argument(help="Labelled photos (manifest or image folder); stage 1 needs their "
                                                  "attribute descriptions (`taxonlens attributes describe`).")],
    settings: ConfigValues,
    stage: Annotated[int, typer.Option(help="1: attribute-augmented contrastive alignment; 2: recognition-centric "
                                            "instruction tuning (--model a stage-1 OUT/model).")] = 1,
    taxonomy: Annotated[str | None, typer.Option(help="Taxonomy whose classes label the photos (default: built from "
                                                      "the manifest).")] = None,
    split: Annotated[str, typer.Option(help="Photos trained on.")] = "train",
    val_split: Annotated[str | None, typer.Option(help="Photos evaluated after every epoch (none if absent).")] = "val",
    resume: ResumeOpt = False,
    num_processes: NumProcessesOpt = 1,
) -> None:
    """Finedefics: stage 1 aligns photos, attribute descriptions and species names inside the LLM (next-token
    prediction plus object-attribute, attribute-category and category-category contrasts with hard negatives);
    stage 2 tunes it on open-set and 4-option species questions. Checkpoints, exact resume, merged model in OUT/model. Options of the other stage are unused."""
    if launched(num_processes):
        return
    from taxonlens.taxonomy import Taxonomy
    from taxonlens.train.finedefics import train_stage1, train_stage2

    if stage not in (1, 2):
        raise TaxonlensError(f"--stage is 1 (alignment) or 2 (instruction tuning), not {stage}")
    tax = load_taxonomy(taxonomy, allow_homonyms=True) if taxonomy else None
    records = read_records(manifest, tax)
    tax = tax or Taxonomy.from_paths(sorted({r.path for r in records}), allow_homonyms=True)
    train = [r for r in records if r.split == split]
    if not train:
        raise TaxonlensError(f"{manifest}: no labelled photos in split {split!r}")
    val = [r for r in records if r.split == val_split] or None
    config = settings.build(Stage1Config if stage == 1 else Stage2Config)
    with training_progress(f"finedefics stage {stage}") as show:
        result = (train_stage1 if stage == 1 else train_stage2)(config, train, tax, None, val, resume=resume,
                                                                 progress=show)
    print_run_end(result)


@app.command("sft")
@config_options(SFTConfig, required=("out",))
def train_sft_cmd(
    benchmark: QuestionsArg,
    settings: ConfigValues,
    images: ImagesOpt = None,
    val: Annotated[Path | None, typer.Option(help="Question sets scored after every epoch.")] = None,
    taxonomy: RankNamesOpt = None,
    ranks: Annotated[list[str] | None, typer.Option("--ranks", help="Rank names of the levels (overrides "
                                                                   "--taxonomy; e.g. --ranks species for ranker data).")
                     ] = None,
    resume: ResumeOpt = False,
    num_processes: NumProcessesOpt = 1,
) -> None:
    """Fine-tune a multimodal LLM with LoRA to answer hierarchical multiple-choice questions; checkpoints,
    exact resume, accuracy per level on --val after every epoch, merged model in OUT/model."""
    if launched(num_processes):
        return
    from taxonlens.data.vqa import read_vqa_benchmark
    from taxonlens.train.sft import train_sft

    records = read_vqa_benchmark(benchmark)  # first: a missing benchmark is named as such
    rank_names = ranks or load_taxonomy(taxonomy or str(benchmark), allow_homonyms=True).ranks
    config = settings.build(SFTConfig)
    with training_progress("fine-tuning") as show:
        result = train_sft(config, records, images, rank_names,
                           read_vqa_benchmark(val) if val else None, resume=resume, progress=show)
    print_run_end(result)


@app.command("grpo")
@config_options(RFTConfig, required=("out", "model"))
def train_grpo_cmd(
    benchmark: QuestionsArg,
    settings: ConfigValues,
    shots: Annotated[int, typer.Option(help="Records per species (0: all; the paper uses 1).")] = 0,
    images: ImagesOpt = None,
    taxonomy: RankNamesOpt = None,
    resume: ResumeOpt = False,
    num_processes: NumProcessesOpt = 1,
) -> None:
    """Reinforcement fine-tuning without thinking (GRPO; with --tara, TARA alignment to a biology
    foundation model) on hierarchical multiple-choice questions, each asked at one random rank;
    reward 1 for the true option. Checkpoints, exact resume, merged model in OUT/model. The starting
    --model is usually an SFT run's OUT/model: a random model earns no reward and learns nothing.
    Several processes (--num-processes, accelerate launch) run as trl runs them; --deepspeed zero2|zero3
    trains through DeepSpeed."""
    if launched(num_processes):
        return
    from taxonlens.data.vqa import read_vqa_benchmark
    from taxonlens.train.grpo import shots_per_species, train_grpo

    records = read_vqa_benchmark(benchmark)
    if shots:
        records = shots_per_species(records, shots, settings["seed"])
    rank_names = load_taxonomy(taxonomy or str(benchmark), allow_homonyms=True).ranks
    config = settings.build(RFTConfig)
    with training_progress("GRPO" + " + TARA" * config.tara,
                           lambda log: f"reward {log.figures['reward']:.2f} kl {log.figures.get('kl', 0):.4f}") as show:
        result = train_grpo(config, records, images, rank_names, resume=resume, progress=show)
    rewards = [row["reward"] for row in result.metrics]
    tenth = max(1, len(rewards) // 10)
    first, last = sum(rewards[:tenth]) / tenth, sum(rewards[-tenth:]) / tenth
    print_run_end(result, f"{result.steps} steps in {result.seconds:.1f} s; mean reward {first:.3f} in the first "
                          f"tenth of the steps, {last:.3f} in the last")


@app.command("pretrain-lmm")
def train_pretrain_cmd(
    out: Annotated[Path | None, typer.Option(help="Folder of the pretraining (default: the cache, "
                                                  "$TAXONLENS_CACHE/pretrained/KEY, which every benchmark reuses).")
                   ] = None,
    quick: Annotated[bool, typer.Option(help="A minute-sized world and model, for a try (not a benchmark start).")
                     ] = False,
    species: Annotated[int | None, typer.Option(min=4, help="Species of the world (default 400).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="The LMM's epochs (default 4).")] = None,
    threads: Annotated[int, typer.Option(help="torch threads (0: leave as set).")] = 0,
) -> None:
    """Pretrain the starting point of the method benchmarks once: a small LMM (small-qwen2.5-vl) trained from
    random weights to describe and caption the photos of a large synthworld (never its hierarchical questions),
    and a BFM (tiny-clip with taxonomic captions) on the same photos; cached, resumed if interrupted. Prints what
    the models know before any method runs."""
    from dataclasses import replace

    from rich.table import Table

    from taxonlens.train.pretrain import PretrainSpec, pretrain

    spec = PretrainSpec.quick() if quick else PretrainSpec()
    if species is not None:
        spec = replace(spec, world=replace(spec.world, n_species=species))
    if epochs is not None:
        spec = replace(spec, epochs=epochs)
    with training_progress("pretraining", lambda log: f"epoch {log.epoch} loss {log.loss:.3f}") as show:
        done = pretrain(spec, out, threads or None, say=console.print, progress=show)
    known = done.knowledge
    table = Table(title=f"what the pretrained models know (percent; {known['species']} species, chance of species "
                        f"retrieval {known['chance']:.1f})")
    splits = [s for s in ("seen", "novel") if s in known]
    table.add_column("figure")
    for split in splits:
        table.add_column(f"{split} ({known[split]['photos']} photos)", justify="right")
    for key in known[splits[0]]:
        if key != "photos":
            table.add_row(key.replace("_", " "), *(f"{known[s][key]:.1f}" for s in splits))
    console.print(table)
    console.print(f"LMM: {done.lmm}\nBFM: {done.bfm}")

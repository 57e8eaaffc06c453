"""``taxonlens train``: contrastive (BioCLIP), Finedefics, supervised and GRPO fine-tuning."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from taxonlens.cli.common import console, load_taxonomy, progress_bar, read_records
from taxonlens.errors import TaxonlensError
from taxonlens.models.text import TextType
from taxonlens.recognize.answers import AnswerFormat

app = typer.Typer(no_args_is_help=True, help="Train models (contrastive BioCLIP objective, ...).")
OutOpt = Annotated[Path, typer.Option(help="Run folder: checkpoint.pt, metrics.jsonl, model/.")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue an interrupted run in OUT exactly.")]
QuestionsArg = Annotated[Path, typer.Argument(help="Question sets (hierarchical-VQA JSONL, e.g. from `vqa build`).")]
LoraTargetsOpt = Annotated[str, typer.Option(help="language, language+head, all-linear, all-linear+head or a "
                                                  "regular expression.")]
ImagesOpt = Annotated[Path | None, typer.Option(help="Folder the benchmark's image paths are relative to.")]
RankNamesOpt = Annotated[str | None, typer.Option(help="Rank names for the questions (default: the benchmark's).")]


def epoch_and_loss(log: Any) -> str:
    """The progress description of a supervised step: its epoch and loss."""
    return f"epoch {log.epoch} loss {log.loss:.3f}"


@contextmanager
def training_progress(title: str, describe: Callable[[Any], str] = epoch_and_loss) -> Iterator[Callable[[Any], None]]:
    """A progress bar for a training run; yields the ``progress`` callback a trainer calls with each step's log."""
    with progress_bar() as bar:
        task = bar.add_task(title, total=None)
        yield lambda log: bar.update(task, completed=log.step, total=log.total_steps, description=describe(log))


def print_run_end(result: Any, summary: str | None = None) -> None:
    """The end of a training run: its metrics, one JSON line per row (or a ``summary`` line instead), and
    where its model was saved."""
    if summary is None:
        for row in result.metrics:
            console.print(json.dumps(row))
    else:
        console.print(summary)
    console.print(f"model saved to {result.model_dir} (use it with --model {result.model_dir})")


@app.command("contrastive")
def train_contrastive_cmd(
    manifest: Annotated[Path, typer.Argument(help="Manifest (.jsonl/.csv/.parquet) with train and val splits, "
                                                  "e.g. from `taxonlens synthworld`.")],
    out: OutOpt,
    encoder: Annotated[str, typer.Option(help="Starting encoder: preset, bioclip, hf-hub:..., dir, open_clip arch.")
                       ] = "tiny-clip",
    text_type: Annotated[TextType, typer.Option(help="taxonomic, scientific, common, scientific+common, "
                                                     "taxonomic+common or mixed.")] = TextType.taxonomic,
    epochs: Annotated[int, typer.Option()] = 10,
    batch_size: Annotated[int, typer.Option()] = 64,
    lr: Annotated[float, typer.Option()] = 5e-4,
    seed: Annotated[int, typer.Option()] = 0,
    resume: ResumeOpt = False,
    taxonomy: Annotated[str | None, typer.Option(help="Taxonomy of the evaluation (default: from the manifest).")
                        ] = None,
) -> None:
    """CLIP loss with a learnable temperature on captioned images; checkpoints every epoch, exact resume,
    zero-shot evaluation on the val split per epoch."""
    from taxonlens.data import read_manifest
    from taxonlens.train.contrastive import ContrastiveConfig, train_contrastive

    tax = load_taxonomy(taxonomy, allow_homonyms=True) if taxonomy else None
    records = read_manifest(manifest, taxonomy=tax)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"] or None
    config = ContrastiveConfig(encoder=encoder, text_type=text_type, epochs=epochs, batch_size=batch_size, lr=lr,
                               seed=seed, out=str(out))
    with training_progress("training") as show:
        result = train_contrastive(config, train, val, taxonomy=tax, resume=resume, progress=show)
    print_run_end(result)


@app.command("finedefics")
def train_finedefics_cmd(
    manifest: Annotated[Path, typer.Argument(help="Labelled photos (manifest or image folder); stage 1 needs their "
                                                  "attribute descriptions (`taxonlens attributes describe`).")],
    out: OutOpt,
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
    lora_targets: LoraTargetsOpt = "language",
    lora_r: Annotated[int, typer.Option()] = 8,
    epochs: Annotated[int, typer.Option()] = 3,
    batch_size: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option()] = 2e-4,
    split: Annotated[str, typer.Option(help="Photos trained on.")] = "train",
    val_split: Annotated[str | None, typer.Option(help="Photos evaluated after every epoch (none if absent).")] = "val",
    organism: Annotated[str, typer.Option(help="The word used in the questions.")] = "organism",
    seed: Annotated[int, typer.Option()] = 0,
    resume: ResumeOpt = False,
) -> None:
    """Finedefics: stage 1 aligns photos, attribute descriptions and species names inside the LLM (next-token
    prediction plus three contrasts with hard negatives); stage 2 tunes it on open-set and 4-option species
    questions. Checkpoints, exact resume, merged model in OUT/model."""
    from taxonlens.taxonomy import Taxonomy
    from taxonlens.train.finedefics import Stage1Config, Stage2Config, train_stage1, train_stage2

    if stage not in (1, 2):
        raise TaxonlensError(f"--stage is 1 (alignment) or 2 (instruction tuning), not {stage}")
    tax = load_taxonomy(taxonomy, allow_homonyms=True) if taxonomy else None
    records = read_records(manifest, tax)
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
    with training_progress(f"finedefics stage {stage}") as show:
        result = (train_stage1 if stage == 1 else train_stage2)(config, train, tax, None, val, resume=resume,
                                                                 progress=show)
    print_run_end(result)


@app.command("sft")
def train_sft_cmd(
    benchmark: QuestionsArg,
    out: OutOpt,
    model: Annotated[str, typer.Option(help="Multimodal LLM to fine-tune: preset, folder or hub name.")
                     ] = "tiny-qwen2.5-vl",
    answer: Annotated[AnswerFormat, typer.Option(help="letter (as the benchmark asks) or name (the option's text).")
                      ] = AnswerFormat.letter,
    system: Annotated[bool, typer.Option(help="Ask with the reference system prompt.")] = True,
    lora_targets: LoraTargetsOpt = "language",
    lora_r: Annotated[int, typer.Option()] = 8,
    epochs: Annotated[int, typer.Option()] = 3,
    batch_size: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option()] = 2e-4,
    images: ImagesOpt = None,
    val: Annotated[Path | None, typer.Option(help="Question sets scored after every epoch.")] = None,
    taxonomy: RankNamesOpt = None,
    ranks: Annotated[list[str] | None, typer.Option("--ranks", help="Rank names of the levels (overrides "
                                                                   "--taxonomy; e.g. --ranks species for ranker data).")
                     ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    resume: ResumeOpt = False,
) -> None:
    """Fine-tune a multimodal LLM with LoRA to answer hierarchical multiple-choice questions; checkpoints,
    exact resume, accuracy per level on --val after every epoch, merged model in OUT/model."""
    from taxonlens.data.vqa import read_vqa_benchmark
    from taxonlens.train.sft import SFTConfig, train_sft

    records = read_vqa_benchmark(benchmark)  # first: a missing benchmark is named as such
    rank_names = ranks or load_taxonomy(taxonomy or str(benchmark), allow_homonyms=True).ranks
    config = SFTConfig(model=model, answer=answer, system=system, lora_targets=lora_targets, lora_r=lora_r,
                       epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, out=str(out))
    with training_progress("fine-tuning") as show:
        result = train_sft(config, records, images, rank_names,
                           read_vqa_benchmark(val) if val else None, resume=resume, progress=show)
    print_run_end(result)


@app.command("grpo")
def train_grpo_cmd(
    benchmark: QuestionsArg,
    out: Annotated[Path, typer.Option(help="Run folder: config.json, metrics.jsonl, checkpoint-*/, model/.")],
    model: Annotated[str, typer.Option(help="Starting model, usually an SFT run's OUT/model (a random model "
                                            "earns no reward and learns nothing).")],
    tara: Annotated[bool, typer.Option(help="Alternate a TARA alignment update with every GRPO update.")] = False,
    bfm: Annotated[str, typer.Option(help="TARA's biology foundation model: a taxonlens encoder name or folder.")
                   ] = "tiny-clip",
    shots: Annotated[int, typer.Option(help="Records per species (0: all; the paper uses 1).")] = 0,
    answer: Annotated[AnswerFormat, typer.Option(help="name or letter: the format the starting model answers in.")
                      ] = AnswerFormat.name,
    system: Annotated[bool, typer.Option(help="Ask with the reference system prompt.")] = False,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (0: full fine-tuning).")] = 8,
    epochs: Annotated[int, typer.Option()] = 1,
    questions_per_step: Annotated[int, typer.Option()] = 4,
    generations: Annotated[int, typer.Option(help="Answers sampled per question (the group).")] = 4,
    lr: Annotated[float, typer.Option()] = 1e-4,
    beta: Annotated[float, typer.Option(help="KL penalty to the starting model.")] = 0.04,
    images: ImagesOpt = None,
    taxonomy: RankNamesOpt = None,
    seed: Annotated[int, typer.Option()] = 0,
    resume: ResumeOpt = False,
) -> None:
    """Reinforcement fine-tuning without thinking (GRPO; with --tara, TARA alignment to a biology
    foundation model) on hierarchical multiple-choice questions, each asked at one random rank;
    reward 1 for the true option. Checkpoints, exact resume, merged model in OUT/model."""
    from taxonlens.data.vqa import read_vqa_benchmark
    from taxonlens.train.grpo import RFTConfig, shots_per_species, train_grpo

    records = read_vqa_benchmark(benchmark)
    if shots:
        records = shots_per_species(records, shots, seed)
    rank_names = load_taxonomy(taxonomy or str(benchmark), allow_homonyms=True).ranks
    config = RFTConfig(model=model, out=str(out), tara=tara, bfm=bfm, answer=answer, system=system, lora_r=lora_r,
                       epochs=epochs, questions_per_step=questions_per_step, generations=generations, lr=lr,
                       beta=beta, seed=seed)
    with training_progress("GRPO" + " + TARA" * tara,
                           lambda log: f"reward {log.figures['reward']:.2f} kl {log.figures.get('kl', 0):.4f}") as show:
        result = train_grpo(config, records, images, rank_names, resume=resume, progress=show)
    rewards = [row["reward"] for row in result.metrics]
    tenth = max(1, len(rewards) // 10)
    first, last = sum(rewards[:tenth]) / tenth, sum(rewards[-tenth:]) / tenth
    print_run_end(result, f"{result.steps} steps in {result.seconds:.1f} s; mean reward {first:.3f} in the first "
                          f"tenth of the steps, {last:.3f} in the last")

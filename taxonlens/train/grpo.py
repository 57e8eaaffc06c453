"""No-thinking reinforcement fine-tuning (GRPO) of a multimodal LLM on hierarchical-VQA questions.

The questions are the benchmark's (:func:`~taxonlens.recognize.answers.question_text`), each
record asked at ``levels_per_record`` levels drawn at random (seeded; 1 by default, so every
sample is asked at one random rank), answered directly: no reasoning is asked for and a
completion is at most ``max_new_tokens`` tokens. The levels are drawn anew for every epoch, as
the SFT arm's are (:func:`~taxonlens.train.sft.epoch_examples` with the epoch's number): trl
cannot change its dataset's rows between epochs, so trl is given one dataset holding the
questions of every epoch, in epoch order, and trains one pass over it (``num_train_epochs=1``),
which trl shuffles as a whole: a step may mix questions of two epochs. The reward of a
completion is 1 when :func:`~taxonlens.recognize.answers.exact_option` reads the true option
from it (its letter, or exactly its name, whichever the model writes), else 0: a completion
that lists several options, adds words or misspells the name earns 0.

trl's :class:`~trl.GRPOTrainer` does the rest: ``generations`` completions sampled per question, advantages relative to their group (reward minus the group
mean, over the group's standard deviation), the clipped policy ratio (``epsilon``) and a KL
penalty (``beta``) to the reference model, which is the starting model (LoRA adapters off, or a
frozen copy for full fine-tuning). With ``tara=True`` the trainer is
:class:`~taxonlens.train.tara.TARATrainer`, which alternates a TARA alignment update with every
GRPO update (see :mod:`taxonlens.train.tara`).

trl runs on the device and in the precision of the training policy
(:func:`~taxonlens.train.parallel.placement` of ``device`` and ``precision``; bf16 or fp16 become
trl's mixed precision), under ``accelerate launch`` (or ``--num-processes``) in several processes
as trl runs there (``questions_per_step`` is the global count, split over the processes), and
with ``deepspeed`` (``zero2``, ``zero3`` or a JSON file) through DeepSpeed, as transformers'
``Trainer`` does (:mod:`taxonlens.train.zero`).

Start from a model that already answers in the asked format: with a 0/1 reward, a group whose
answers are all wrong (or all right) has zero advantage and teaches nothing, so a random model
learns nothing. The usual start is :func:`~taxonlens.train.sft.train_sft`'s ``out/model``.

LoRA (``lora_r > 0``, the default) or full fine-tuning (``lora_r = 0``). The output layer cannot
carry an adapter here: trl computes log-probabilities from its weight directly, so the ``+head``
target sets are refused (an SFT warm start has already adapted it).

Output folder: ``config.json`` (settings and the data and base-model fingerprints a resume
checks), ``metrics.jsonl`` (one line per logged step: reward, KL, loss and, with TARA, the
alignment losses), ``checkpoint-<step>/`` (trl's checkpoint: adapters or weights, optimizer,
scheduler, random states, and ``tara.pt`` with the projectors; the newest is kept) and
``model/``: the trained model (adapters merged), which ``load_lmm`` loads like any other.
A run stopped at any point and resumed (``resume=True``) continues from its last checkpoint
and ends with the same weights as one never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taxonlens.data import VQARecord
from taxonlens.errors import DataError, TaxonlensError
from taxonlens.models.mllm import LMM, load_lmm
from taxonlens.recognize.answers import exact_option, question_text
from taxonlens.train.checkpoint import CheckpointError, check_config, isolated_run, read_metrics, write_jsonl
from taxonlens.train.config import LMMConfig, QuestionConfig, with_defaults
from taxonlens.train.loop import METRICS_FILE, MODEL_DIR, StepLog, TrainResult
from taxonlens.train.parallel import Placement, placement
from taxonlens.train.sft import (
    ImageSource,
    SFTExample,
    build_examples,
    check_records,
    data_fingerprint,
    default_ranks,
    epoch_examples,
    image_loader,
)

log = logging.getLogger(__name__)
CONFIG_FILE = "config.json"


@dataclass
@with_defaults(out="taxonlens-grpo", epochs=1, lr=1e-4, warmup=0.0, answer="name", system=False)
class RFTConfig(LMMConfig, QuestionConfig):
    """Settings of a GRPO run (and of its TARA alignment, when ``tara`` is on):
    :class:`~taxonlens.train.config.LMMConfig` (``lora_r = 0``: full fine-tuning; no ``+head``
    target sets), :class:`~taxonlens.train.config.QuestionConfig` (the format the warm start was
    trained on; each field's help is in its metadata) and GRPO's and TARA's own settings. The
    learning rate decays linearly to 0 after the warmup; ``checkpoint_every`` 0 checkpoints after
    every epoch's worth of steps (one epoch's questions over ``questions_per_step``)."""

    questions_per_step: int = field(default=4, metadata={
        "help": "GRPO: questions per optimizer step, each answered `generations` times (trl leaves out the last "
                "len % questions_per_step questions of its shuffled pass over every epoch's questions)"})
    generations: int = field(default=4, metadata={
        "help": "GRPO: completions sampled per question, the group the advantages are relative to (>= 2)"})
    beta: float = field(default=0.04, metadata={
        "help": "GRPO: weight of the KL penalty to the starting model (0: no reference model)"})
    epsilon: float = field(default=0.2, metadata={
        "help": "GRPO: clipping of the policy ratio to [1 - epsilon, 1 + epsilon]"})
    temperature: float = field(default=1.0, metadata={"help": "GRPO: sampling temperature of the completions"})
    max_new_tokens: int = field(default=16, metadata={
        "help": "GRPO: longest completion in tokens; answers are direct, without reasoning"})
    levels_per_record: int = field(default=1, metadata={
        "help": "GRPO: levels asked per record, drawn at random with the seed anew every epoch (0: every level that "
                "offers a choice)"})
    tara: bool = field(default=False, metadata={
        "help": "alternate a TARA alignment update with every GRPO update"})
    bfm: str = field(default="tiny-clip", metadata={
        "help": "TARA: the biology foundation model aligned to, a taxonlens encoder name or folder"})
    visual_layer: int = field(default=0, metadata={
        "help": "TARA: LMM layer whose image-token states are aligned (0: the middle layer)"})
    label_layer: int = field(default=0, metadata={
        "help": "TARA: LMM layer (1-based) whose state at the first answer token is aligned to the label's BFM text "
                "embedding (0: the last layer, as the paper's reference code reads)"})
    visual_weight: float = field(default=0.5, metadata={
        "help": "TARA: weight of the visual alignment loss in their weighted mean"})
    label_weight: float = field(default=0.5, metadata={
        "help": "TARA: weight of the label alignment loss in their weighted mean"})
    projector_lr_scale: float = field(default=10.0, metadata={
        "help": "TARA: the projectors' learning rate over lr"})
    projector_hidden: int = field(default=0, metadata={
        "help": "TARA: hidden width of the projectors (0: twice the LMM's width)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_targets.endswith("+head"):
            raise TaxonlensError(f"LoRA targets {self.lora_targets!r}: GRPO cannot adapt the output layer (trl "
                                 "computes log-probabilities from its weight); use language or all-linear")
        positive = {"epochs": self.epochs, "questions_per_step": self.questions_per_step, "lr": self.lr,
                    "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                    "projector_lr_scale": self.projector_lr_scale}
        bad = [f"{k} {v}" for k, v in positive.items() if not v > 0]
        if self.generations < 2:
            bad.append(f"generations {self.generations} (a group needs at least 2 answers)")
        if self.lora_r < 0 or self.beta < 0 or self.epsilon <= 0 or not 0 <= self.warmup < 1:
            bad.append(f"lora_r {self.lora_r}, beta {self.beta}, epsilon {self.epsilon}, warmup {self.warmup}")
        if min(self.levels_per_record, self.checkpoint_every, self.visual_layer, self.label_layer,
               self.projector_hidden) < 0 or min(self.visual_weight, self.label_weight) < 0:
            bad.append("levels_per_record, checkpoint_every, layers, projector_hidden and weights must be >= 0")
        if self.tara and self.visual_weight + self.label_weight <= 0:
            bad.append("TARA needs a positive visual or label weight")
        if bad:
            raise TaxonlensError("bad GRPO settings: " + "; ".join(bad))


# -------------------------------------------------------------------- data
def shots_per_species(records: Sequence[VQARecord], shots: int, seed: int = 0) -> list[VQARecord]:
    """Up to ``shots`` records of every species (the last level of their path), drawn with
    ``seed``, in their original order (the paper trains on 1 shot per iNat21 species)."""
    if shots < 1:
        raise TaxonlensError(f"shots must be >= 1, got {shots}")
    by_leaf: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_leaf.setdefault(r.levels[-1].lower(), []).append(i)
    rng = random.Random(f"taxonlens-shots:{seed}")
    keep = {i for idx in by_leaf.values() for i in rng.sample(idx, min(shots, len(idx)))}
    return [r for i, r in enumerate(records) if i in keep]


def rft_examples(lmm: LMM, records: Sequence[VQARecord], ranks: Sequence[str], config: RFTConfig) -> list[SFTExample]:
    """The questions of every epoch, in epoch order (the same count in each): in epoch ``e``,
    ``levels_per_record`` levels of each record (all of them when 0) drawn with the run's seed
    and ``e`` (:func:`~taxonlens.train.sft.epoch_examples`), as SFT examples (prompt text and
    true answer), which the reward and the TARA alignment pass read too."""
    examples = build_examples(lmm, records, ranks, config.answer, config.organism, config.system_prompt)
    return [examples[j] for epoch in range(config.epochs)
            for j in epoch_examples(examples, config.levels_per_record, config.seed, epoch)]


def rft_dataset(examples: Sequence[SFTExample], records: Sequence[VQARecord], ranks: Sequence[str],
                load: Callable[[VQARecord], Any], config: RFTConfig):
    """trl's dataset: per example, the conversational ``prompt`` (``LMM.messages``), its ``image``
    and ``row``, its index into ``examples`` (what the reward and the alignment look up)."""
    from datasets import Dataset

    rows = [{"prompt": LMM.messages(question_text(ranks[ex.level], records[ex.record].choices[ex.level],
                                                  config.organism), config.system_prompt),
             "image": load(records[ex.record]), "row": j} for j, ex in enumerate(examples)]
    return Dataset.from_list(rows)


def answer_reward(examples: Sequence[SFTExample], records: Sequence[VQARecord]) -> Callable[..., list[float]]:
    """trl's reward function: 1.0 for a completion that names exactly the true option
    (:func:`~taxonlens.recognize.answers.exact_option`), else 0.0."""
    truth = [records[ex.record].levels[ex.level].lower() for ex in examples]
    options = [list(records[ex.record].choices[ex.level]) for ex in examples]

    def reward(completions: list, row: list[int], **_: Any) -> list[float]:
        out = []
        for completion, j in zip(completions, row):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            picked = exact_option(text, options[j])
            out.append(float(picked is not None and options[j][picked].lower() == truth[j]))
        return out

    reward.__name__ = "answer_reward"
    return reward


# ---------------------------------------------------------------- training
def train_grpo(
    config: RFTConfig,
    records: Sequence[VQARecord],
    images: ImageSource = None,
    ranks: Sequence[str] | None = None,
    resume: bool = False,
    progress: Callable[[StepLog], None] | None = None,
) -> TrainResult[LMM]:
    """Reinforcement fine-tuning of ``config.model`` with GRPO (and TARA when ``config.tara``).

    Args:
        records: question sets (their order is part of the run); :func:`shots_per_species`
            selects k shots per species.
        images: a function ``record -> PIL image``, a folder the image paths are relative to,
            or ``None`` (paths as written).
        ranks: rank names of the questions (default ``level1``, ...).
        resume: continue from the newest checkpoint in ``out`` (same settings, data and base
            model required); without it, an existing checkpoint is an error.
        progress: called with a :class:`~taxonlens.train.loop.StepLog` after every logged step (its
            figures: trl's logged values, ``reward``, ``kl``, ``loss``, ``tara/...``).

    Returns:
        the result; its checkpoint is the newest ``out/checkpoint-<step>`` folder.

    Raises:
        CheckpointError: a checkpoint exists and ``resume`` is off, or it belongs to another run.
        DataError: malformed records, no question, unreadable images.
    """
    records = list(records)
    ranks = default_ranks(records, ranks)
    check_records(records, ranks)
    load = image_loader(images)
    out = Path(config.out)
    checkpoints = sorted(out.glob("checkpoint-*"))
    if checkpoints and not resume:
        raise CheckpointError(f"{out} holds checkpoints of a run: resume it, or choose another output folder")
    with isolated_run(out, resume, config.threads):
        return _run(config, records, load, ranks, out, bool(checkpoints), progress)


def _trl_args(config: RFTConfig, out: Path, total_steps: int, steps_per_epoch: int, suppress: list[int],
              place: Placement):
    from trl import GRPOConfig

    completions = config.questions_per_step * config.generations
    if completions % place.world:
        raise TaxonlensError(f"{place.world} processes cannot share {config.questions_per_step} questions x "
                             f"{config.generations} generations per step evenly; change questions_per_step")
    return GRPOConfig(
        output_dir=str(out), use_cpu=place.device.type == "cpu", bf16=place.precision == "bf16",
        fp16=place.precision == "fp16", deepspeed=place.deepspeed, seed=config.seed,
        data_seed=config.seed, num_train_epochs=1,  # one pass over every epoch's questions
        per_device_train_batch_size=completions // place.world,
        num_generations=config.generations, max_completion_length=config.max_new_tokens,
        temperature=config.temperature, learning_rate=config.lr, lr_scheduler_type="linear",
        warmup_steps=round(config.warmup * total_steps), weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        beta=config.beta, epsilon=config.epsilon, loss_type="grpo", scale_rewards="group",
        logging_steps=1, report_to=[], disable_tqdm=True, save_strategy="steps",
        save_steps=config.checkpoint_every or steps_per_epoch, save_total_limit=1, save_only_model=False,
        remove_unused_columns=False, dataloader_num_workers=0, log_completions=False,
        disable_dropout=True, cast_lm_head_to_fp32=False, gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        generation_kwargs={"suppress_tokens": suppress},
    )


def _run(config: RFTConfig, records: list[VQARecord], load: Callable[[VQARecord], Any], ranks: list[str],
         out: Path, resume: bool, progress: Callable[[StepLog], None] | None) -> TrainResult[LMM]:
    from transformers import PrinterCallback, TrainerCallback, set_seed

    set_seed(config.seed)
    place = placement(config.device, config.precision, config.deepspeed)
    lmm = load_lmm(config.model, seed=config.seed, device=place.device)
    use_cache = lmm.model.config.to_dict().get("use_cache")  # None: the top-level config does not set it
    if config.lora_r == 0 and config.beta > 0 and not Path(config.model).is_dir() and "/" not in config.model:
        raise TaxonlensError(f"full fine-tuning with a KL penalty reloads {config.model} as the reference; save it to "
                             "a folder first (LMM.save) or use LoRA")
    run_config = {**asdict(config), "data": data_fingerprint(records, ranks), "base model": lmm.fingerprint()}
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / CONFIG_FILE
    metrics_path = out / METRICS_FILE
    metrics: list[dict[str, Any]] = []
    if resume:
        check_config(json.loads(config_path.read_text()), run_config, RFTConfig.RESUMABLE_CHANGES, str(config_path))
        last = max(int(p.name.split("-")[-1]) for p in out.glob("checkpoint-*"))
        metrics = read_metrics(metrics_path, last, "step")  # the steps after it are done again
    write_jsonl(metrics_path, metrics)
    config_path.write_text(json.dumps(run_config, indent=1))
    if config.lora_r:
        lmm.add_lora(config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets)
    examples = rft_examples(lmm, records, ranks, config)
    dataset = rft_dataset(examples, records, ranks, load, config)
    per_epoch = len(examples) // config.epochs
    steps_per_epoch = per_epoch // config.questions_per_step
    if not steps_per_epoch:
        raise DataError(f"{per_epoch} training questions per epoch: fewer than questions_per_step "
                        f"({config.questions_per_step})")
    total_steps = len(examples) // config.questions_per_step  # trl leaves out an incomplete last batch
    args = _trl_args(config, out, total_steps, steps_per_epoch, lmm.non_answer_token_ids, place)

    class Journal(TrainerCallback):
        step_start = time.perf_counter()

        def on_step_begin(self, _args, _state, _control, **_kw):
            self.step_start = time.perf_counter()

        def on_log(self, _args, state, _control, logs=None, **_kw):
            if not logs or "reward" not in logs:
                return
            row = {"step": state.global_step, **{k: float(v) for k, v in logs.items()}}
            metrics.append(row)
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if progress is not None:
                epoch = min(config.epochs, max(1, math.ceil(state.global_step * config.questions_per_step / per_epoch)))
                progress(StepLog(epoch, state.global_step, total_steps,
                                 row.get("loss", math.nan), row.get("learning_rate", math.nan),
                                 time.perf_counter() - self.step_start, row))

    kwargs = {"model": lmm.model, "reward_funcs": answer_reward(examples, records), "args": args,
              "train_dataset": dataset, "processing_class": lmm.processor, "callbacks": [Journal()]}
    if config.tara:
        from taxonlens.train.tara import TARATrainer, alignment_targets

        targets = alignment_targets(config.bfm, examples, records, load)
        trainer = TARATrainer(lmm=lmm, examples=examples, records=records, load=load, targets=targets,
                              tara=config, **kwargs)
    else:
        from trl import GRPOTrainer

        trainer = GRPOTrainer(**kwargs)
    trainer.remove_callback(PrinterCallback)  # metrics go to metrics.jsonl and ``progress``
    tick = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume or None)
    seconds = time.perf_counter() - tick
    model = trainer.model
    model.eval()
    lmm.model = model.merge_and_unload() if config.lora_r else model
    if use_cache is None:  # trl turns the KV cache off for training; generation wants it back
        lmm.model.config.__dict__.pop("use_cache", None)
    else:
        lmm.model.config.use_cache = use_cache
    model_dir = lmm.save(out / MODEL_DIR)
    saved = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return TrainResult(lmm, model_dir, saved[-1] if saved else None, metrics, trainer.state.global_step, seconds)


__all__ = ["RFTConfig", "answer_reward", "rft_dataset", "rft_examples",
           "shots_per_species", "train_grpo"]

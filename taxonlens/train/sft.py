"""Supervised fine-tuning (SFT) with LoRA of a multimodal LLM on hierarchical-VQA questions.

Every level of a :class:`~taxonlens.data.VQARecord` that offers more than one option is one
training example, asked exactly as the benchmark asks it
(:func:`~taxonlens.recognize.answers.question_text`, options in the order stored in the
record, optionally after :data:`~taxonlens.recognize.answers.SYSTEM_PROMPT`): the prompt is
``lmm.chat(question, system)`` and the target the true option's letter (``answer="letter"``,
what the reference question asks for) or its name (``answer="name"``), followed by the
model's end-of-turn text. The loss is the cross-entropy of the target tokens only (labels
-100 on the prompt and the padding, padded on the right), averaged over the target tokens of
the batch; logits are computed at those positions only, so a large vocabulary costs little.

LoRA adapters (:meth:`~taxonlens.models.mllm.LMM.add_lora`) are the only trained weights:
AdamW on them, a linear warmup and a cosine decay. ``lora_targets`` chooses where they go:
``language`` (attention and MLP projections of the language model), ``language+head`` (the
same plus the output layer), ``all-linear`` (peft's: every linear layer but the output
layer, vision tower and connector included), ``all-linear+head``, or a regular expression
over module names. ``language`` is the usual choice for a pretrained model, whose output
layer already tells tokens apart; a random-weight tiny preset needs ``+head``: its frozen
random output layer cannot make any token much more likely than the rest (with ``language``
alone the loss of tiny-qwen2.5-vl stalls near 4.7 nats, measured). Such a model learns
``name`` answers far faster than ``letter`` ones, whose token depends on where the true
option is listed (see ``tests/train/test_sft.py`` for measurements).

Everything random in a run is fixed by ``seed``: the model's random weights (presets), the
LoRA initialisation, the shuffle of every epoch (:func:`~taxonlens.train.loop.epoch_batches`,
the last incomplete batch kept), the levels drawn per record when ``questions_per_record``
is set (seeded by ``(seed, epoch, record)``) and LoRA dropout. The checkpoint
``out/checkpoint.pt`` (adapter weights, optimizer, scheduler, loop state, random states;
not the frozen base weights) is written at every epoch end and every ``checkpoint_every``
steps, so a run killed at any point and resumed ends with the same weights as one never
stopped. Resuming is refused under other settings, other data or another base model.

Output folder: ``checkpoint.pt``, ``config.json``, ``metrics.jsonl`` (one line per epoch:
train loss, learning rate, speed, and with validation records the accuracy per level in
``score`` mode) and ``model/``: the adapters merged into the base weights
(peft ``merge_and_unload``), saved as a plain transformers model, so
``load_lmm(out / "model")`` loads it like any other and needs no peft at inference.
:func:`load_sft_checkpoint` rebuilds the unmerged LoRA model of a checkpoint.

The loop is shared (:mod:`taxonlens.train.loop`): :func:`tune_lmm` trains any
:class:`~taxonlens.train.loop.EpochTask` (the items of each epoch
and the loss of a batch of them) under a :class:`TuneConfig` with this frame (LoRA or full
fine-tuning, schedule, checkpoints, exact resume, metrics, merged model). SFT's task is
:func:`examples_task` over the prepared :class:`SFTExample` list; Finedefics' recognition
tuning (:mod:`taxonlens.train.finedefics`) is the same task over its own examples, and its
alignment stage a task with its own loss.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from taxonlens.data import VQARecord, load_image
from taxonlens.errors import DataError, ImageError, TaxonlensError
from taxonlens.models.mllm import LMM, load_lmm
from taxonlens.recognize.answers import ANSWERS, LETTERS, SYSTEM_PROMPT, answer_options, question_text
from taxonlens.recognize.vqa_answer import answer_records
from taxonlens.train.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    load_checkpoint,
)
from taxonlens.train.config import LMMConfig, LoopConfig, QuestionConfig, with_defaults
from taxonlens.train.loop import (
    MODEL_DIR,
    EpochTask,
    LoopRun,
    StepLog,
    TrainResult,
    adamw,
    seed_everything,
    train_epochs,
)
from taxonlens.train.parallel import Placement

#: where a record's image comes from: a function of the record, a folder its paths are relative
#: to, or ``None`` (the paths as written)
ImageSource = Callable[[VQARecord], Image.Image] | str | Path | None


# ------------------------------------------------------------------ config
@dataclass
@with_defaults(out="taxonlens-sft")
class TuneConfig(LoopConfig, LMMConfig):
    """Settings every fine-tuning of a multimodal LLM in the epoch loop shares (SFT, Finedefics'
    stages): :class:`~taxonlens.train.config.LoopConfig`, :class:`~taxonlens.train.config.LMMConfig`
    (each field's help is in its metadata) and the evaluation's batch size. The last batch of an
    epoch may be smaller."""

    eval_batch_size: int = field(default=16, metadata={"help": "items per scoring call in the evaluation"})

    RESUMABLE_CHANGES = (*LoopConfig.RESUMABLE_CHANGES, "gradient_checkpointing", "eval_batch_size")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_r < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise TaxonlensError(f"LoRA needs rank >= 1, alpha > 0 and 0 <= dropout < 1; got rank {self.lora_r}, "
                                 f"alpha {self.lora_alpha}, dropout {self.lora_dropout}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.warmup < 1:
            raise TaxonlensError(f"training needs epochs >= 1, batch size >= 1, lr > 0 and 0 <= warmup < 1; got "
                                 f"epochs {self.epochs}, batch size {self.batch_size}, lr {self.lr}, "
                                 f"warmup {self.warmup}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise TaxonlensError("weight_decay and max_grad_norm must be >= 0")
        if self.checkpoint_every < 0 or self.eval_every < 0:
            raise TaxonlensError("checkpoint_every and eval_every must be >= 0")
        if self.eval_batch_size < 1 or (self.threads is not None and self.threads < 1):
            raise TaxonlensError("eval_batch_size must be >= 1 and threads None or >= 1")


@dataclass
class SFTConfig(TuneConfig, QuestionConfig):
    """Settings of a supervised fine-tuning run: :class:`TuneConfig`,
    :class:`~taxonlens.train.config.QuestionConfig` and how many questions of a record an epoch trains."""

    questions_per_record: int = field(default=0, metadata={
        "help": "0 trains on every level that offers a choice; k > 0 on k of them per record and epoch, drawn "
                "anew each epoch (fewer steps per epoch on deep trees, every level seen over the epochs)"})
    score_validation: bool = field(default=True, metadata={
        "help": "with validation records, score their options too (accuracy per level, one pass per option); "
                "off: their loss only"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.questions_per_record < 0:
            raise TaxonlensError("questions_per_record must be >= 0")


# -------------------------------------------------------------------- data
class SFTExample(NamedTuple):
    """One training question: level ``level`` (0-based) of record ``record`` (an index into the
    records), the ``prompt`` up to where the answer starts, and the ``target`` (the answer and
    the end-of-turn text)."""

    record: int
    level: int
    prompt: str
    target: str


def default_ranks(records: Sequence[VQARecord], ranks: Sequence[str] | None = None) -> list[str]:
    """The rank names of the questions: ``ranks``, else ``level1``, ``level2``, ... (as
    :func:`~taxonlens.recognize.vqa_answer.answer_records` names them).

    Raises:
        DataError: fewer rank names than the deepest record has levels.
    """
    depth = max((len(r.levels) for r in records), default=0)
    names = [f"level{k + 1}" for k in range(depth)] if ranks is None else [str(r) for r in ranks]
    if len(names) < depth:
        raise DataError(f"{len(names)} rank names for records {depth} levels deep")
    return names


def _truth(record: VQARecord, level: int, where: str) -> int:
    """Position of the true name among the options of ``level`` (case-insensitive)."""
    options = [o.lower() for o in record.choices[level]]
    truth = record.levels[level].lower()
    if truth not in options:
        raise DataError(f"{where}: the truth {record.levels[level]!r} of level {level + 1} is not among its "
                        f"options {list(record.choices[level])}")
    return options.index(truth)


def check_records(records: Sequence[VQARecord], ranks: Sequence[str], what: str = "training") -> list[tuple[int, int]]:
    """``(record, level)`` of every question of ``records`` (levels offering more than one option).

    Raises:
        DataError: an item that is not a :class:`VQARecord`, levels and options of different
            lengths, a truth missing from its options, more options than letters, or no question.
    """
    if not records:
        raise DataError(f"no {what} records")
    asks = []
    for i, r in enumerate(records):
        if not isinstance(r, VQARecord):
            raise DataError(f"{what} item {i}: expected a VQARecord (see taxonlens.data.vqa_build.build_vqa), "
                            f"got {type(r).__name__}")
        where = f"{what} record {i} (line {r.line}, {r.image})"
        if len(r.levels) != len(r.choices):
            raise DataError(f"{where}: {len(r.levels)} levels but {len(r.choices)} option lists")
        for k, opts in enumerate(r.choices):
            if len(opts) > len(LETTERS):
                raise DataError(f"{where}: level {k + 1} offers {len(opts)} options; at most {len(LETTERS)} "
                                "can be lettered")
            _truth(r, k, where)
            if len(opts) > 1:
                asks.append((i, k))
    if not asks:
        raise DataError(f"the {what} records ask no question: every level offers a single option")
    if len(ranks) < max(len(r.levels) for r in records):
        raise DataError(f"{len(ranks)} rank names for records {max(len(r.levels) for r in records)} levels deep")
    return asks


def build_examples(lmm: LMM, records: Sequence[VQARecord], ranks: Sequence[str], answer: str = "letter",
                   organism: str = "organism", system: str | None = SYSTEM_PROMPT) -> list[SFTExample]:
    """The training questions of ``records`` in ``lmm``'s chat format, record by record, level by
    level (only levels that offer a choice).

    Raises:
        DataError: see :func:`check_records`.
    """
    if answer not in ANSWERS:
        raise TaxonlensError(f"unknown answer {answer!r}; use one of {', '.join(ANSWERS)}")
    out = []
    for i, k in check_records(records, ranks):
        r = records[i]
        pos = _truth(r, k, f"record {i}")
        reply = answer_options(r.choices[k], answer)[pos]
        prompt = lmm.chat(question_text(ranks[k], r.choices[k], organism), system)
        out.append(SFTExample(i, k, prompt, reply + lmm.end_of_turn))
    return out


def image_loader(images: ImageSource, what: str = "training") -> Callable[[VQARecord], Image.Image]:
    """A function ``record -> PIL image`` from an :data:`ImageSource`; files are read with the
    safe loader, and an unreadable one is a :class:`DataError` naming the record. Any record
    with an ``image`` path serves (a :class:`VQARecord`, a manifest's
    :class:`~taxonlens.data.Record`); one with a ``line`` is named by it."""
    if callable(images):
        return images
    if images is not None and not isinstance(images, (str, Path)):
        raise TaxonlensError(f"images must be a function of the record, a folder or None, not {type(images).__name__}")
    root = Path(images) if images is not None else None
    if root is not None and not root.is_dir():
        raise DataError(f"image folder {root} does not exist")

    def load(record: VQARecord) -> Image.Image:
        try:
            return load_image(root / record.image if root is not None else record.image)
        except ImageError as e:
            hint = "" if root is not None else "; pass the folder the image paths are relative to"
            line = getattr(record, "line", None)
            where = f"line {line}" if line is not None else record.image
            raise DataError(f"{what} record ({where}): {e}{hint}") from None

    return load


def data_fingerprint(records: Sequence[VQARecord], ranks: Sequence[str]) -> str:
    """A hash of the questions: each record's image name, levels and options, and the rank names.
    Images are identified by name, not content."""
    h = hashlib.sha256(json.dumps(list(ranks)).encode())
    for r in records:
        h.update(json.dumps([r.image, list(r.levels), [list(c) for c in r.choices]]).encode())
    return h.hexdigest()[:16]


def examples_by_record(examples: Sequence[SFTExample]) -> dict[int, list[int]]:
    """Indices into ``examples`` of each record's examples, records in order of first appearance."""
    by_record: dict[int, list[int]] = {}
    for j, ex in enumerate(examples):
        by_record.setdefault(ex.record, []).append(j)
    return by_record


def epoch_examples(examples: Sequence[SFTExample], per_record: int, seed: int, epoch: int) -> list[int]:
    """Indices into ``examples`` trained in ``epoch``: all of them (``per_record == 0``), else up to
    ``per_record`` levels of each record, drawn from a stream seeded by ``(seed, epoch, record)``.
    The count is the same in every epoch."""
    if per_record == 0:
        return list(range(len(examples)))
    chosen = []
    for rec, idx in examples_by_record(examples).items():
        rng = random.Random(f"taxonlens-sft:{seed}:{epoch}:{rec}")
        chosen += sorted(rng.sample(idx, min(per_record, len(idx))))
    return chosen


# -------------------------------------------------------------------- loss
def _target_ids(lmm: LMM, target: str, cache: dict[str, list[int]]) -> list[int]:
    if target not in cache:
        cache[target] = lmm.tokenizer(target, add_special_tokens=False)["input_ids"]
    return cache[target]


def sft_inputs(lmm: LMM, images: Sequence[Image.Image], examples: Sequence[SFTExample],
               cache: dict[str, list[int]] | None = None) -> tuple[dict, torch.Tensor]:
    """Processor inputs of ``prompt + target`` for every example (one image each, padded on the
    right) and the labels ``[B, L]``: the target's token ids where the target is, -100 elsewhere.

    Raises:
        TaxonlensError: a target that tokenizes differently after its prompt than alone (its
            tokens would not be the ones scored).
    """
    cache = {} if cache is None else cache
    batch = lmm.inputs(images, [ex.prompt + ex.target for ex in examples], "right")
    ids, lengths = batch["input_ids"], batch["attention_mask"].sum(dim=1).tolist()
    labels = torch.full_like(ids, -100)
    for row, (ex, length) in enumerate(zip(examples, lengths)):
        target = _target_ids(lmm, ex.target, cache)
        start = length - len(target)
        if ids[row, start:length].tolist() != target:
            raise TaxonlensError(f"{lmm.name}: the answer {ex.target!r} tokenizes differently after the prompt; "
                                 "training needs the answer to start a new token")
        labels[row, start:length] = ids[row, start:length]
    return batch, labels


def sft_loss(model: torch.nn.Module, batch: dict, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the labelled tokens (teacher forcing: position ``t`` predicts token
    ``t + 1``); logits are computed only where a label is predicted."""
    predicts = torch.zeros_like(labels, dtype=torch.bool)
    predicts[:, :-1] = labels[:, 1:] != -100
    logits = model(**batch, logits_to_keep=predicts).logits  # [N, V], row-major over (batch, position)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:][predicts[:, :-1]])


# -------------------------------------------------------------- evaluation
def evaluate_sft(lmm: LMM, records: Sequence[VQARecord], images: ImageSource, ranks: Sequence[str] | None = None,
                 answer: str = "letter", system: bool = True, organism: str = "organism",
                 batch_size: int = 16) -> dict[str, Any]:
    """Option-scoring accuracy of ``lmm`` on every question of ``records``, asked as in training:
    :func:`~taxonlens.recognize.vqa_answer.answer_records` in ``score`` mode, the options' letters
    (``letter``) or names (``name``) scored after the question, with or without the system
    prompt; the best one wins.

    Returns:
        ``{"n": questions, "acc": percent, "chance": percent (mean of 1 / options),
        "level_acc": {rank: percent}}`` over the levels that offer a choice.
    """
    ranks = default_ranks(records, ranks)
    asks = check_records(records, ranks, "evaluation")
    load = image_loader(images, "evaluation")
    rows = [row for start in range(0, len(records), batch_size)  # a few records at a time: their images are held
            for row in answer_records(lmm, records[start:start + batch_size], load, "score", ranks=ranks,
                                      organism=organism, batch_size=batch_size, answer=answer,
                                      system=SYSTEM_PROMPT if system else None)]
    picks = {(i, k): [o.lower() for o in records[i].choices[k]].index(rows[i]["path"][k].lower()) for i, k in asks}
    right = {ik: picks[ik] == _truth(records[ik[0]], ik[1], "evaluation") for ik in asks}
    level_acc = {}
    for k in sorted({k for _, k in asks}):
        hits = [right[ik] for ik in asks if ik[1] == k]
        level_acc[ranks[k]] = 100.0 * sum(hits) / len(hits)
    return {"n": len(asks), "acc": 100.0 * sum(right.values()) / len(asks),
            "chance": 100.0 * float(np.mean([1 / len(records[i].choices[k]) for i, k in asks])),
            "level_acc": level_acc}


@torch.inference_mode()
def examples_loss(lmm: LMM, examples: Sequence[SFTExample], image_of: Callable[[int], Image.Image],
                  batch_size: int = 16) -> float:
    """The mean cross-entropy of the answer tokens of ``examples`` (:func:`sft_loss`, weighted
    by answer tokens, no gradients): the validation loss of a fine-tuning."""
    cache: dict[str, list[int]] = {}
    device = next(lmm.model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        group = list(examples[start:start + batch_size])
        batch, labels = sft_inputs(lmm, [image_of(ex.record) for ex in group], group, cache)
        n = int((labels[:, 1:] != -100).sum())
        total += float(sft_loss(lmm.model, batch.to(device), labels.to(device))) * n
        tokens += n
    return total / max(tokens, 1)


# ---------------------------------------------------------------- training
def examples_task(lmm: LMM, examples: Sequence[SFTExample], image_of: Callable[[int], Image.Image],
                  plan: Callable[[int], list[int]], evaluate: Callable[[], dict[str, Any]] | None = None) -> EpochTask:
    """The task of learning prepared answers: item ``j`` is ``examples[j]`` with the image
    ``image_of(examples[j].record)`` (read once per batch), its loss :func:`sft_loss`, each item
    weighing its answer tokens (so data-parallel shares add up to the token mean of the batch)."""
    cache: dict[str, list[int]] = {}

    def weight(items: list[int]) -> float:
        return float(sum(len(_target_ids(lmm, examples[j].target, cache)) for j in items))

    def loss(items: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        group = [examples[j] for j in items]
        loaded = {i: image_of(i) for i in dict.fromkeys(ex.record for ex in group)}
        batch, labels = sft_inputs(lmm, [loaded[ex.record] for ex in group], group, cache)
        device = next(lmm.model.parameters()).device
        return sft_loss(lmm.model, batch.to(device), labels.to(device)), {}

    return EpochTask(plan, loss, evaluate, weight=weight)


class _Trainable(torch.nn.Module):
    """The trainable parameters of ``model``, shared (not copied), as one module: what a
    checkpoint saves and loads, so it holds the adapters and not the frozen base weights."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        for name, p in model.named_parameters():
            if p.requires_grad:
                self.register_parameter(name.replace(".", "/"), p)


def train_sft(
    config: SFTConfig,
    records: Sequence[VQARecord],
    images: ImageSource = None,
    ranks: Sequence[str] | None = None,
    val_records: Sequence[VQARecord] | None = None,
    resume: bool = False,
    progress: Callable[[StepLog], None] | None = None,
) -> TrainResult[LMM]:
    """Fine-tune ``config.model`` with LoRA to answer the questions of ``records``.

    Args:
        records: question sets (:func:`~taxonlens.data.vqa_build.build_vqa`,
            :func:`~taxonlens.data.read_vqa_benchmark`); their order is part of the run.
        images: a function ``record -> PIL image``, a folder the image paths are relative to,
            or ``None`` (paths as written).
        ranks: rank names of the questions (default ``level1``, ``level2``, ...; pass the
            taxonomy's ranks to ask "at the genus level").
        val_records: evaluated in ``score`` mode (:func:`evaluate_sft`, unless
            ``config.score_validation`` is off) and by their loss
            (:func:`examples_loss`, ``val["loss"]``, what ``config.patience`` stops on) every
            ``config.eval_every`` epochs and after the last; their images come from ``images`` too.
        resume: continue from ``out/checkpoint.pt`` if it exists (same settings, data and base
            model required); without it, an existing checkpoint is an error.
        progress: called with a :class:`~taxonlens.train.loop.StepLog` after every optimizer step.

    Raises:
        CheckpointError: a checkpoint exists and ``resume`` is off, or it belongs to another run.
        DataError: malformed records, no question, unreadable images.
    """
    records, val = list(records), list(val_records or [])
    ranks = default_ranks(records + val, ranks)
    check_records(records, ranks)
    if val:
        check_records(val, ranks, "validation")
    load = image_loader(images)

    def prepare(lmm: LMM) -> EpochTask:
        examples = build_examples(lmm, records, ranks, config.answer, config.organism, config.system_prompt)
        evaluate = None
        if val:
            val_examples = build_examples(lmm, val, ranks, config.answer, config.organism, config.system_prompt)

            def evaluate() -> dict[str, Any]:
                scores = evaluate_sft(lmm, val, load, ranks, config.answer, config.system, config.organism,
                                      config.eval_batch_size) if config.score_validation else {}
                return {**scores,
                        "loss": examples_loss(lmm, val_examples, lambda i: load(val[i]), config.eval_batch_size)}
        return examples_task(lmm, examples, lambda i: load(records[i]),
                             lambda epoch: epoch_examples(examples, config.questions_per_record, config.seed, epoch),
                             evaluate)

    return tune_lmm(config, prepare, data_fingerprint(records, ranks), resume, progress)


def tune_lmm(config: TuneConfig, prepare: Callable[[LMM], EpochTask], data_id: str, resume: bool = False,
             progress: Callable[[StepLog], None] | None = None, full: bool = False) -> TrainResult[LMM]:
    """The epoch loop (:func:`~taxonlens.train.loop.train_epochs`) of a multimodal LLM.

    Loads ``config.model`` onto the run's device, seeds every generator with ``config.seed``,
    turns on gradient checkpointing when asked (:func:`enable_gradient_checkpointing`), adds LoRA adapters (or, with ``full``, trains every weight), asks ``prepare(lmm)`` for the
    :class:`~taxonlens.train.loop.EpochTask`, and trains it with AdamW (the task's module without
    weight decay), a linear warmup, a cosine decay and gradient clipping at
    ``config.max_grad_norm``, every item of an epoch's plan in batches of ``config.batch_size``.
    The checkpoint holds the trained weights and the task's module, not the frozen base weights;
    ``out/model`` gets the result as a plain model (adapters merged).

    Args:
        data_id: a fingerprint of the training data; resuming with other data is refused.

    Raises:
        CheckpointError: a checkpoint exists and ``resume`` is off, or it belongs to another run
            (other settings, data or base weights).
    """
    def build(place: Placement) -> LoopRun[LMM]:
        lmm = load_lmm(config.model, seed=config.seed, device=place.device)
        base_id = lmm.fingerprint()
        seed_everything(config.seed)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(lmm.model)
        if full:
            lmm.model.requires_grad_(True)
        else:
            lmm.add_lora(config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets)
        model = lmm.model
        task = prepare(lmm)
        trainable = _Trainable(model)
        groups: list[dict[str, Any]] = [{"params": list(trainable.parameters())}]
        if task.module is not None:
            trainable.add_module("task", task.module)
            groups.append({"params": list(task.module.parameters()), "weight_decay": 0.0})
        optimizer = adamw(groups, lr=config.lr, weight_decay=config.weight_decay)

        def save(write: bool) -> tuple[LMM, Path]:
            if not full:
                lmm.model = model.merge_and_unload()
            if config.gradient_checkpointing:
                lmm.model.activation_checkpointing_disable()
            model_dir = Path(config.out) / MODEL_DIR
            return lmm, lmm.save(model_dir) if write else model_dir

        identities = {"data": (data_id, "resume with the same training data in the same order"),
                      "base model": (base_id, f"{config.model} has other weights now; resume on the same weights")}
        return LoopRun(model, optimizer, task, identities, save, trainable, config.max_grad_norm)

    return train_epochs(config, build, resume, progress, config.deepspeed)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute ``model``'s activations in the backward pass: transformers' gradient
    checkpointing (``activation_checkpointing_enable``, the name transformers 5 gives
    ``gradient_checkpointing_enable``), non-reentrant, so frozen inputs need no gradient; in
    training mode only, where transformers also skips the KV cache."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def load_sft_checkpoint(path: str | Path) -> LMM:
    """The LoRA model (adapters not merged, eval mode) of an SFT checkpoint: the base model its
    configuration names, with the adapters it holds. ``path`` is the checkpoint or its run folder.

    Raises:
        CheckpointError: no readable checkpoint, or one whose base model has changed since.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    saved = load_checkpoint(path, restore_rng=False)
    try:
        config = SFTConfig(**saved.config)
    except TypeError as e:
        raise CheckpointError(f"{path} was not written by train_sft ({e})") from None
    with torch.random.fork_rng(devices=[]):  # preset weights and LoRA initialisation draw from torch's RNG
        lmm = load_lmm(config.model, seed=config.seed)
        if saved.extra.get("base model") != lmm.fingerprint():
            raise CheckpointError(f"{path} adapts another base model than {config.model} is now "
                                  f"({saved.extra.get('base model')} vs {lmm.fingerprint()})")
        lmm.add_lora(config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets)
    load_checkpoint(path, _Trainable(lmm.model), restore_rng=False)
    lmm.model.eval()
    return lmm


__all__ = [
    "ANSWERS",
    "SFTConfig",
    "SFTExample",
    "TuneConfig",
    "build_examples",
    "check_records",
    "data_fingerprint",
    "default_ranks",
    "enable_gradient_checkpointing",
    "epoch_examples",
    "evaluate_sft",
    "examples_loss",
    "examples_task",
    "image_loader",
    "load_sft_checkpoint",
    "sft_inputs",
    "sft_loss",
    "train_sft",
    "tune_lmm",
]

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
LoRA initialisation, the shuffle of every epoch (:func:`~taxonlens.train.contrastive.epoch_batches`,
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

The loop is shared: :func:`tune_lmm` trains any :class:`TuneTask` (the items of each epoch
and the loss of a batch of them) under a :class:`TuneConfig` with this frame (LoRA or full
fine-tuning, schedule, checkpoints, exact resume, metrics, merged model). SFT's task is
:func:`examples_task` over the prepared :class:`SFTExample` list; Finedefics' recognition
tuning (:mod:`taxonlens.train.finedefics`) is the same task over its own examples, and its
alignment stage a task with its own loss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from taxonlens.data import VQARecord, load_image
from taxonlens.errors import DataError, ImageError, TaxonlensError
from taxonlens.models.mllm import LMM, check_lora_targets, load_lmm
from taxonlens.recognize.answers import ANSWERS, LETTERS, SYSTEM_PROMPT, answer_options, question_text
from taxonlens.recognize.vqa_answer import answer_records
from taxonlens.train.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    LoopState,
    isolated_run,
    load_checkpoint,
    open_run,
    save_checkpoint,
)
from taxonlens.train.contrastive import cosine_with_warmup, epoch_batches

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"

#: where a record's image comes from: a function of the record, a folder its paths are relative
#: to, or ``None`` (the paths as written)
ImageSource = Callable[[VQARecord], Image.Image] | str | Path | None


# ------------------------------------------------------------------ config
@dataclass
class TuneConfig:
    """Settings every fine-tuning run of a multimodal LLM shares (SFT, Finedefics' stages).

    Attributes:
        model: what :func:`~taxonlens.models.mllm.load_lmm` loads (a tiny preset, a folder,
            a Hugging Face name); float32 weights.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scale numerator (the update is scaled by
            ``alpha / r``) and dropout on the adapters' input.
        lora_targets: ``language``, ``language+head``, ``all-linear``, ``all-linear+head``, or a
            regular expression matching the full names of the linear modules to adapt (see the
            module docstring).
        epochs: passes over the training items.
        batch_size: items per optimizer step (the last batch of an epoch may be smaller).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay of the trained weights.
        warmup: fraction of all steps of linear warmup before the cosine decay to 0.
        max_grad_norm: clip the trained weights' gradient norm to this (0: no clipping).
        seed: fixes preset weights, LoRA initialisation, shuffles, drawn items and dropout.
        out: output folder.
        checkpoint_every: also checkpoint every this many steps (0: at epoch ends only).
        eval_every: with validation data, evaluate every this many epochs and after the
            last one (0: never).
        eval_batch_size: items per scoring call in the evaluation.
        threads: torch CPU threads for the run (``None``: leave as is); 1 gives steady step
            times with tiny models.
    """

    model: str = "tiny-qwen2.5-vl"
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "language"
    epochs: int = 3
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: float = 0.05
    max_grad_norm: float = 1.0
    seed: int = 0
    out: str | Path = "taxonlens-sft"
    checkpoint_every: int = 0
    eval_every: int = 1
    eval_batch_size: int = 16
    threads: int | None = None

    #: fields that do not change the weights a run produces (free to change on resume)
    RESUMABLE_CHANGES = ("out", "checkpoint_every", "eval_every", "eval_batch_size", "threads")

    def __post_init__(self) -> None:
        self.out = str(self.out)
        if not isinstance(self.model, str) or not self.model.strip():
            raise TaxonlensError("model must name a multimodal LLM (a preset, a folder or a Hugging Face name)")
        check_lora_targets(self.lora_targets)
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

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class SFTConfig(TuneConfig):
    """Settings of a supervised fine-tuning run: :class:`TuneConfig` and

    Attributes:
        answer: ``letter`` (the true option's letter, as the reference question asks) or
            ``name`` (the true option's text).
        organism: the word the question uses ("Given the organism in the image, ...").
        system: put :data:`~taxonlens.recognize.answers.SYSTEM_PROMPT` before every question.
        questions_per_record: 0 trains on every level that offers a choice; ``k > 0`` on ``k``
            of them per record and epoch, drawn anew each epoch (fewer steps per epoch on deep
            trees, every level seen over the epochs).
    """

    answer: str = "letter"
    organism: str = "organism"
    system: bool = True
    questions_per_record: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.answer not in ANSWERS:
            raise TaxonlensError(f"unknown answer {self.answer!r}; use letter (the option's letter, as the "
                                 "benchmark asks) or name (the option's text)")
        if self.questions_per_record < 0:
            raise TaxonlensError("questions_per_record must be >= 0")
        check_organism(self.organism)

    @property
    def system_prompt(self) -> str | None:
        return SYSTEM_PROMPT if self.system else None


def check_organism(organism: object) -> None:
    """Refuse an empty ``organism`` word (the questions' "Given the <organism> in the image")."""
    if not isinstance(organism, str) or not organism.strip():
        raise TaxonlensError("organism must be a non-empty word (the question's 'Given the <organism> ...')")

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


def epoch_examples(examples: Sequence[SFTExample], per_record: int, seed: int, epoch: int) -> list[int]:
    """Indices into ``examples`` trained in ``epoch``: all of them (``per_record == 0``), else up to
    ``per_record`` levels of each record, drawn from a stream seeded by ``(seed, epoch, record)``.
    The count is the same in every epoch."""
    if per_record == 0:
        return list(range(len(examples)))
    by_record: dict[int, list[int]] = {}
    for j, ex in enumerate(examples):
        by_record.setdefault(ex.record, []).append(j)
    chosen = []
    for rec, idx in by_record.items():
        rng = random.Random(f"taxonlens-sft:{seed}:{epoch}:{rec}")
        chosen += sorted(rng.sample(idx, min(per_record, len(idx))))
    return chosen


def sft_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch over ``n`` items: :func:`~taxonlens.train.contrastive.epoch_batches`
    (full batches of a permutation seeded by ``(seed, epoch)``) and then the items it leaves
    out, as one last smaller batch: every question is trained in every epoch."""
    batches = epoch_batches(n, batch_size, seed, epoch)
    used = {i for b in batches for i in b}
    tail = [i for i in range(n) if i not in used]
    return batches + [tail] if tail else batches


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


# ---------------------------------------------------------------- training
@dataclass(frozen=True)
class SFTStepLog:
    """What :func:`tune_lmm` (and so :func:`train_sft`) reports after every optimizer step.

    Attributes:
        epoch: the epoch being trained, 1-based.
        step: optimizer steps taken (1-based), of ``total_steps``.
        loss: this step's loss (for SFT: mean cross-entropy per target token).
        lr: the learning rate it used.
        seconds: wall time of the step.
    """

    epoch: int
    step: int
    total_steps: int
    loss: float
    lr: float
    seconds: float


@dataclass
class SFTResult:
    """The outcome of :func:`tune_lmm` (:func:`train_sft`, Finedefics' stages).

    Attributes:
        lmm: the trained model, adapters merged (in memory; also saved under ``model_dir``).
        model_dir: ``out/model``, loadable with ``load_lmm``.
        checkpoint: ``out/checkpoint.pt`` (the trained weights; see :func:`load_sft_checkpoint`).
        metrics: one dict per epoch, as in ``out/metrics.jsonl``.
        steps: optimizer steps taken in all (including before a resume).
    """

    lmm: LMM
    model_dir: Path
    checkpoint: Path
    metrics: list[dict[str, Any]]
    steps: int


@dataclass
class TuneTask:
    """What a trainer hands :func:`tune_lmm` once the model is built (LoRA added): which items
    each epoch trains and the loss of a batch of them.

    Attributes:
        plan: ``epoch -> indices`` of the items trained in that epoch (cut into shuffled batches
            by :func:`sft_batches`); the same count in every epoch.
        loss: ``item indices -> (loss, parts)``: the scalar loss of one batch, and named float
            parts of it, averaged per epoch into the metrics as ``<part>_loss``.
        evaluate: the validation figures of the model as it is (run in eval mode), if any.
        module: trainable parameters besides the model's (temperatures, ...): optimised without
            weight decay and saved in the checkpoint.
        after_step: called after every optimizer step (clamping, ...).
        epoch_figures: extra values for every epoch's metrics row.
        items: what the items are called in the metrics (``questions``, ``images``).
    """

    plan: Callable[[int], list[int]]
    loss: Callable[[list[int]], tuple[torch.Tensor, dict[str, float]]]
    evaluate: Callable[[], dict[str, Any]] | None = None
    module: torch.nn.Module | None = None
    after_step: Callable[[], None] | None = None
    epoch_figures: Callable[[], dict[str, Any]] | None = None
    items: str = "questions"


def examples_task(lmm: LMM, examples: Sequence[SFTExample], image_of: Callable[[int], Image.Image],
                  plan: Callable[[int], list[int]], evaluate: Callable[[], dict[str, Any]] | None = None) -> TuneTask:
    """The task of learning prepared answers: item ``j`` is ``examples[j]`` with the image
    ``image_of(examples[j].record)`` (read once per batch), its loss :func:`sft_loss`."""
    cache: dict[str, list[int]] = {}

    def loss(items: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        group = [examples[j] for j in items]
        loaded = {i: image_of(i) for i in dict.fromkeys(ex.record for ex in group)}
        batch, labels = sft_inputs(lmm, [loaded[ex.record] for ex in group], group, cache)
        device = next(lmm.model.parameters()).device
        return sft_loss(lmm.model, batch.to(device), labels.to(device)), {}

    return TuneTask(plan, loss, evaluate)


class _Trainable(torch.nn.Module):
    """The trainable parameters of ``model``, shared (not copied), as one module: what a
    checkpoint saves and loads, so it holds the adapters and not the frozen base weights."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        for name, p in model.named_parameters():
            if p.requires_grad:
                self.register_parameter(name.replace(".", "/"), p)


def _optimizer(groups: list[dict[str, Any]], config: TuneConfig) -> torch.optim.AdamW:
    try:  # the fused kernel where the device and dtype have one (faster on CPU, see the contrastive trainer)
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def train_sft(
    config: SFTConfig,
    records: Sequence[VQARecord],
    images: ImageSource = None,
    ranks: Sequence[str] | None = None,
    val_records: Sequence[VQARecord] | None = None,
    resume: bool = False,
    progress: Callable[[SFTStepLog], None] | None = None,
) -> SFTResult:
    """Fine-tune ``config.model`` with LoRA to answer the questions of ``records``.

    Args:
        records: question sets (:func:`~taxonlens.data.vqa_build.build_vqa`,
            :func:`~taxonlens.data.read_vqa_benchmark`); their order is part of the run.
        images: a function ``record -> PIL image``, a folder the image paths are relative to,
            or ``None`` (paths as written).
        ranks: rank names of the questions (default ``level1``, ``level2``, ...; pass the
            taxonomy's ranks to ask "at the genus level").
        val_records: evaluated in ``score`` mode (:func:`evaluate_sft`) every
            ``config.eval_every`` epochs and after the last; their images come from ``images`` too.
        resume: continue from ``out/checkpoint.pt`` if it exists (same settings, data and base
            model required); without it, an existing checkpoint is an error.
        progress: called with an :class:`SFTStepLog` after every optimizer step.

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

    def prepare(lmm: LMM) -> TuneTask:
        examples = build_examples(lmm, records, ranks, config.answer, config.organism, config.system_prompt)
        evaluate = None
        if val:
            def evaluate() -> dict[str, Any]:
                return evaluate_sft(lmm, val, load, ranks, config.answer, config.system, config.organism,
                                    config.eval_batch_size)
        return examples_task(lmm, examples, lambda i: load(records[i]),
                             lambda epoch: epoch_examples(examples, config.questions_per_record, config.seed, epoch),
                             evaluate)

    return tune_lmm(config, prepare, data_fingerprint(records, ranks), resume, progress)


def tune_lmm(config: TuneConfig, prepare: Callable[[LMM], TuneTask], data_id: str, resume: bool = False,
             progress: Callable[[SFTStepLog], None] | None = None, full: bool = False) -> SFTResult:
    """The training loop every fine-tuning of a multimodal LLM shares.

    Loads ``config.model``, seeds every generator with ``config.seed``, adds LoRA adapters
    (or, with ``full``, trains every weight), asks ``prepare(lmm)`` for the :class:`TuneTask`,
    and trains it with AdamW, a linear warmup and a cosine decay, ``config.epochs`` times over
    the plan of each epoch in batches of ``config.batch_size``. ``out/checkpoint.pt`` (the
    trained weights, the task's module, optimizer, scheduler, loop state, random states) is
    written at every epoch end and every ``config.checkpoint_every`` steps; a killed run resumed
    with ``resume`` ends with the same weights. ``out/metrics.jsonl`` gets one row per epoch, and
    ``out/model`` the result as a plain model (adapters merged).

    Args:
        data_id: a fingerprint of the training data; resuming with other data is refused.

    Raises:
        CheckpointError: a checkpoint exists and ``resume`` is off, or it belongs to another run
            (other settings, data or base weights).
    """
    out = Path(config.out)
    with isolated_run(out, resume, config.threads) as ckpt_path:
        return _run(config, prepare, data_id, out, ckpt_path, resume, progress, full)


def _run(config: TuneConfig, prepare: Callable[[LMM], TuneTask], data_id: str, out: Path, ckpt_path: Path,
         resume: bool, progress: Callable[[SFTStepLog], None] | None, full: bool) -> SFTResult:
    lmm = load_lmm(config.model, seed=config.seed)
    base_id = lmm.fingerprint()
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
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
    params = [p for g in groups for p in g["params"]]
    n_epoch = len(task.plan(0))
    total_steps = len(sft_batches(n_epoch, config.batch_size, config.seed, 0)) * config.epochs
    optimizer = _optimizer(groups, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(total_steps, round(config.warmup * total_steps)))
    run_config = config.to_dict()

    state, sums, seconds = LoopState(), {"loss": 0.0}, 0.0
    ckpt, metrics = open_run(out, run_config, resume, trainable, optimizer, scheduler, type(config).RESUMABLE_CHANGES, {
        "data": (data_id, "resume with the same training data in the same order"),
        "base model": (base_id, f"{config.model} has other weights now; resume on the same weights")})
    if ckpt is not None:
        sums = dict(ckpt.extra.get("sums") or {"loss": float(ckpt.extra["loss_sum"])})  # or an older SFT checkpoint's
        state, seconds = ckpt.state, float(ckpt.extra["seconds"])
        log.info("resuming %s at epoch %d, step %d", ckpt_path, state.epoch, state.step)
    metrics_path = out / METRICS_FILE

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, trainable, optimizer, scheduler, state, run_config,
                        {"data": data_id, "base model": base_id, "sums": sums, "seconds": seconds})

    lr = optimizer.param_groups[0]["lr"]
    model.train()
    while state.epoch < config.epochs:
        chosen = task.plan(state.epoch)
        batches = sft_batches(len(chosen), config.batch_size, config.seed, state.epoch)
        n_batches = len(batches)
        tick = time.perf_counter()
        for batch_idx in batches[state.batch:]:
            step_start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            loss, parts = task.loss([chosen[j] for j in batch_idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if task.after_step is not None:
                task.after_step()
            state.step, state.batch = state.step + 1, state.batch + 1
            loss_value = float(loss.detach())
            for name, value in {"loss": loss_value, **parts}.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            if progress is not None:
                progress(SFTStepLog(state.epoch + 1, state.step, total_steps, loss_value, lr,
                                    time.perf_counter() - step_start))
            if config.checkpoint_every and state.step % config.checkpoint_every == 0 and state.batch < n_batches:
                seconds += time.perf_counter() - tick
                tick = time.perf_counter()
                checkpoint()
        seconds += time.perf_counter() - tick
        row: dict[str, Any] = {"epoch": state.epoch + 1, "step": state.step, "train_loss": sums["loss"] / n_batches}
        row |= {f"{name}_loss": value / n_batches for name, value in sums.items() if name != "loss"}
        row |= {"lr": lr, task.items: len(chosen), "seconds_per_step": seconds / n_batches,
                f"{task.items}_per_s": len(chosen) / max(seconds, 1e-9), "train_seconds": seconds}
        if task.epoch_figures is not None:
            row |= task.epoch_figures()
        last = state.epoch + 1 == config.epochs
        if task.evaluate is not None and config.eval_every and ((state.epoch + 1) % config.eval_every == 0 or last):
            tick = time.perf_counter()
            model.eval()
            row["val"] = task.evaluate()
            model.train()
            row["eval_seconds"] = time.perf_counter() - tick
            log.info("epoch %d: loss %.4f, validation %s", state.epoch + 1, row["train_loss"], json.dumps(row["val"]))
        metrics.append(row)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        state.epoch, state.batch, sums, seconds = state.epoch + 1, 0, {"loss": 0.0}, 0.0
        checkpoint()
    model.eval()
    if not full:
        lmm.model = model.merge_and_unload()
    model_dir = lmm.save(out / MODEL_DIR)
    return SFTResult(lmm, model_dir, ckpt_path, metrics, state.step)


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
    "SFTResult",
    "SFTStepLog",
    "TuneConfig",
    "TuneTask",
    "build_examples",
    "check_organism",
    "check_records",
    "data_fingerprint",
    "default_ranks",
    "epoch_examples",
    "evaluate_sft",
    "examples_task",
    "image_loader",
    "load_sft_checkpoint",
    "sft_batches",
    "sft_inputs",
    "sft_loss",
    "train_sft",
    "tune_lmm",
]

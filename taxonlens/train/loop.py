"""The resumable epoch loop of contrastive training, SFT and both Finedefics stages.

A trainer describes its run as a :class:`LoopRun` (the model, its optimizer, the checkpointed
module, what a resume must share with its checkpoint, how the result is saved) around an
:class:`EpochTask` (the items of each epoch, the loss of a batch of them, the validation);
:func:`train_epochs` does the rest:

- every epoch's items are cut into batches of ``batch_size`` by :func:`epoch_batches` (a
  permutation seeded by ``(seed, epoch)``; the last incomplete batch dropped or kept);
- AdamW (the trainer's) under a linear warmup and a cosine decay to 0
  (:func:`cosine_with_warmup`), with optional gradient clipping;
- ``out/checkpoint.pt`` (the checkpointed module, optimizer, scheduler, loop state, random
  states, running sums) at every epoch end and every ``checkpoint_every`` steps: a run killed at
  any point and resumed ends with the same weights as one never stopped; resuming under other
  settings, data or base weights is refused;
- ``out/metrics.jsonl``: one row per epoch (train loss and its parts, learning rate, speed, the
  task's figures and, every ``eval_every`` epochs and after the last, the validation figures);
- ``out/config.json``, and the trained model saved by the trainer (``out/model``);
- the run's :class:`~taxonlens.train.parallel.Placement`: the model and the batches on
  ``config.device``, the forward passes under the autocast of ``config.precision`` (fp16 with
  loss scaling), and under ``accelerate launch`` N data-parallel processes sharing every step's
  global batch of ``batch_size`` items; the main process alone writes the run's files and
  evaluates, every process resumes from the same checkpoint;
- with DeepSpeed (``deepspeed``: CUDA GPUs), the steps run through accelerate's DeepSpeed engine
  (:func:`~taxonlens.train.parallel.deepspeed_accelerator`), which averages the gradients over the
  processes, clips them, scales fp16 losses and steps the optimizer and the schedule; such a run
  writes no checkpoint (DeepSpeed shards the optimizer state over the processes), so it cannot be
  resumed, and under ZeRO-3 (the weights sharded too) it evaluates nothing during training.

GRPO (:mod:`taxonlens.train.grpo`) runs trl's loop instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from taxonlens.errors import TaxonlensError
from taxonlens.train.checkpoint import LoopState, isolated_run, open_run, save_checkpoint
from taxonlens.train.config import LoopConfig
from taxonlens.train.parallel import Placement, deepspeed_accelerator, placement

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"

M = TypeVar("M")


# ------------------------------------------------------------ shared pieces
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's (legacy global) and torch's random generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, drop_last: bool = True) -> list[list[int]]:
    """The batches of item indices ``0 .. n-1`` of one epoch: a permutation seeded by ``(seed, epoch)``
    cut into full batches (one batch of all items when ``n < batch_size``). Without ``drop_last``,
    the items the full batches leave out follow as one last smaller batch, in ascending order:
    every item is trained in every epoch."""
    g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"shuffle:{seed}:{epoch}".encode()).digest()[:7]))
    order = torch.randperm(n, generator=g).tolist()
    if n < batch_size:
        return [order]
    full = len(order) // batch_size * batch_size
    batches = [order[i : i + batch_size] for i in range(0, full, batch_size)]
    tail = sorted(order[full:])
    return batches + [tail] if tail and not drop_last else batches


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor of step ``s``: ``(s + 1) / warmup_steps`` during the warmup, then
    a cosine from 1 to 0 over the remaining steps (open_clip's ``cosine_lr``)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return factor


def adamw(groups: list[dict[str, Any]], **settings: Any) -> torch.optim.AdamW:
    """AdamW over parameter ``groups`` with ``settings`` (lr, betas, weight_decay, ...), with the
    fused kernel where the device and dtype have one (about 4x faster on CPU, measured on tiny-clip)."""
    try:
        return torch.optim.AdamW(groups, **settings, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not support
        return torch.optim.AdamW(groups, **settings)


# -------------------------------------------------------------------- types
@dataclass(frozen=True)
class StepLog:
    """What a trainer reports after every optimizer step.

    Attributes:
        epoch: the epoch being trained, 1-based.
        step: optimizer steps taken (1-based), of ``total_steps``.
        loss: this step's loss.
        lr: the learning rate it used.
        seconds: wall time of the step.
        figures: the trainer's other figures (contrastive: ``logit_scale``; Finedefics Stage I:
            ``temperature``; GRPO: trl's logged values, ``reward``, ``kl``, ...).
    """

    epoch: int
    step: int
    total_steps: int
    loss: float
    lr: float
    seconds: float
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult(Generic[M]):
    """The outcome of a trainer.

    Attributes:
        model: the trained model (an :class:`~taxonlens.models.encoders.OpenCLIPEncoder` or, adapters
            merged, an :class:`~taxonlens.models.mllm.LMM`), in memory; also saved under ``model_dir``.
        model_dir: ``out/model``, loadable with ``load_encoder`` / ``load_lmm``.
        checkpoint: ``out/checkpoint.pt`` (GRPO: the newest ``out/checkpoint-<step>`` folder; ``None``
            if none was written).
        metrics: the rows of ``out/metrics.jsonl`` (one per epoch; GRPO: one per logged step).
        steps: optimizer steps taken in all (including before a resume).
        seconds: wall time of this call's training (not counting what ran before a resume).
    """

    model: M
    model_dir: Path
    checkpoint: Path | None
    metrics: list[dict[str, Any]]
    steps: int
    seconds: float


@dataclass
class EpochTask:
    """What is learned: the items of each epoch and the loss of a batch of them.

    Attributes:
        plan: ``epoch -> items`` trained in that epoch (indices of the trainer's data; the same
            count in every epoch), cut into shuffled batches by :func:`epoch_batches`.
        loss: ``batch -> (loss, parts)``: the scalar loss of one batch, and named float parts of it,
            averaged per epoch into the metrics as ``<part>_loss``. A batch is a list of items, or
            what ``load`` makes of it.
        evaluate: the validation figures of the model as it is (run in eval mode), if any.
        module: trainable parameters besides the model's (temperatures, ...), for trainers that
            build the optimizer from the task (:func:`~taxonlens.train.sft.tune_lmm`: no weight
            decay, saved in the checkpoint).
        after_step: called after every optimizer step (clamping, ...).
        figures: extra values for the step logs and every epoch's metrics row.
        items: what the items are called in the metrics (``questions``, ``images``).
        load: ``(epoch, batches of items) -> iterable of batches`` as ``loss`` takes them (a
            DataLoader, ...); ``None``: the lists of items themselves.
        drop_last: drop the last incomplete batch of every epoch (else it is trained).
        weight: ``items -> their weight`` in the batch's loss, which is the weighted mean over the
            items (default: one per item); with several processes each process's share of a step
            counts by its weight (:meth:`~taxonlens.train.parallel.Placement.share_factor`). ``None``:
            the loss is the whole step's batch on every process (the task gathers the shares with
            :meth:`~taxonlens.train.parallel.Placement.gather`; the batch must split evenly).
    """

    plan: Callable[[int], Sequence[int]]
    loss: Callable[[Any], tuple[torch.Tensor, dict[str, float]]]
    evaluate: Callable[[], dict[str, Any]] | None = None
    module: torch.nn.Module | None = None
    after_step: Callable[[], None] | None = None
    figures: Callable[[], dict[str, Any]] | None = None
    items: str = "questions"
    load: Callable[[int, list[list[int]]], Iterable[Any]] | None = None
    drop_last: bool = False
    weight: Callable[[list[int]], float] | None = len


@dataclass
class LoopRun(Generic[M]):
    """A run of :func:`train_epochs`, as its trainer builds it.

    Attributes:
        model: the trained model (put in train mode for the loop, eval mode after).
        optimizer: over the trained parameters; the loop adds the schedule.
        task: what is learned.
        identities: name -> ``(what it is now, how to fix a mismatch)`` of what a resumed run must
            share with its checkpoint (``data``, ``base model`` fingerprints).
        save: after the last epoch: ``save(write)`` returns the result and its folder, and saves it
            there when ``write`` (the main process).
        checkpointed: the module whose state the checkpoint holds (default: ``model``).
        max_grad_norm: clip the gradient norm of the optimizer's parameters to this (0: no clipping).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    task: EpochTask
    identities: Mapping[str, tuple[str, str]]
    save: Callable[[bool], tuple[M, Path]]
    checkpointed: torch.nn.Module | None = None
    max_grad_norm: float = 0.0


# --------------------------------------------------------------------- loop
def train_epochs(config: LoopConfig, build: Callable[[Placement], LoopRun[M]], resume: bool = False,
                 progress: Callable[[StepLog], None] | None = None, deepspeed: str | None = None) -> TrainResult[M]:
    """Run the epoch loop in ``config.out``: ``build(placement)`` (called inside the run's frame:
    torch on ``config.threads`` threads, the caller's random states given back after) loads the
    model onto ``placement.device`` and seeds the generators; the loop then trains
    ``config.epochs`` epochs of its task. Under ``accelerate launch`` every process runs this.

    Args:
        resume: continue from ``out/checkpoint.pt`` if it exists (same settings and identities
            required); without it, an existing checkpoint is an error.
        progress: called with a :class:`StepLog` after every optimizer step (by every process,
            with the loss of the whole step).
        deepspeed: train through DeepSpeed with this configuration (``zero2``, ``zero3`` or a
            JSON file; see the module docstring).

    Raises:
        CheckpointError: a checkpoint exists and ``resume`` is off, or it belongs to another run.
        TaxonlensError: a device that is not here; a task whose batches must split evenly over
            the processes and do not; DeepSpeed not installed, off CUDA GPUs, asked to resume or
            to checkpoint, or under ZeRO-3 with a validation. All but the last before ``build``.
    """
    out = Path(config.out)
    place = placement(config.device, config.precision, deepspeed)
    if place.deepspeed is not None and (resume or config.checkpoint_every):
        raise TaxonlensError(f"--deepspeed {deepspeed}: SFT and Finedefics under DeepSpeed write no checkpoint "
                             "(DeepSpeed shards the optimizer state over the processes); train without resume and "
                             "checkpoint_every")
    with isolated_run(out, resume, config.threads) as ckpt_path:
        run = build(place)
        accelerator = None
        if place.deepspeed is not None:
            accelerator = deepspeed_accelerator(place, config.batch_size, run.max_grad_norm)
            if _zero3(accelerator) and run.task.evaluate is not None and config.eval_every:
                raise TaxonlensError(f"--deepspeed {deepspeed}: ZeRO-3 shards the weights over the processes, so "
                                     "the main process alone cannot evaluate; set eval_every 0 or use zero2")
        tick = time.perf_counter()
        metrics, steps = _epochs(config, run, place, out, ckpt_path, resume, progress, accelerator)
        seconds = time.perf_counter() - tick
        run.model.eval()
        with _whole_weights(accelerator, run.model):
            model, model_dir = run.save(place.main)
        place.barrier()
        return TrainResult(model, model_dir, None if accelerator else ckpt_path, metrics, steps, seconds)


def _zero3(accelerator: Any) -> bool:
    """Whether ``accelerator`` (``None``: no DeepSpeed) shards the weights (ZeRO stage 3)."""
    return accelerator is not None and accelerator.state.deepspeed_plugin.zero_stage == 3


def _whole_weights(accelerator: Any, model: torch.nn.Module) -> AbstractContextManager:
    """The context in which every weight of ``model`` is whole on every process: under ZeRO-3
    DeepSpeed's gather of them (changes made on the main process are kept), else nothing to do."""
    if not _zero3(accelerator):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=0)


def _epochs(config: LoopConfig, run: LoopRun, place: Placement, out: Path, ckpt_path: Path, resume: bool,
            progress: Callable[[StepLog], None] | None, accelerator: Any = None) -> tuple[list[dict[str, Any]], int]:
    task, optimizer, model = run.task, run.optimizer, run.model
    checkpointed = run.checkpointed if run.checkpointed is not None else model
    total_steps = len(epoch_batches(len(task.plan(0)), config.batch_size, config.seed, 0, task.drop_last)) * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(total_steps, round(config.warmup * total_steps)))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    run_config = asdict(config) | {"precision": place.precision}  # resolved: "auto" on a CPU resumes an "fp32" run
    identities = {name: now for name, (now, _) in run.identities.items()}

    # fp16 losses are scaled here, or by DeepSpeed's engine
    scaler = torch.amp.GradScaler(place.device.type, enabled=place.precision == "fp16" and accelerator is None)

    if config.patience and (task.evaluate is None or not config.eval_every):
        raise TaxonlensError("early stopping (patience) needs validation data evaluated (eval_every >= 1)")
    state, sums, seconds = LoopState(), {"loss": 0.0}, 0.0
    stopping = EarlyStopping(config.patience)
    ckpt, metrics = open_run(out, run_config, resume, checkpointed, optimizer, scheduler,
                             type(config).RESUMABLE_CHANGES, run.identities, writer=place.main)
    if ckpt is not None:  # ``loss_sum``: a checkpoint written before the loop was shared
        sums = dict(ckpt.extra.get("sums") or {"loss": float(ckpt.extra["loss_sum"])})
        state, seconds = ckpt.state, float(ckpt.extra["seconds"])
        stopping = EarlyStopping(**{**ckpt.extra.get("stopping", {}), "patience": config.patience})
        if scaler.is_enabled() and "scaler" in ckpt.extra:
            scaler.load_state_dict(ckpt.extra["scaler"])
        log.info("resuming %s at epoch %d, step %d", ckpt_path, state.epoch, state.step)
    if accelerator is not None:  # the engine: DeepSpeed's optimizer and schedule, stepped by its backward
        _, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    def checkpoint() -> None:
        if accelerator is not None:  # DeepSpeed runs write no checkpoint (see train_epochs)
            return
        if place.main:
            scaled = {"scaler": scaler.state_dict()} if scaler.is_enabled() else {}
            save_checkpoint(ckpt_path, checkpointed, optimizer, scheduler, state, run_config,
                            {**identities, "sums": sums, "seconds": seconds, **scaled,
                             **({"stopping": asdict(stopping)} if config.patience else {})})
        place.barrier()

    lr = optimizer.param_groups[0]["lr"]
    model.train()
    while state.epoch < config.epochs and not stopping.stopped:
        chosen = task.plan(state.epoch)
        batches = [[chosen[j] for j in b]
                   for b in epoch_batches(len(chosen), config.batch_size, config.seed, state.epoch, task.drop_last)]
        shares = [place.share(b) for b in batches[state.batch:]]
        if task.weight is None and any(len(b) % place.world for b in batches):
            raise TaxonlensError(f"{place.world} processes cannot split batches of {sorted({len(b) for b in batches})} "
                                 "items evenly; choose a batch size divisible by the number of processes")
        todo = [items for items, _ in shares]
        inputs = task.load(state.epoch, todo) if task.load is not None else todo
        tick = time.perf_counter()
        for batch, (items, counts) in zip(inputs, shares):
            step_start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            with place.autocast():
                loss, parts = task.loss(batch)
            if place.world > 1 and task.weight is not None:  # this process's part of the step's mean
                factor = place.share_factor(task.weight(items) if counts else 0.0)
                loss, parts = loss * factor, {name: float(value) * factor for name, value in parts.items()}
            if accelerator is not None:  # backward, averaging, clipping, optimizer and schedule steps
                accelerator.backward(loss)
            else:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                place.average_gradients(params)
                if run.max_grad_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, run.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
            if task.after_step is not None:
                task.after_step()
            state.step, state.batch = state.step + 1, state.batch + 1
            loss_value = float(loss.detach())
            if place.world > 1:  # the step's loss and parts: the mean of the processes' parts
                values = place.mean([loss_value, *parts.values()])
                loss_value, parts = values[0], dict(zip(parts, values[1:]))
            for name, value in {"loss": loss_value, **parts}.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            if progress is not None:
                progress(StepLog(state.epoch + 1, state.step, total_steps, loss_value, lr,
                                 time.perf_counter() - step_start, task.figures() if task.figures else {}))
            if config.checkpoint_every and state.step % config.checkpoint_every == 0 and state.batch < len(batches):
                seconds += time.perf_counter() - tick
                tick = time.perf_counter()
                checkpoint()
        seconds += time.perf_counter() - tick
        trained = sum(map(len, batches))
        row: dict[str, Any] = {"epoch": state.epoch + 1, "step": state.step, "train_loss": sums["loss"] / len(batches)}
        row |= {f"{name}_loss": value / len(batches) for name, value in sums.items() if name != "loss"}
        row |= {"lr": lr, task.items: trained, "seconds_per_step": seconds / len(batches),
                f"{task.items}_per_s": trained / max(seconds, 1e-9), "train_seconds": seconds}
        if task.figures is not None:
            row |= task.figures()
        last = state.epoch + 1 == config.epochs
        if place.main and task.evaluate is not None and config.eval_every and ((state.epoch + 1) % config.eval_every == 0 or last):
            tick = time.perf_counter()
            model.eval()
            row["val"] = task.evaluate()
            model.train()
            row["eval_seconds"] = time.perf_counter() - tick
            log.info("epoch %d: loss %.4f, validation %s", state.epoch + 1, row["train_loss"], json.dumps(row["val"]))
        if config.patience:  # the main process's validation decides for every process
            evaluated = "val" in row
            loss_seen = place.mean([float(row["val"]["loss"]) if evaluated else 0.0, float(evaluated)])
            if loss_seen[1] > 0:
                stopping.update(loss_seen[0] * place.world, state.epoch + 1, checkpointed)
                row["best_epoch"] = stopping.best_epoch
        metrics.append(row)
        if place.main:
            with open(out / METRICS_FILE, "a") as f:
                f.write(json.dumps(row) + "\n")
        state.epoch, state.batch, sums, seconds = state.epoch + 1, 0, {"loss": 0.0}, 0.0
        checkpoint()
    if stopping.best_state is not None:
        checkpointed.load_state_dict(stopping.best_state)
    return metrics, state.step


@dataclass
class EarlyStopping:
    """Early stopping on the validation loss (``val["loss"]`` of the task's evaluation): the
    lowest loss seen, its epoch and a copy of the checkpointed module's state then; ``stopped``
    once ``patience`` evaluations in a row brought no lower loss (``patience`` 0: never). It is
    saved in the checkpoint, so a resumed run stops, and keeps, as one never interrupted."""

    patience: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    waited: int = 0
    stopped: bool = False

    def update(self, loss: float, epoch: int, module: torch.nn.Module) -> None:
        """Take the validation ``loss`` after ``epoch`` (1-based) of ``module``."""
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.waited = loss, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            self.waited += 1
            self.stopped = self.waited >= self.patience


__all__ = [
    "METRICS_FILE",
    "MODEL_DIR",
    "EarlyStopping",
    "EpochTask",
    "LoopRun",
    "StepLog",
    "TrainResult",
    "adamw",
    "cosine_with_warmup",
    "epoch_batches",
    "seed_everything",
    "train_epochs",
]

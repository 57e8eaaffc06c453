"""The settings every trainer shares, each field declared once with its help text.

A trainer's configuration is a dataclass built from these pieces:

- :class:`TrainConfig`: every trainer (output folder, seed, epochs, AdamW and its schedule,
  checkpoints, threads, device and precision);
- :class:`LoopConfig`: the trainers run by the epoch loop (:mod:`taxonlens.train.loop`): batch
  size and validation;
- :class:`LMMConfig`: the fine-tuning of a multimodal LLM (model, LoRA, gradient clipping,
  gradient checkpointing, DeepSpeed, the questions' organism word);
- :class:`QuestionConfig`: how a benchmark question is asked and answered (SFT, GRPO).

Every field carries ``metadata={"help": ...}``; a trainer whose defaults differ from the shared
ones says so with :func:`with_defaults`, which keeps the field's type, place and help. The
class attribute ``RESUMABLE_CHANGES`` names the fields that do not change the weights a run
produces, so a resumed run may change them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from taxonlens.errors import TaxonlensError
from taxonlens.models.device import Device, Precision
from taxonlens.models.mllm import check_lora_targets
from taxonlens.recognize.answers import SYSTEM_PROMPT, AnswerFormat
from taxonlens.train.zero import deepspeed_config

C = TypeVar("C", bound=type)


def with_defaults(**defaults: Any) -> Callable[[C], C]:
    """Class decorator, placed under ``@dataclass``: the inherited fields named get new defaults
    (their type, position and help stay the base's).

    Raises:
        TypeError: a name that is no inherited field.
    """
    def apply(cls: C) -> C:
        inherited = {}
        for base in reversed(cls.__mro__[1:]):
            if is_dataclass(base):
                inherited |= {f.name: f for f in fields(base)}
        annotations = dict(inspect.get_annotations(cls))
        for name, value in defaults.items():
            if name not in inherited:
                raise TypeError(f"{cls.__name__} inherits no field {name!r}")
            annotations[name] = inherited[name].type
            setattr(cls, name, field(default=value, metadata=inherited[name].metadata))
        cls.__annotations__ = annotations
        return cls

    return apply


@dataclass
class TrainConfig:
    """Settings every trainer shares (the root of the ``__post_init__`` chain: every config class
    validates its own fields and calls ``super().__post_init__()``)."""

    out: str | Path = field(default="taxonlens-run", metadata={
        "help": "output folder of the run: config.json, metrics.jsonl, the checkpoint and model/ (the trained model)"})
    seed: int = field(default=0, metadata={
        "help": "random seed: fixes everything random in a run (random initial weights, adapter initialisation, "
                "shuffles, drawn items, augmentation, dropout, sampling)"})
    epochs: int = field(default=3, metadata={"help": "passes over the training data"})
    lr: float = field(default=2e-4, metadata={
        "help": "peak learning rate of AdamW, reached after the warmup and then decayed to 0"})
    weight_decay: float = field(default=0.0, metadata={
        "help": "AdamW weight decay of the trained weights (contrastive training exempts gains, biases and the "
                "temperature, as open_clip does)"})
    warmup: float = field(default=0.05, metadata={
        "help": "fraction of all optimizer steps over which the learning rate rises linearly from 0, in [0, 1)"})
    checkpoint_every: int = field(default=0, metadata={
        "help": "also write a checkpoint every this many optimizer steps (0: at the end of every epoch only)"})
    threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads for the run (None: leave as set; 1 gives steady step times with tiny models)"})
    device: str = field(default="auto", metadata={
        "help": "where the model trains: auto (a CUDA GPU, then Apple's MPS, else the CPU), cpu, cuda or mps; "
                "under accelerate launch / --num-processes every process takes its own GPU"})
    precision: str = field(default="auto", metadata={
        "help": "autocast of the forward passes (weights and optimizer stay fp32): fp32, bf16, fp16 (with loss "
                "scaling) or auto (bf16 on GPUs that support it, fp16 on older ones, fp32 on the CPU and MPS)"})

    #: fields that do not change the weights a run produces (free to change on resume; the thread
    #: count and the device change only the rounding)
    RESUMABLE_CHANGES = ("out", "threads", "device")

    def __post_init__(self) -> None:
        self.out = str(self.out)
        Device(str(self.device).partition(":")[0])  # ChoiceError: unknown device ...
        Precision(self.precision)


@dataclass
class LoopConfig(TrainConfig):
    """Settings of a run of the epoch loop (:func:`taxonlens.train.loop.train_epochs`)."""

    batch_size: int = field(default=8, metadata={
        "help": "training items per optimizer step"})
    eval_every: int = field(default=1, metadata={
        "help": "with validation data, evaluate every this many epochs and after the last one (0: never)"})
    patience: int = field(default=0, metadata={
        "help": "early stopping: stop after this many evaluations without a lower validation loss and keep the "
                "weights of the best one (0: train every epoch; needs a validation loss)"})

    RESUMABLE_CHANGES = (*TrainConfig.RESUMABLE_CHANGES, "checkpoint_every", "eval_every")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patience < 0:
            raise TaxonlensError(f"patience must be >= 0, got {self.patience}")


def check_organism(organism: object) -> None:
    """Refuse an empty ``organism`` word (the questions' "Given the <organism> in the image")."""
    if not isinstance(organism, str) or not organism.strip():
        raise TaxonlensError("organism must be a non-empty word (the question's 'Given the <organism> ...')")


@dataclass
class LMMConfig(TrainConfig):
    """Settings of every fine-tuning of a multimodal LLM."""

    model: str = field(default="tiny-qwen2.5-vl", metadata={
        "help": "the multimodal LLM trained: a tiny preset, a folder (e.g. an earlier run's out/model) or a "
                "Hugging Face name; float32 weights"})
    lora_r: int = field(default=8, metadata={
        "help": "rank of the LoRA adapters (GRPO: 0 trains every weight instead)"})
    lora_alpha: float = field(default=16.0, metadata={
        "help": "LoRA scale numerator: the adapters' update is scaled by lora_alpha / lora_r"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA adapters' input, in [0, 1)"})
    lora_targets: str = field(default="language", metadata={
        "help": "where the LoRA adapters go: language (the language model's attention and MLP projections), "
                "language+head (and the output layer), all-linear (every linear layer but the output layer), "
                "all-linear+head, or a regular expression over module names"})
    max_grad_norm: float = field(default=1.0, metadata={
        "help": "clip the trained weights' gradient norm to this (0: no clipping)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in the backward pass (less memory for large models; slower, and of no use "
                "for tiny ones)"})
    organism: str = field(default="organism", metadata={
        "help": "the word the questions use for what the photo shows ('Given the organism in the image, ...')"})
    deepspeed: str | None = field(default=None, metadata={
        "help": "train through DeepSpeed (installed separately; CUDA GPUs) with ZeRO stage 2 (zero2: optimizer "
                "states and gradients sharded over the processes), stage 3 (zero3: the weights too), or a DeepSpeed "
                "JSON file; SFT and Finedefics then write no checkpoint (no resume, no checkpoint_every) and, under "
                "ZeRO-3, evaluate nothing during training"})

    RESUMABLE_CHANGES = (*TrainConfig.RESUMABLE_CHANGES, "gradient_checkpointing")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.model, str) or not self.model.strip():
            raise TaxonlensError("model must name a multimodal LLM (a preset, a folder or a Hugging Face name)")
        check_lora_targets(self.lora_targets)
        check_organism(self.organism)
        deepspeed_config(self.deepspeed)  # before anything loads: DeepSpeed missing, or no such configuration


@dataclass
class QuestionConfig(TrainConfig):
    """How the benchmark's questions are asked and answered in training."""

    answer: str = field(default="letter", metadata={
        "help": "what the model learns to answer: letter (the true option's letter, as the benchmark asks) or "
                "name (the true option's text)"})
    system: bool = field(default=True, metadata={
        "help": "put the reference system prompt before every question"})

    def __post_init__(self) -> None:
        super().__post_init__()
        AnswerFormat(self.answer)  # ChoiceError: unknown answer format ...; choose one of letter, name

    @property
    def system_prompt(self) -> str | None:
        """The system prompt of the questions, or ``None``."""
        return SYSTEM_PROMPT if self.system else None


__all__ = [
    "LMMConfig",
    "LoopConfig",
    "QuestionConfig",
    "TrainConfig",
    "check_organism",
    "with_defaults",
]

"""Training: contrastive (BioCLIP) fine-tuning, LMM fine-tuning (SFT, Finedefics' two stages, GRPO with
optional TARA alignment: :mod:`taxonlens.train.tara`, imported on use), the settings every trainer shares
(:mod:`taxonlens.train.config`), the resumable epoch loop (:mod:`taxonlens.train.loop`) and the checkpoints."""

from taxonlens.train.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    CheckpointError,
    LoopState,
    capture_rng_state,
    check_config,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from taxonlens.train.config import LMMConfig, LoopConfig, QuestionConfig, TrainConfig
from taxonlens.train.contrastive import (
    CaptionedImages,
    ContrastiveConfig,
    Example,
    MultiPositiveClipLoss,
    as_examples,
    evaluate_zeroshot,
    synthworld_examples,
    train_contrastive,
)
from taxonlens.train.finedefics import Stage1Config, Stage2Config, measure_alignment, train_stage1, train_stage2
from taxonlens.train.grpo import RFTConfig, shots_per_species, train_grpo
from taxonlens.train.loop import EpochTask, LoopRun, StepLog, TrainResult, train_epochs
from taxonlens.train.sft import (
    SFTConfig,
    TuneConfig,
    evaluate_sft,
    load_sft_checkpoint,
    train_sft,
    tune_lmm,
)

__all__ = [
    "CHECKPOINT_FILE",
    "CaptionedImages",
    "Checkpoint",
    "CheckpointError",
    "ContrastiveConfig",
    "EpochTask",
    "Example",
    "LMMConfig",
    "LoopConfig",
    "LoopRun",
    "LoopState",
    "MultiPositiveClipLoss",
    "QuestionConfig",
    "RFTConfig",
    "SFTConfig",
    "Stage1Config",
    "Stage2Config",
    "StepLog",
    "TrainConfig",
    "TrainResult",
    "TuneConfig",
    "as_examples",
    "capture_rng_state",
    "check_config",
    "evaluate_sft",
    "evaluate_zeroshot",
    "load_checkpoint",
    "load_sft_checkpoint",
    "measure_alignment",
    "restore_rng_state",
    "save_checkpoint",
    "shots_per_species",
    "synthworld_examples",
    "train_contrastive",
    "train_epochs",
    "train_grpo",
    "train_sft",
    "train_stage1",
    "train_stage2",
    "tune_lmm",
]

"""Training: contrastive (BioCLIP) fine-tuning, LMM fine-tuning (SFT, Finedefics' two stages, GRPO with
optional TARA alignment: :mod:`taxonlens.train.tara`, imported on use) and the loop utilities every trainer shares."""

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
from taxonlens.train.contrastive import (
    CaptionedImages,
    ContrastiveConfig,
    Example,
    MultiPositiveClipLoss,
    StepLog,
    TrainResult,
    as_examples,
    evaluate_zeroshot,
    synthworld_examples,
    train_contrastive,
)
from taxonlens.train.finedefics import Stage1Config, Stage2Config, measure_alignment, train_stage1, train_stage2
from taxonlens.train.grpo import RFTConfig, RFTResult, shots_per_species, train_grpo
from taxonlens.train.sft import (
    SFTConfig,
    SFTResult,
    SFTStepLog,
    evaluate_sft,
    load_sft_checkpoint,
    train_sft,
)

__all__ = [
    "CHECKPOINT_FILE",
    "CaptionedImages",
    "Checkpoint",
    "CheckpointError",
    "ContrastiveConfig",
    "Example",
    "LoopState",
    "MultiPositiveClipLoss",
    "RFTConfig",
    "RFTResult",
    "SFTConfig",
    "SFTResult",
    "SFTStepLog",
    "Stage1Config",
    "Stage2Config",
    "StepLog",
    "TrainResult",
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
    "train_grpo",
    "train_sft",
    "train_stage1",
    "train_stage2",
]

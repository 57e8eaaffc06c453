"""Training: contrastive (BioCLIP) fine-tuning and the loop utilities every trainer shares."""

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

__all__ = [
    "CHECKPOINT_FILE",
    "CaptionedImages",
    "Checkpoint",
    "CheckpointError",
    "ContrastiveConfig",
    "Example",
    "LoopState",
    "MultiPositiveClipLoss",
    "StepLog",
    "TrainResult",
    "as_examples",
    "capture_rng_state",
    "check_config",
    "evaluate_zeroshot",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "synthworld_examples",
    "train_contrastive",
]

"""Training: contrastive (BioCLIP) fine-tuning, LMM fine-tuning (SFT, Finedefics' two stages, GRPO with
optional TARA alignment: :mod:`taxonlens.train.tara`, imported on use), the settings every trainer shares
(:mod:`taxonlens.train.config`), the resumable epoch loop (:mod:`taxonlens.train.loop`) and the checkpoints.

Every name below is imported from its module on first use, so importing one trainer (or the
configs, as the command line does) does not import the others (contrastive training imports
open_clip, which takes seconds).
"""

from __future__ import annotations

from taxonlens.exports import lazy_exports

#: public name -> the module that defines it
_LAZY = {
    "CHECKPOINT_FILE": "taxonlens.train.checkpoint",
    "CaptionedImages": "taxonlens.train.contrastive",
    "Checkpoint": "taxonlens.train.checkpoint",
    "CheckpointError": "taxonlens.train.checkpoint",
    "ContrastiveConfig": "taxonlens.train.contrastive",
    "EpochTask": "taxonlens.train.loop",
    "Example": "taxonlens.train.contrastive",
    "LMMConfig": "taxonlens.train.config",
    "LoopConfig": "taxonlens.train.config",
    "LoopRun": "taxonlens.train.loop",
    "LoopState": "taxonlens.train.checkpoint",
    "MultiPositiveClipLoss": "taxonlens.train.clip_loss",
    "QuestionConfig": "taxonlens.train.config",
    "RFTConfig": "taxonlens.train.grpo",
    "SFTConfig": "taxonlens.train.sft",
    "Stage1Config": "taxonlens.train.finedefics",
    "Stage2Config": "taxonlens.train.finedefics",
    "StepLog": "taxonlens.train.loop",
    "TrainConfig": "taxonlens.train.config",
    "TrainResult": "taxonlens.train.loop",
    "TuneConfig": "taxonlens.train.sft",
    "as_examples": "taxonlens.train.contrastive",
    "capture_rng_state": "taxonlens.train.checkpoint",
    "check_config": "taxonlens.train.checkpoint",
    "evaluate_sft": "taxonlens.train.sft",
    "evaluate_zeroshot": "taxonlens.train.contrastive",
    "load_checkpoint": "taxonlens.train.checkpoint",
    "load_sft_checkpoint": "taxonlens.train.sft",
    "measure_alignment": "taxonlens.train.finedefics",
    "restore_rng_state": "taxonlens.train.checkpoint",
    "save_checkpoint": "taxonlens.train.checkpoint",
    "shots_per_species": "taxonlens.train.grpo",
    "synthworld_examples": "taxonlens.train.contrastive",
    "train_contrastive": "taxonlens.train.contrastive",
    "train_epochs": "taxonlens.train.loop",
    "train_grpo": "taxonlens.train.grpo",
    "train_sft": "taxonlens.train.sft",
    "train_stage1": "taxonlens.train.finedefics",
    "train_stage2": "taxonlens.train.finedefics",
    "tune_lmm": "taxonlens.train.sft",
}

__all__ = [  # the names of _LAZY
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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

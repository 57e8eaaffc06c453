"""DeepSpeed ZeRO for the LMM trainers run by trl: the shipped ZeRO-2 / ZeRO-3 configurations
(:data:`~taxonlens.resources.DEEPSPEED_CONFIGS`) or a user's JSON file, handed to transformers'
``TrainingArguments(deepspeed=...)``, which fills in its ``auto`` values (batch size, gradient
clipping, bf16 / fp16) from the run's settings. DeepSpeed itself is an optional install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from taxonlens.errors import TaxonlensError
from taxonlens.resources import DEEPSPEED_CONFIGS, deepspeed_file


def deepspeed_config(choice: str | None) -> str | None:
    """The DeepSpeed configuration file of ``choice``: ``zero2`` or ``zero3`` (shipped), a JSON
    file, or ``None`` (no DeepSpeed).

    Raises:
        TaxonlensError: DeepSpeed is not installed, or ``choice`` is neither a shipped name nor a file.
    """
    if choice is None:
        return None
    path = deepspeed_file(choice) if choice in DEEPSPEED_CONFIGS else Path(choice)
    if not path.is_file():
        raise TaxonlensError(f"--deepspeed {choice}: no such file; use {' or '.join(DEEPSPEED_CONFIGS)} (the shipped "
                             "ZeRO configurations) or a DeepSpeed JSON file")
    if importlib.util.find_spec("deepspeed") is None:
        raise TaxonlensError(f"--deepspeed {choice}: DeepSpeed is not installed; install it (pip install deepspeed, "
                             "on a machine with CUDA GPUs) or train without --deepspeed")
    return str(path)


__all__ = ["deepspeed_config"]

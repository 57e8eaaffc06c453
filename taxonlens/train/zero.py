"""DeepSpeed ZeRO for the LMM trainers: the shipped ZeRO-2 / ZeRO-3 configurations
(:data:`~taxonlens.resources.DEEPSPEED_CONFIGS`) or a user's JSON file (:func:`deepspeed_config`),
handed to transformers' ``TrainingArguments(deepspeed=...)`` by GRPO (trl fills in the ``auto``
values: batch size, gradient clipping, bf16 / fp16), and to accelerate's ``DeepSpeedPlugin`` by
the epoch loop of SFT and Finedefics (:func:`deepspeed_plugin`, which fills in the batch size and
the clipping; accelerate fills in bf16 / fp16 from the run's precision). DeepSpeed itself is an
optional install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from taxonlens.errors import TaxonlensError
from taxonlens.resources import DEEPSPEED_CONFIGS, deepspeed_file

if TYPE_CHECKING:
    from accelerate.utils import DeepSpeedPlugin


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


def deepspeed_plugin(config_file: str, micro_batch: int, processes: int, max_grad_norm: float) -> DeepSpeedPlugin:
    """accelerate's ``DeepSpeedPlugin`` of ``config_file`` (from :func:`deepspeed_config`) for a
    loop whose optimizer step takes ``micro_batch`` items on each of ``processes`` processes: the
    ZeRO stage the file names, no gradient accumulation, the gradient norm clipped to
    ``max_grad_norm`` (0: no clipping). Needs accelerate, not DeepSpeed."""
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(hf_ds_config=config_file, gradient_accumulation_steps=1,
                             gradient_clipping=float(max_grad_norm))
    plugin.deepspeed_config |= {"train_micro_batch_size_per_gpu": micro_batch,
                                "train_batch_size": micro_batch * processes}
    return plugin


__all__ = ["deepspeed_config", "deepspeed_plugin"]

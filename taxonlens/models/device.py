"""Where a model runs and in which number format: the one place that asks the hardware.

- :func:`resolve_device`: ``auto`` is CUDA when a GPU is visible, then Apple's MPS, else the CPU;
  an explicit ``cuda`` or ``mps`` that is not there is a one-line error.
- :func:`resolve_precision`: ``auto`` is bf16 on GPUs that support it, fp16 on older GPUs and on
  MPS, and on the CPU bf16 only where it is measured fast (native bf16 matrix units), else fp32.

Nothing else in taxonlens calls ``torch.cuda`` or ``torch.backends`` for this.
"""

from __future__ import annotations

from enum import nonmember

import torch

from taxonlens.choices import Choice
from taxonlens.errors import TaxonlensError


class Device(Choice):
    """Where a model runs: ``auto`` (CUDA, then MPS, else CPU), ``cpu``, ``cuda`` (``cuda:N`` is
    accepted by the library too) or ``mps``."""

    what = nonmember("device")
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(Choice):
    """The number format a model runs in: ``fp32``, ``bf16``, ``fp16``, or ``auto`` (see
    :func:`resolve_precision`)."""

    what = nonmember("precision")
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device of a :class:`Device` name (or ``cuda:N``).

    Raises:
        TaxonlensError: ``cuda`` or ``mps`` asked for where there is none.
    """
    if isinstance(device, torch.device):
        return device
    kind = str(device).partition(":")[0]
    if Device(kind) == Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    if kind == Device.cuda and not torch.cuda.is_available():
        raise TaxonlensError(f"--device {device}: no CUDA GPU is visible to torch {torch.__version__} here "
                             "(torch.cuda.is_available() is False); use --device cpu or auto")
    if kind == Device.mps and not _mps_available():
        raise TaxonlensError(f"--device {device}: Apple's MPS is not available here; use --device cpu or auto")
    return torch.device(str(device))


def bf16_is_fast() -> bool:
    """Whether this CPU has native bfloat16 matrix units (AVX512-BF16 / AMX), where a
    bf16 model encodes about 3.5x faster than fp32 (measured on ViT-B/16)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``auto`` -> the fast format of ``device`` (see the module docstring); other values (a
    :class:`Precision`) pass through as plain strings."""
    if Precision(precision) != Precision.auto:
        return str(precision)
    kind = resolve_device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "mps":
        return "fp16"
    return "bf16" if bf16_is_fast() else "fp32"


def release_memory(device: str | torch.device) -> None:
    """Hand a GPU's cached memory back after a batch ran out of it (nothing to do on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The torch dtype of each resolved precision."""

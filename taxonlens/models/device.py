"""Where a model runs and in which number format: the one place that asks the hardware.

- :func:`resolve_device`: ``auto`` is CUDA when a GPU is visible, then Apple's MPS, else the CPU;
  an explicit ``cuda`` or ``mps`` that is not there is a one-line error.
- :func:`resolve_precision`: ``auto`` is bf16 on GPUs that support it, fp16 on older GPUs and on
  MPS, and on the CPU bf16 only where it is measured fast (native bf16 matrix units), else fp32;
  for training (``training=True``) the CPU's and MPS's ``auto`` is fp32 (mixed precision there is
  asked for by name).
- :func:`autocast`: the mixed-precision context of a resolved precision on a device.

- :func:`attention_implementation`: FlashAttention 2 on a CUDA GPU in bf16 or fp16 when the
  ``flash-attn`` package is installed, else PyTorch's scaled-dot-product attention (``sdpa``).

Nothing else in taxonlens calls ``torch.cuda`` or ``torch.backends`` for this.
"""

from __future__ import annotations

import functools
from enum import nonmember
from pathlib import Path

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


#: CPU flags (Linux ``/proc/cpuinfo``) of native bfloat16 matrix instructions.
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.cache
def bf16_is_fast() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AMX or AVX512-BF16: a flag of
    :data:`BF16_CPU_FLAGS`), where a bf16 ViT-B/16 encodes about 4x faster than fp32 (measured).

    oneDNN's own check (``_is_mkldnn_bf16_supported``) also says yes for plain AVX-512, where bf16
    is emulated: measured on such a CPU (Xeon @ 2.0 GHz, AVX-512F without BF16), a bf16 matmul ran at
    33 GFLOP/s against fp32's 112, and ViT-B/16 at 0.84 photos/s against 2.27. Where the flags cannot
    be read (not Linux), fp32 is kept.
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.partition(":")[2].split()}
    return bool(flags & BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: str | torch.device = "cpu", training: bool = False) -> str:
    """``auto`` -> the fast format of ``device`` (see the module docstring; with ``training``, fp32
    on the CPU and MPS); other values (a :class:`Precision`) pass through as plain strings."""
    if Precision(precision) != Precision.auto:
        return str(Precision(precision))
    kind = resolve_device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if training:
        return "fp32"
    if kind == "mps":
        return "fp16"
    return "bf16" if bf16_is_fast() else "fp32"


def attention_implementation(device: str | torch.device, precision: str) -> str:
    """The transformers ``attn_implementation`` of an LMM on ``device`` at a resolved ``precision``
    (see the module docstring)."""
    import importlib.util

    if resolve_device(device).type == "cuda" and precision in ("bf16", "fp16") \
            and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def reset_peak_memory(device: str | torch.device) -> None:
    """Start :func:`peak_memory_mb`'s count afresh on a CUDA GPU (elsewhere the count is the
    process's, which never resets)."""
    device = resolve_device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: str | torch.device) -> float:
    """Peak memory in MiB: on a CUDA GPU the most torch allocated there since
    :func:`reset_peak_memory`; elsewhere this process's peak resident set size (``ru_maxrss``:
    KiB on Linux, bytes on macOS)."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def release_memory(device: str | torch.device) -> None:
    """Hand a GPU's cached memory back after a batch ran out of it (nothing to do on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The torch dtype of each resolved precision."""


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """torch's autocast to ``precision`` (resolved: fp32, bf16 or fp16) on ``device``'s kind;
    disabled for fp32."""
    return torch.autocast(device.type, dtype=DTYPES[precision], enabled=precision != "fp32")

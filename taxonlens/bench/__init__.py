"""Benchmarks that print figures and ratios (``taxonlens bench ...``); never timed unit tests.

Where they live, and why: here, in the installed package, because ``taxonlens bench`` must work
from a ``pip install`` (no source checkout) and the README's figures are reproduced by it. The
subpackage sits above :mod:`taxonlens.predict` and nothing in the library imports it: only
:mod:`taxonlens.cli` does (``tests/test_layers.py`` puts it above every library layer, below the
CLI; :mod:`taxonlens.demo` is its peer and imports none of it). Development-only dependencies (pybioclip) are imported inside the
function that needs them. The benchmarks that train take a frozen spec (a :class:`WorldSpec`
and, for the LMM ones, a :class:`TinySFTSpec` composed in; their spec extends :class:`HardwareSpec`,
the threads, device and precision of the run) and, like ``bench memory`` and
``bench pybioclip``, return a result dataclass with ``to_dict()`` (JSON-ready) and ``render()``
(rich tables, :mod:`taxonlens.bench.cells`); the micro-benchmarks return flat figure dicts.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from taxonlens.synthworld.spec import WorldSpec as WorldSpec  # the worlds benchmarks build (shared with train.pretrain)

if TYPE_CHECKING:
    from taxonlens.train.loop import TrainResult
    from taxonlens.train.pretrain import Pretrained, PretrainSpec
    from taxonlens.train.sft import SFTConfig

T = TypeVar("T")


@dataclass(frozen=True)
class HardwareSpec:
    """Where a benchmark that trains runs, the base of its spec: torch CPU ``threads`` (``None``:
    as set), the ``device`` (a :class:`~taxonlens.models.device.Device` name) and the ``precision``
    (a :class:`~taxonlens.models.device.Precision` name) of its training, its loaded models and its
    scoring. The defaults, one CPU thread in fp32, are those the README's figures were measured with."""

    threads: int | None = 1
    device: str = "cpu"
    precision: str = "fp32"

    @property
    def train_settings(self) -> dict[str, Any]:
        """The ``threads``, ``device`` and ``precision`` of a trainer's config."""
        return {"threads": self.threads, "device": self.device, "precision": self.precision}

    def load(self, loader: Callable[..., T], name: str | Path, **kwargs: Any) -> T:
        """``loader(name, precision=..., device=..., **kwargs)``: a model (``load_lmm``,
        ``load_encoder``) on this device in this precision."""
        return loader(str(name), precision=self.precision, device=self.device, **kwargs)

    def scored(self, trained: TrainResult[T], loader: Callable[..., T]) -> T:
        """The model of a training run as the benchmark scores it: the trainer's own (fp32 weights,
        on this device) when this precision is fp32 here, else its ``model_dir`` loaded by
        ``loader`` in this precision."""
        from taxonlens.models.device import resolve_precision

        if resolve_precision(self.precision, self.device) == "fp32":
            return trained.model
        return self.load(loader, trained.model_dir)


def _default_start() -> PretrainSpec:
    from taxonlens.train.pretrain import PretrainSpec

    return PretrainSpec()


@dataclass(frozen=True)
class EvidenceSpec(HardwareSpec):
    """The base of a method benchmark's spec (``bench tara | vqa | rar | finedefics``): the
    pretrained ``start`` it runs from (:func:`~taxonlens.train.pretrain.pretrain`; its world is the
    benchmark's) and the ``start_folder`` it is in or built in (``None``: the cache), the
    ``records_per_split`` answered (seen species' held-out photos and novel species' photos, drawn
    once with the world's seed, the same for every seed and arm) and the ``seeds``."""

    start: PretrainSpec = field(default_factory=_default_start)
    start_folder: str | None = None
    records_per_split: int = 300
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    def pretrained(self, say: Callable[[str], None] | None = None) -> Pretrained:
        """The start, loaded from its folder or trained there first (on :attr:`threads`)."""
        from taxonlens.train.pretrain import pretrain

        return pretrain(self.start, self.start_folder, self.threads, say)


@dataclass(frozen=True)
class TinySFTSpec:
    """The fine-tuning recipe a randomly initialised tiny LMM learns with (measured: option names
    as answers, no system prompt, LoRA on the output layer too): ``model`` (a tiny preset or a
    model folder), ``epochs``, ``batch_size``, ``lr`` and ``lora_alpha``."""

    model: str = "tiny-qwen2.5-vl"
    epochs: int = 40
    batch_size: int = 4
    lr: float = 2e-3
    lora_alpha: float = 32.0

    def config(self, out: Path, hardware: HardwareSpec, seed: int) -> SFTConfig:
        """The :class:`~taxonlens.train.sft.SFTConfig` of this recipe, writing to ``out``, on
        ``hardware``."""
        from taxonlens.train.sft import SFTConfig

        return SFTConfig(model=self.model, out=out, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                         lora_alpha=self.lora_alpha, lora_targets="language+head", answer="name", system=False,
                         eval_every=0, seed=seed, **hardware.train_settings)


def timed(fn: Callable[[], T], repeats: int = 1) -> tuple[T, float]:
    """``(fn(), seconds it took)``; with ``repeats > 1``, the fastest of that many calls after an
    untimed warm-up call (first-touch allocations and caches would otherwise count)."""
    if repeats > 1:
        fn()
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


@contextmanager
def bench_run(workdir: str | Path | None, threads: int | None, name: str) -> Iterator[Path]:
    """The frame of a benchmark that trains: yields its working folder (``workdir``, or a temporary
    folder removed after) while torch runs on ``threads`` CPU threads (``None``: as set)."""
    from taxonlens.train.checkpoint import torch_threads

    with tempfile.TemporaryDirectory(prefix=f"taxonlens-bench-{name}-") as tmp, torch_threads(threads):
        yield Path(workdir).resolve() if workdir is not None else Path(tmp)


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "sd", "values"}``: the standard deviation with ``ddof=1`` (0 for one value)."""
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": values}


def seed_summary(runs: Mapping[int, Mapping[str, Any]], arms: Sequence[str],
                 figures: Callable[[Any], Mapping[tuple[str, ...], float]]) -> dict[str, Any]:
    """:func:`mean_sd` over seeds of every figure of every arm: ``figures(runs[seed][arm])`` gives
    ``{key path: value}``, and the result is nested along the path, ``{arm: {k1: {k2: ... {"mean",
    "sd", "values"}}}}``; a figure counts the seeds that have it, in the order of ``runs``."""
    cells: dict[tuple[str, ...], list[float]] = {}
    for arm in arms:
        for run in runs.values():
            if arm in run:
                for key, value in figures(run[arm]).items():
                    cells.setdefault((arm, *key), []).append(float(value))
    out: dict[str, Any] = {}
    for key, values in cells.items():
        node = out
        for k in key[:-1]:
            node = node.setdefault(k, {})
        node[key[-1]] = mean_sd(values)
    return out

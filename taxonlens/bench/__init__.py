"""Benchmarks that print figures and ratios (``taxonlens bench ...``); never timed unit tests."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


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


def tiny_sft_config(settings: dict, out: Path):
    """The fine-tuning recipe a randomly initialised tiny LMM learns with (measured: option names
    as answers, no system prompt, LoRA on the output layer too), from a benchmark's ``settings``
    (``model``, ``epochs``, ``batch_size``, ``lr``, ``lora_alpha``, ``threads``, ``seed``)."""
    from taxonlens.train.sft import SFTConfig

    return SFTConfig(model=settings["model"], out=out, epochs=settings["epochs"], batch_size=settings["batch_size"],
                     lr=settings["lr"], lora_alpha=settings["lora_alpha"], lora_targets="language+head",
                     answer="name", system=False, eval_every=0, threads=settings["threads"], seed=settings["seed"])


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

"""Benchmarks that print figures and ratios (``taxonlens bench ...``); never timed unit tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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

"""Benchmarks that print figures and ratios (``taxonlens bench ...``); never timed unit tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``(fn(), seconds it took)``."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t

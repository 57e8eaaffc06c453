"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``tests/fixtures``: real public data the tests read, shipped with the repository
    (``benchmarks/inat21_plantae_similar_choice.jsonl``; source and MIT licence in its README.md)."""
    return Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def builtin_taxonomies() -> Path:
    """The folder of the built-in taxonomies (``inat21_plantae.json``, ``inat21_animalia.json``,
    ``imagenet_animal.json``), shipped in :mod:`taxonlens.resources`."""
    return Path(str(resources.files("taxonlens.resources")))

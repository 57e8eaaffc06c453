"""Fixtures of the service's tests: a small synthworld on disk and the tiny-clip recognizer over
its taxonomy (random weights of seed 0: the service's behaviour, not the model's accuracy, is
under test; training even one epoch costs half a minute on the shared test machine), with
thresholds that trust every rank above species and never species, so every answer backs off to
its genus."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxonlens.predict import build_recognizer
from taxonlens.synthworld import SynthWorld, random_taxonomy

MODEL = "tiny-clip"


@pytest.fixture(scope="package")
def world_dir(tmp_path_factory) -> Path:
    """A synthworld of 8 species, 4 photos each, written to disk (``taxonomy.json``, ``images/``)."""
    out = tmp_path_factory.mktemp("world")
    SynthWorld.create(random_taxonomy(8, seed=3), 8, 4, novel_fraction=0.0, size=64, seed=3).write(out)
    return out


@pytest.fixture(scope="package")
def label_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("labels")


@pytest.fixture(scope="package")
def model_name() -> str:
    """The encoder of :func:`recognizer`, for a `taxonlens serve --model` that serves the same."""
    return MODEL


@pytest.fixture(scope="package")
def recognizer(world_dir, label_cache):
    rec = build_recognizer(MODEL, world_dir / "taxonomy.json", precision="fp32", cache_dir=label_cache)
    rec.decoder.thresholds = {r: 0.0 for r in rec.taxonomy.ranks} | {"species": float("inf")}
    return rec


@pytest.fixture(scope="package")
def photos(world_dir) -> list[Path]:
    """The world's photos (PNG files), sorted."""
    return sorted(world_dir.rglob("*.png"))

"""Fixtures of the predict tests: a small synthworld on disk (with one broken photo) and a
tiny-clip recognizer over its taxonomy."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxonlens.predict import build_recognizer, expand_inputs
from taxonlens.synthworld import SynthWorld, random_taxonomy


@pytest.fixture(scope="package")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    SynthWorld.create(random_taxonomy(12, seed=1), 12, 3, novel_fraction=0.0, size=64, seed=1).write(out)
    (out / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return out


@pytest.fixture(scope="package")
def recognizer(world_dir, tmp_path_factory):
    return build_recognizer("tiny-clip", world_dir / "taxonomy.json", precision="fp32",
                            cache_dir=tmp_path_factory.mktemp("labels"))


@pytest.fixture(scope="package")
def photo_files(world_dir) -> list[str]:
    """Every image file of the world folder, the broken one included."""
    return expand_inputs([world_dir])

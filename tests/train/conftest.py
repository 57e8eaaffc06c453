"""Fixtures shared by the LMM trainers' tests."""

from __future__ import annotations

import pytest

from taxonlens.data.vqa_build import build_vqa
from taxonlens.models.mllm import load_lmm
from taxonlens.synthworld import SynthWorld, random_taxonomy


@pytest.fixture(scope="session")
def deep():
    """6 species x 2 photos: 12 records, questions at all 7 ranks (2 options above species, 4 at it);
    ``(world, records, image source)``."""
    world = SynthWorld.create(random_taxonomy(6, seed=0), 6, 2, novel_fraction=0, size=32, seed=0, nuisance=0.2)
    return world, build_vqa(world.records(None), world.taxonomy, 4, "random", seed=0), world.image_source()


@pytest.fixture(scope="module")
def lmm():
    """tiny-qwen2.5-vl with its random weights of seed 0."""
    return load_lmm("tiny-qwen2.5-vl")

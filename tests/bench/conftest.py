"""Fixtures of the benchmark tests."""

from __future__ import annotations

import pytest

from taxonlens.synthworld.spec import WorldSpec
from taxonlens.train.pretrain import Pretrained, PretrainSpec, pretrain

#: the smallest pretrained start the method benchmarks' tests run from: 12 species (3 novel) of
#: 6 photos, tiny-qwen2.5-vl pretrained one epoch, the BFM one epoch
MICRO_START = PretrainSpec(WorldSpec(n_species=12, images_per_species=6, novel_fraction=0.25, size=32, nuisance=0.3),
                           model="tiny-qwen2.5-vl", epochs=1, batch_size=8, lr=2e-3, bfm_epochs=1, probe=4)


@pytest.fixture(scope="session")
def micro_start(tmp_path_factory) -> Pretrained:
    """:data:`MICRO_START` pretrained once per test session (a folder of its own)."""
    return pretrain(MICRO_START, tmp_path_factory.mktemp("micro-start"), threads=1)

"""The few-shot benchmark (``taxonlens bench fewshot``, BioCLIP's Rare-Species protocol on
synthworld's novel split) at a tiny size: its structure and invariants; no timing assertion."""

from __future__ import annotations

import itertools
import json

import pytest

from taxonlens.bench import WorldSpec
from taxonlens.bench.fewshot import FewShotSpec, bench_fewshot
from taxonlens.errors import TaxonlensError


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    spec = FewShotSpec(world=WorldSpec(n_species=12, images_per_species=8, novel_fraction=0.34), encoder_epochs=2,
                       shots=(1, 5), seeds=3)
    return bench_fewshot(spec, workdir=tmp_path_factory.mktemp("bench-fewshot"))


def test_arms_ranks_and_seeds(result):
    assert list(result.accuracy) == ["zero-shot", "1-shot", "5-shot"]
    assert result.novel_species >= 2 and result.pool == 5 and result.test == 3
    for per_rank in result.accuracy.values():
        assert list(per_rank) == ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
        for cell in per_rank.values():
            assert len(cell["values"]) == 3 and all(0 <= v <= 100 for v in cell["values"])
    json.dumps(result.to_dict())  # JSON-ready


def test_accuracy_never_grows_down_a_consistent_path(result):
    for per_rank in result.accuracy.values():
        means = [cell["mean"] for cell in per_rank.values()]
        assert all(a >= b - 1e-9 for a, b in itertools.pairwise(means))


def test_the_table_has_a_row_per_arm(result):
    table = result.render()
    assert table.row_count == 3 and len(table.columns) == 8


def test_bad_shots_fail_before_any_work(tmp_path):
    with pytest.raises(TaxonlensError, match="shots must be at least 1"):
        bench_fewshot(FewShotSpec(shots=(0,)), workdir=tmp_path)
    with pytest.raises(TaxonlensError, match="more than 8 photos per species"):
        bench_fewshot(FewShotSpec(shots=(8,), world=WorldSpec(images_per_species=8)), workdir=tmp_path)
    assert not any(tmp_path.iterdir())

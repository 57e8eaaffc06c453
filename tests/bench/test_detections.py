"""``taxonlens bench detections --quick``: the table's fields (levels, arms, ranks, seeds, counts);
no figure or timing is asserted at this size."""

from __future__ import annotations

import itertools
import json

import pytest
from typer.testing import CliRunner

from taxonlens.bench import WorldSpec
from taxonlens.bench.detections import ARMS, DetectionsSpec, bench_detections, right_at_ranks
from taxonlens.cli import app
from taxonlens.errors import TaxonlensError

RANKS = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-detections") / "result.json"
    result = CliRunner().invoke(app, ["bench", "detections", "--quick", "--device", "cpu", "--precision", "fp32",
                                      "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_levels_arms_ranks_and_seeds(quick):
    result, _ = quick
    assert result["spec"]["seeds"] == 2 and len(result["counts"]) == 2
    assert (result["spec"]["device"], result["spec"]["precision"]) == ("cpu", "fp32")
    for count in result["counts"]:
        assert count["scenes"] == 4 and count["animals"] >= 4 and count["boxes"] == count["animals"] + count[
            "false_boxes"] and count["false_boxes"] >= 0
    assert {level: tuple(arms) for level, arms in result["accuracy"].items()} == ARMS
    for arms in result["accuracy"].values():
        for per_rank in arms.values():
            assert list(per_rank) == RANKS
            for cell in per_rank.values():
                assert len(cell["values"]) == 2 and all(0 <= v <= 100 for v in cell["values"])
            means = [cell["mean"] for cell in per_rank.values()]  # right at a rank: right above it too
            assert all(a >= b - 1e-9 for a, b in itertools.pairwise(means))
    assert set(result["seconds"]) == {"world_and_scenes", "encoder_training", "ranker_training", "classification"}


def test_the_table_has_a_row_per_level_and_arm(quick):
    _, printed = quick
    for arm in (*ARMS["animals"], *ARMS["photos"]):
        assert f"│ {arm} " in printed
    assert all(rank in printed for rank in RANKS) and "+-" in printed


def test_a_rank_is_right_when_the_names_down_to_it_are():
    truth = ("A", "B", "C")
    assert right_at_ranks(("A", "B", "C"), truth, 3) == [True, True, True]
    assert right_at_ranks(("A", "X", "C"), truth, 3) == [True, False, False]
    assert right_at_ranks(("A", "B", "C"), ("A", "B"), 3) == [True, True, False]  # over-specific below the LCA
    assert right_at_ranks(("A", "B"), ("A", "B"), 3) == [True, True, True]


def test_bad_specs_fail_before_any_work(tmp_path):
    with pytest.raises(TaxonlensError, match="rerank k must lie in 2..6"):
        bench_detections(DetectionsSpec(world=WorldSpec(n_species=6, novel_fraction=0.0), rerank_k=7), workdir=tmp_path)
    with pytest.raises(TaxonlensError, match="novel fraction to 0"):
        bench_detections(DetectionsSpec(world=WorldSpec(novel_fraction=0.2)), workdir=tmp_path)
    assert not any(tmp_path.iterdir())

"""The Finedefics benchmarks (``taxonlens bench finedefics [--cost]``) at a micro size, from the micro
pretrained start: every arm of every seed scored record by record on seen and novel species, the
same records in every seed and arm, the same number of optimizer steps in every arm, intervals
around the means, the claims judged, the alignment plot a PNG, the cost table complete with
positive times and ratios computed from them; no timing or effect-size assertion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from taxonlens.bench import WorldSpec
from taxonlens.bench import finedefics as fd
from taxonlens.bench.claims import Claim, judge
from taxonlens.cli import app
from taxonlens.train.pretrain import PretrainSpec

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]
#: records drawn per split (the micro world has 18 held-out photos of seen species and 18 novel photos)
RECORDS = 8


@pytest.fixture(scope="module")
def evidence(micro_start, tmp_path_factory):
    """8 seen records (4 trained species, 16 training photos) and 8 novel ones, 1 + 1 epochs at batch 4, 2 seeds."""
    spec = fd.FinedeficsSpec(start=micro_start.spec, start_folder=str(micro_start.folder), records_per_split=RECORDS,
                             seeds=(0, 1), stage1_epochs=1, stage2_epochs=1, batch_size=4)
    return fd.bench_finedefics_evidence(spec, workdir=tmp_path_factory.mktemp("bench-finedefics"),
                                        out=tmp_path_factory.mktemp("bench-finedefics-out"))


@pytest.fixture(scope="module")
def cost(tmp_path_factory):
    """Every stage of one preset on 8 photos at batch 2, one epoch (4 steps) each, a process each (a fresh
    process costs seconds: the other presets' stages are the same code, run by tests/train)."""
    spec = fd.FinedeficsCostSpec(world=WorldSpec(n_species=4, images_per_species=4, novel_fraction=0.0), batch_size=2,
                                 presets=("tiny-idefics2",))
    return fd.bench_finedefics_cost(spec, workdir=tmp_path_factory.mktemp("bench-finedefics-cost"))


def test_the_records_are_drawn_genus_by_genus_and_the_trained_species_are_theirs(micro_start):
    world = micro_start.spec.world.create()
    data = fd.draw_data(world, RECORDS)
    seen, novel = data.asked["seen"], data.asked["novel"]
    assert len(seen) == len(novel) == RECORDS and {r.split for r in seen} == {"val", "test"}
    assert {r.split for r in novel} == {"novel"}
    assert {r.path[-1] for r in seen} == set(fd.leaf_names(data.trained)) == {r.path[-1] for r in data.train}
    assert {r.split for r in data.train} == {"train"} and len(data.train) == 4 * data.trained.n_leaves
    genera = [tuple(r.path[:-1]) for r in seen]
    assert all(genera.index(g) == i or genera[i - 1] == g for i, g in enumerate(genera))  # a genus is not split up
    assert set(fd.leaf_names(data.asked_over)) == set(fd.leaf_names(data.trained)) | {r.path[-1] for r in novel}
    assert fd.draw_data(world, RECORDS).asked == data.asked  # drawn with the world's seed


def test_every_arm_of_every_seed_has_a_value_per_record_of_every_figure(evidence):
    values = evidence.values()
    assert set(values) == set(fd.ARMS) and evidence.data["records"] == {"seen": RECORDS, "novel": RECORDS}
    for arm in fd.ARMS:
        keys = {(split, figure) for split in fd.SPLITS for figure in fd.SPECIES_FIGURES}
        keys |= {(split, "alignment", stage) for split in fd.SPLITS for stage in fd.ALIGNMENT_STAGES}
        assert set(values[arm]) == keys
        for key, v in values[arm].items():
            assert v.shape == (2, RECORDS) and set(np.unique(v)) <= {0.0, 100.0}, (arm, key)
        assert (values[arm][("seen", "open set")] <= values[arm][("seen", "open: names a species")]).all()
    start = values["stage2_only"][("seen", "alignment", "stage1")]
    assert (start == start[0]).all()  # stage2_only's model before Stage II is the start, whatever the seed


def test_every_arm_takes_the_same_number_of_optimizer_steps(evidence):
    for run in evidence.runs.values():
        assert len({run[arm]["steps"] for arm in fd.ARMS}) == 1 and run["finedefics"]["steps"] == 8
        assert "stage1" not in run["stage2_only"]
        for arm in fd.ARMS[1:]:
            assert run[arm]["stage1"]["steps"] == run[arm]["stage2"]["steps"] == 4
        assert set(run["finedefics"]["stage1"]["last_parts"]) == {"ntp", "oac", "acc", "ccc"}
        assert set(run["occ_for_ccc+stage2"]["stage1"]["last_parts"]) == {"ntp", "oac", "acc", "occ"}
        assert set(run["contrast_no_ntp+stage2"]["stage1"]["last_parts"]) == {"oac", "acc", "ccc"}


def test_every_figure_has_an_interval_around_its_mean_and_every_claim_a_verdict(evidence):
    values = evidence.values()
    for arm, figures in evidence.estimates.items():
        for key, e in figures.items():
            assert e["low"] <= e["mean"] <= e["high"] and e["mean"] == pytest.approx(values[arm][tuple(key.split("/"))].mean())
    assert len(evidence.claims) == len(fd.CLAIMS) == 6
    for row in evidence.claims:
        assert row["label"] in {"reproduced", "not reproduced", "reversed"} and (row["seeds"], row["records"]) == (2, RECORDS)
        d = row["difference"]
        assert d["low"] <= d["mean"] <= d["high"]
        assert d["mean"] == pytest.approx(row["arm_estimate"]["mean"] - row["baseline_estimate"]["mean"])
    (same,) = judge([Claim("x", "an arm against itself", "finedefics", "finedefics", ("seen", "4-option"))], values)
    assert same["label"] == "not reproduced" and same["difference"]["mean"] == 0.0


def test_the_alignment_plot_is_a_png(evidence):
    path = evidence.plot
    assert path.endswith("alignment.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 300


def test_cost_table_has_every_preset_and_stage_with_ratios_of_its_figures(cost):
    assert cost.photos == 8 and set(cost.stages) == set(cost.spec.presets) == {"tiny-idefics2"}
    for preset, stages in cost.stages.items():
        assert set(stages) == set(fd.COST_STAGES)
        for r in stages.values():
            assert r["steps"] == 4 and len(r["step_seconds"]) == 4 and all(t > 0 for t in r["step_seconds"])
            assert r["seconds_per_step"] == pytest.approx(np.median(r["step_seconds"])) and r["seconds_per_step"] > 0
            assert r["peak_mb"] >= 0 and r["model_mb"] >= 0
        for a, b in fd.COST_RATIOS:
            ratio = cost.ratios[preset][f"{a}/{b}"]
            assert ratio["seconds_per_step"] == pytest.approx(stages[a]["seconds_per_step"] / stages[b]["seconds_per_step"])
            assert ratio["seconds_per_step"] > 0
            if stages[b]["peak_mb"]:
                assert ratio["peak_mb"] == pytest.approx(stages[a]["peak_mb"] / stages[b]["peak_mb"])
            else:
                assert ratio["peak_mb"] is None


def test_cli_builds_the_spec_and_prints_both_benchmarks(evidence, cost, monkeypatch, tmp_path):
    specs = []
    monkeypatch.setattr(fd, "bench_finedefics_evidence", lambda spec, **k: specs.append(spec) or evidence)
    monkeypatch.setattr(fd, "bench_finedefics_cost", lambda *a, **k: cost)
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "finedefics", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert all(text in result.output for text in ("stage2_only", "finedefics", "claims: paired difference")), result.output
    written = json.loads((tmp_path / "result.json").read_text())
    assert [row["label"] for row in written["claims"]] == [row["label"] for row in evidence.claims]
    assert written["records"]["0"]["finedefics"]["seen/4-option"] == evidence.records[0]["finedefics"]["seen/4-option"]
    result = runner.invoke(app, ["bench", "finedefics", "--quick", "--seeds", "3", "--records-per-split", "20",
                                 "--start-folder", str(tmp_path / "start"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    full, quick = specs
    assert full == fd.FinedeficsSpec() and full.seeds == (0, 1, 2, 3, 4) and full.records_per_split >= 300
    assert quick.start == PretrainSpec.quick() and quick.seeds == (0, 1, 2) and quick.records_per_split == 20
    assert quick.start_folder == str(tmp_path / "start") and quick.stage2_epochs == fd.FinedeficsSpec.quick().stage2_epochs
    result = runner.invoke(app, ["bench", "finedefics", "--cost", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert all(p in result.output for p in cost.stages) and (tmp_path / "cost.json").is_file()

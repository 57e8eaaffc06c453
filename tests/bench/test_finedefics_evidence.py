"""The Finedefics benchmarks (``taxonlens bench finedefics [--cost]``) at a tiny size: every arm of
every seed scored on seen and novel species with percentages, the same number of optimizer steps
in every arm, the summary the mean and spread of the seeds' figures, the alignment plot a PNG, the
cost table complete with positive times and ratios computed from them; no timing or effect-size
assertion."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from taxonlens.bench import TinySFTSpec, WorldSpec
from taxonlens.bench import finedefics as fd
from taxonlens.bench.tara import DECODERS
from taxonlens.bench.vqa import FIGURES
from taxonlens.cli import app

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    """5 species (1 novel) x 4 photos, 1 + 1 epochs, 2 seeds (about 10 s on one thread)."""
    out = tmp_path_factory.mktemp("bench-finedefics-out")
    spec = fd.FinedeficsSpec(world=WorldSpec(n_species=5, images_per_species=4), recipe=TinySFTSpec(epochs=1),
                             stage1_epochs=1, seeds=(0, 1))
    return fd.bench_finedefics_evidence(spec, workdir=tmp_path_factory.mktemp("bench-finedefics"), out=out)


@pytest.fixture(scope="module")
def cost(tmp_path_factory):
    """Every stage of one preset on 8 photos at batch 2, one epoch (4 steps) each, a process each (a fresh
    process costs seconds: the other presets' stages are the same code, run by tests/train)."""
    spec = fd.FinedeficsCostSpec(world=WorldSpec(n_species=4, images_per_species=4, novel_fraction=0.0), batch_size=2,
                                 presets=("tiny-idefics2",))
    return fd.bench_finedefics_cost(spec, workdir=tmp_path_factory.mktemp("bench-finedefics-cost"))


def _percent(x) -> bool:
    return 0.0 <= x <= 100.0


def test_every_arm_of_every_seed_is_scored_in_percent_on_seen_and_novel_species(evidence):
    assert set(evidence.runs) == {0, 1}
    for run in evidence.runs.values():
        assert set(run) == {"start", *fd.ARMS}
        assert set(run["start"]["alignment"]["before"]) == set(fd.SPLITS)
        for arm in fd.ARMS:
            row = run[arm]
            for key in ("closed_set", "open_set", "scores"):
                assert set(row[key]) == set(fd.SPLITS), (arm, key)
            for split in fd.SPLITS:
                closed, opened = row["closed_set"][split], row["open_set"][split]
                assert closed["n"] > 0 and closed["chance"] == 25.0 and _percent(closed["acc"])
                assert opened["n"] == closed["n"] and _percent(opened["acc"]) and _percent(opened["named_pct"])
                assert opened["acc"] <= opened["named_pct"]  # a right name is a species' name
                for decoder in DECODERS:
                    assert all(_percent(row["scores"][split]["all"][decoder][f]) for f in FIGURES)
                assert row["scores"][split]["all"]["consistent"]["valid_path_pct"] == 100.0
            stages = {"after_stage1", "after_stage2"} if fd.STAGE1_WEIGHTS[arm] else {"after_stage2"}
            assert set(row["alignment"]) == stages
            for report in [*row["alignment"].values(), run["start"]["alignment"]["before"]]:
                for a in report.values():
                    assert _percent(a["retrieval_acc"]) and -2.0 <= a["cosine_gap"] <= 2.0 and a["n"] > 0


def test_every_arm_takes_the_same_number_of_optimizer_steps(evidence):
    for run in evidence.runs.values():
        assert len({run[arm]["steps"] for arm in fd.ARMS}) == 1 and run["finedefics"]["steps"] > 0
        assert "stage1" not in run["stage2_only"]
        for arm in fd.ARMS[1:]:
            assert run[arm]["stage1"]["steps"] == run[arm]["stage2"]["steps"]  # 1 + 1 epochs of equal length
            assert run[arm]["stage1"]["steps"] + run[arm]["stage2"]["steps"] == run["stage2_only"]["stage2"]["steps"]
        assert set(run["finedefics"]["stage1"]["last_parts"]) == {"ntp", "oac", "acc", "ccc"}
        assert set(run["occ_for_ccc+stage2"]["stage1"]["last_parts"]) == {"ntp", "oac", "acc", "occ"}
        assert set(run["occ_only+stage2"]["stage1"]["last_parts"]) == {"occ"}
        assert set(run["contrast_no_ntp+stage2"]["stage1"]["last_parts"]) == {"oac", "acc", "ccc"}


def test_summary_is_the_mean_and_sample_spread_of_the_seeds(evidence):
    runs, summary = evidence.runs, evidence.summary
    keys = 0
    for arm in ("start", *fd.ARMS):
        per_seed = [fd.figures(run[arm]) for run in runs.values()]
        assert per_seed[0].keys() == per_seed[1].keys()
        for key in per_seed[0]:
            node = summary[arm]
            for k in key:
                node = node[k]
            values = [p[key] for p in per_seed]
            assert node["values"] == values
            assert node["mean"] == pytest.approx(np.mean(values)) and node["sd"] == pytest.approx(np.std(values, ddof=1))
            keys += 1
    assert keys > 4 * 2 * (3 + 2 * len(FIGURES))
    assert summary["finedefics"]["seen"]["mc_acc"]["values"] == [runs[s]["finedefics"]["closed_set"]["seen"]["acc"]
                                                                 for s in (0, 1)]
    assert fd.summarize({0: runs[0]})["finedefics"]["seen"]["open_acc"]["sd"] == 0.0


def test_the_alignment_plot_is_a_png(evidence):
    path = evidence.plot
    assert path.endswith("alignment.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
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


def test_cli_prints_both_benchmarks(evidence, cost, monkeypatch, tmp_path):
    monkeypatch.setattr(fd, "bench_finedefics_evidence", lambda *a, **k: evidence)
    monkeypatch.setattr(fd, "bench_finedefics_cost", lambda *a, **k: cost)
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "finedefics", "--seeds", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert all(arm in result.output for arm in fd.ARMS) and "+-" in result.output
    assert (tmp_path / "result.json").is_file()
    result = runner.invoke(app, ["bench", "finedefics", "--cost", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert all(p in result.output for p in cost.stages) and (tmp_path / "cost.json").is_file()

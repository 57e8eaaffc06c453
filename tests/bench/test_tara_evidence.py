"""The GRPO / TARA evidence benchmark (``taxonlens bench tara``) at a tiny size: every arm trained
from the same warm start with the same budget, its figures percentages, the summary the mean and
spread of the seeds' figures; no timing or effect-size assertion."""

from __future__ import annotations

import numpy as np
import pytest

from taxonlens.bench import TinySFTSpec, WorldSpec
from taxonlens.bench.tara import ARMS, DECODERS, TARASpec, bench_tara_evidence, summarize
from taxonlens.bench.vqa import FIGURES

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    spec = TARASpec(world=WorldSpec(n_species=4, images_per_species=5), warm_start=TinySFTSpec(epochs=1), rl_epochs=1,
                    bfm_epochs=1, seeds=(0, 1))
    return bench_tara_evidence(spec, workdir=tmp_path_factory.mktemp("bench-tara"))


def test_every_arm_of_every_seed_is_scored_on_seen_and_novel_species(result):
    assert set(result.runs) == {0, 1}
    for run in result.runs.values():
        assert set(run) == set(ARMS)
        for arm in ARMS:
            assert set(run[arm]["scores"]) == {"seen", "novel"}
            for split in run[arm]["scores"].values():
                for decoder in DECODERS:
                    assert all(0 <= split["all"][decoder][f] <= 100 for f in FIGURES)
        # the same budget after the warm start: as many steps for more SFT as for GRPO
        assert run["sft"]["steps"] == run["grpo"]["steps"] == run["grpo+tara"]["steps"] > 0
        assert all(0 <= run[a][k] <= 1 for a in ("grpo", "grpo+tara") for k in ("reward_first_epoch",
                                                                                 "reward_last_epoch"))
        assert len(run["grpo+tara"]["label_loss_first_last"]) == 2 and "label_loss_first_last" not in run["grpo"]


def test_consistent_answers_are_always_valid_paths(result):
    for arm, splits in result.summary.items():
        for split in splits.values():
            assert split["consistent"]["valid_path_pct"]["values"] == [100.0, 100.0], arm


def test_summary_is_the_mean_and_sample_spread_of_the_seeds(result):
    for arm in ARMS:
        for split in ("seen", "novel"):
            for decoder in DECODERS:
                for figure in FIGURES:
                    values = [run[arm]["scores"][split]["all"][decoder][figure] for run in result.runs.values()]
                    cell = result.summary[arm][split][decoder][figure]
                    assert cell["values"] == values
                    assert cell["mean"] == pytest.approx(np.mean(values))
                    assert cell["sd"] == pytest.approx(np.std(values, ddof=1))
    one = summarize({0: result.runs[0]})
    assert one["grpo"]["seen"]["independent"]["hca"]["sd"] == 0.0

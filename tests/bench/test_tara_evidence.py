"""The GRPO / TARA evidence benchmark (``taxonlens bench tara``) from the micro pretrained start:
every arm of every seed trained with the same budget and scored on the same records, per-record
figures stacked over seeds, intervals and the claims' verdicts; no effect-size assertion."""

from __future__ import annotations

import numpy as np
import pytest

from taxonlens.bench.claims import Claim, judge, stack
from taxonlens.bench.tara import ARMS, CLAIMS, RECORD_FIGURES, TARASpec, bench_tara_evidence, start_end_means

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]

RECORDS = 4


@pytest.fixture(scope="module")
def result(micro_start, tmp_path_factory):
    spec = TARASpec(start=micro_start.spec, start_folder=str(micro_start.folder), records_per_split=RECORDS, shots=1,
                    warm_epochs=1, epochs=1, seeds=(0, 1))
    return bench_tara_evidence(spec, workdir=tmp_path_factory.mktemp("bench-tara"))


def values(result):
    return stack({seed: {arm: {tuple(k.split("/")): v for k, v in figures.items()} for arm, figures in run.items()}
                  for seed, run in result.runs.items()})


def test_every_arm_of_every_seed_is_scored_on_the_same_records(result):
    assert set(result.runs) == set(result.training) == {0, 1}
    assert result.world["records"] == {"seen": RECORDS, "novel": RECORDS}
    stacked = values(result)
    assert set(stacked) == set(ARMS)
    ranks = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
    for arm in ARMS:
        keys = {"/".join(k) for k in stacked[arm]}
        assert keys == {f"{split}/{decoder}/{figure}" for split in ("seen", "novel")
                        for decoder in ("independent", "consistent")
                        for figure in (*RECORD_FIGURES, *(f"acc_{r}" for r in ranks))}
        assert all(v.shape == (2, RECORDS) and ((0 <= v) & (v <= 100)).all() for v in stacked[arm].values())
    for arms in result.training.values():
        # the same budget after the warm start: as many steps for more SFT as for GRPO
        assert arms["sft"]["steps"] == arms["grpo"]["steps"] == arms["grpo+tara"]["steps"] > 0
        assert all(0 <= r <= 1 for arm in ("grpo", "grpo+tara") for r in arms[arm]["reward"])
        assert len(arms["grpo+tara"]["label_loss"]) == 2 and "label_loss" not in arms["grpo"]


def test_record_figures_agree_with_the_ranks_answered(result):
    stacked = values(result)
    for arm in ARMS:
        for split in ("seen", "novel"):
            for decoder in ("independent", "consistent"):
                fig = {k[-1]: v for k, v in stacked[arm].items() if k[:2] == (split, decoder)}
                per_rank = np.stack([v for k, v in fig.items() if k.startswith("acc_") and k != "acc_leaf"])
                assert np.allclose(fig["por"], per_rank.mean(axis=0))
                assert np.array_equal(fig["hca"] == 100, (per_rank == 100).all(axis=0))
                assert np.array_equal(fig["acc_leaf"], fig["acc_species"])


def test_claims_are_judged_with_ordered_intervals(result):
    assert [row["statement"] for row in result.claims] == [c.statement for c in CLAIMS]
    for row in result.claims:
        assert row["label"] in ("reproduced", "not reproduced", "reversed")
        assert (row["seeds"], row["records"]) == (2, RECORDS)
        for e in (row["arm_estimate"], row["baseline_estimate"], row["difference"]):
            assert e["low"] <= e["mean"] <= e["high"]
    for arm, figures in result.estimates.items():
        assert all(e["low"] <= e["mean"] <= e["high"] for e in figures.values()), arm
    same = Claim("test", "an arm against itself", "grpo", "grpo", ("seen", "independent", "hca"))
    assert judge([same], values(result))[0]["label"] == "not reproduced"


def test_a_run_is_summed_up_by_its_first_and_last_quarter_of_steps():
    rows = [{"reward": float(r)} for r in range(8)]
    assert start_end_means(rows, "reward") == [0.5, 6.5]  # steps 0-1 and 6-7, whatever the epochs
    assert start_end_means(rows[:1], "reward") == [0.0, 0.0]  # one step: at least one each

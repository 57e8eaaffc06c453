"""Per-record figures over seeds and the verdicts on claims (taxonlens.bench.claims)."""

import numpy as np
import pytest
from rich.console import Console

from taxonlens.bench.claims import Claim, claims_table, estimates, estimates_json, interval_cell, judge, stack

KEY = ("seen", "consistent", "hca")


def _runs(gain: float, seeds: int = 5, n: int = 300) -> dict:
    rng = np.random.default_rng(0)
    runs = {}
    for s in range(seeds):
        hard = rng.random(n)
        base = (hard < 0.4) * 100.0
        arm = (hard < 0.4 + gain) * 100.0
        runs[s] = {"grpo": {KEY: base.tolist()}, "grpo+tara": {KEY: arm.tolist()}}
    return runs


def test_stack_gives_seeds_by_records_and_refuses_ragged_runs():
    values = stack(_runs(0.1, seeds=3, n=20))
    assert values["grpo"][KEY].shape == (3, 20)
    joined = {s: {arm: {"/".join(k): v for k, v in f.items()} for arm, f in run.items()}
              for s, run in _runs(0.1, seeds=3, n=20).items()}  # JSON-ready keys come back as tuples
    assert np.array_equal(stack(joined)["grpo"][KEY], values["grpo"][KEY])
    ragged = _runs(0.1, seeds=2, n=20)
    ragged[1]["grpo"][KEY] = ragged[1]["grpo"][KEY][:10]
    with pytest.raises(ValueError, match="same records"):
        stack(ragged)


@pytest.mark.parametrize(("gain", "direction", "label"), [(0.1, 1, "reproduced"), (0.0, 1, "not reproduced"),
                                                          (0.1, -1, "reversed")])
def test_judge_pairs_the_arms_and_gives_the_verdict(gain, direction, label):
    claim = Claim("TARA", "TARA raises seen HCA", "grpo+tara", "grpo", KEY, direction)
    (row,) = judge([claim, Claim("TARA", "not run", "sft", "grpo", KEY)], stack(_runs(gain)))
    assert row["label"] == label and (row["seeds"], row["records"]) == (5, 300)
    assert row["difference"]["mean"] == pytest.approx(100 * gain, abs=3)
    assert row["arm_estimate"]["low"] < row["arm_estimate"]["mean"] < row["arm_estimate"]["high"] or gain == 0
    console = Console(width=200, record=True)
    console.print(claims_table("claims", [row]))
    text = console.export_text()
    assert label in text and "TARA: TARA raises seen HCA" in text


def test_estimates_and_cells():
    e = estimates(stack(_runs(0.1)))["grpo+tara"][KEY]
    assert estimates_json(stack(_runs(0.1)))["grpo+tara"]["seen/consistent/hca"] == e.to_dict()
    assert interval_cell(e).startswith(f"{e.mean:.1f} [")
    assert interval_cell(e.to_dict(), signed=True).startswith("+")
    assert interval_cell(None) == ""

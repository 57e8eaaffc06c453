"""Bootstrap intervals, paired differences and verdicts (taxonlens.evaluate.uncertainty)."""

import numpy as np
import pytest

from taxonlens.evaluate.uncertainty import bootstrap_mean, paired_difference, verdict


def _bernoulli(p: float, seeds: int, records: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.random((seeds, records)) < p) * 100.0


def test_interval_holds_the_mean_and_narrows_with_more_records():
    rng = np.random.default_rng(0)
    small, large = bootstrap_mean(_bernoulli(0.6, 5, 75, rng)), bootstrap_mean(_bernoulli(0.6, 5, 1200, rng))
    for e in (small, large):
        assert e.low < e.mean < e.high
    ratio = (small.high - small.low) / (large.high - large.low)
    assert 2.5 < ratio < 5.5  # 16x the records: about 4x narrower (less where seeds add their share)


@pytest.mark.parametrize("seed_sd", [0.0, 8.0])
def test_coverage_of_the_true_rate_is_near_95_percent(seed_sd):
    """5 seeds x 300 records of 0/100 outcomes, the rate 30% moved per seed by N(0, seed_sd) points."""
    rng = np.random.default_rng(1)
    hits = []
    for i in range(200):
        rate = 0.3 + rng.normal(0, seed_sd, (5, 1)) / 100
        e = bootstrap_mean((rng.random((5, 300)) < rate) * 100.0, n_boot=400, seed=i)
        hits.append(e.low <= 30 <= e.high)
    assert 0.9 <= np.mean(hits) <= 0.99


def test_variation_between_seeds_widens_the_interval():
    rng = np.random.default_rng(2)
    base = _bernoulli(0.5, 4, 300, rng)
    shifted = base + np.array([[-15.0], [15.0], [-15.0], [15.0]])
    assert bootstrap_mean(shifted).mean == pytest.approx(bootstrap_mean(base).mean)
    width = lambda e: e.high - e.low
    assert width(bootstrap_mean(shifted)) > 1.5 * width(bootstrap_mean(base))


def test_pairing_cancels_what_the_arms_share():
    rng = np.random.default_rng(3)
    hard = rng.normal(50, 30, (5, 300))  # per record difficulty, shared by both arms
    arm, base = hard + 2.0 + rng.normal(0, 1, hard.shape), hard
    d = paired_difference(arm, base)
    assert d.low > 1.5 and d.high < 2.5
    v = verdict(d)
    assert v.label == "reproduced" and "reproduced: +2.0" in str(v)
    assert verdict(d, direction=-1).label == "reversed"


def test_no_effect_is_not_reproduced_and_says_what_it_could_have_detected():
    rng = np.random.default_rng(4)
    arm, base = _bernoulli(0.5, 5, 300, rng), _bernoulli(0.5, 5, 300, rng)
    v = verdict(paired_difference(arm, base))
    assert v.label == "not reproduced"
    # two independent 0/100 arms of 1500 records each: se of the difference about 1.8 points
    assert 3.0 < v.detectable < 7.5
    assert f"detectable: {v.detectable:.1f}" in str(v)
    assert v.to_dict()["difference"]["low"] < 0 < v.to_dict()["difference"]["high"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same seeds and records"):
        paired_difference(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="finite"):
        bootstrap_mean([1.0, float("nan")])
    with pytest.raises(ValueError, match="direction"):
        verdict(bootstrap_mean([1.0, 2.0]), direction=0)

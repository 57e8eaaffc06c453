"""Hierarchical metrics against hand-computed cases."""

from __future__ import annotations

import pytest

from taxonlens.errors import TaxonNotFoundError
from taxonlens.evaluate import (
    Backoff,
    Severity,
    backoff,
    hca,
    hierarchical_report,
    leaf_accuracy,
    mistake_severity,
    per_level_accuracy,
    por,
    s_por,
    select_levels,
    tor,
    valid_path_pct,
)
from taxonlens.taxonomy import Taxonomy

# scored lists: right (case differs); wrong in the middle; stops early; one scored level
TRUTHS = [["a", "b", "c"], ["a", "b", "c"], ["a", "b"], ["x"]]
PREDS = [["A", "b", "C"], ["a", "z", "c"], ["a"], ["x"]]

ROSA = ("plantae", "tracheophyta", "magnoliopsida", "rosa")
QUERCUS = ("plantae", "tracheophyta", "magnoliopsida", "quercus")
ALLIUM = ("plantae", "tracheophyta", "liliopsida", "allium")
CORVUS = ("animalia", "chordata", "aves", "corvus")


@pytest.fixture
def taxonomy() -> Taxonomy:
    return Taxonomy.from_paths([ROSA, QUERCUS, ALLIUM, CORVUS], ranks=("kingdom", "phylum", "class", "genus"))


def test_hca_needs_the_whole_list_with_its_length() -> None:
    assert hca(TRUTHS, PREDS) == 50.0
    assert hca([["a", "b"]], [["a", "b", "c"]]) == 0.0


def test_leaf_accuracy_compares_last_names() -> None:
    assert leaf_accuracy(TRUTHS, PREDS) == 75.0  # the early stop ends at "a", not "b"
    assert leaf_accuracy([["a", "b"], ["a", "b"]], [["q", "b"], []]) == 50.0  # right leaf, wrong parent; empty


def test_por() -> None:
    assert por(TRUTHS, PREDS) == pytest.approx((3 / 3 + 2 / 3 + 1 / 2 + 1) / 4 * 100)


def test_s_por_counts_the_correct_prefix() -> None:
    assert s_por(TRUTHS, PREDS) == pytest.approx((3 / 3 + 1 / 3 + 1 / 2 + 1) / 4 * 100)
    assert s_por([["a", "b", "c", "d"]], [["x", "b", "c", "d"]]) == 0.0


def test_tor_counts_adjacent_correct_pairs() -> None:
    # 2/2 pairs, 0/2, 0/1 (the second level is missing), and the single-level record:
    # no pair, so 0 although correct, still counted in N (the reference's behaviour)
    assert tor(TRUTHS, PREDS) == 25.0
    assert tor([["a"]], [["a"]]) == 0.0
    assert tor([["a", "b", "c"]], [["a", "x", "c"]]) == 0.0
    assert tor([["a", "b", "c"]], [["a", "b", "x"]]) == 50.0


def test_per_level_accuracy_pools_records_that_have_the_level() -> None:
    assert per_level_accuracy(TRUTHS, PREDS) == pytest.approx({0: 100.0, 1: 100 / 3, 2: 100.0})
    # positions only a prediction reaches are not reported
    assert per_level_accuracy([["a"]], [["a", "b", "c"]]) == {0: 100.0}


def test_names_are_lowercased_and_nothing_else() -> None:
    truths = [["Tracheophyta", "rosa"]] * 3
    preds = [["tracheophyta", "ROSA"], [" tracheophyta", "rosa"], ["tracheophyta", "rosa_canina"]]
    assert hca(truths, preds) == pytest.approx(100 / 3)
    assert per_level_accuracy(truths, preds) == pytest.approx({0: 200 / 3, 1: 200 / 3})


def test_longer_and_empty_predictions() -> None:
    truths = [["a", "b"], ["a", "b"]]
    longer = [["a", "b", "c"], ["a", "b", "c"]]
    assert (hca(truths, longer), leaf_accuracy(truths, longer)) == (0.0, 0.0)
    assert (por(truths, longer), s_por(truths, longer), tor(truths, longer)) == (100.0, 100.0, 100.0)
    empty = [[], []]
    for metric in (hca, leaf_accuracy, por, s_por, tor):
        assert metric(truths, empty) == 0.0
    assert per_level_accuracy(truths, empty) == {0: 0.0, 1: 0.0}


@pytest.mark.parametrize(
    ("truths", "preds", "message"),
    [([["a"]], [], "1 truths but 0 predictions"), ([], [], "no records"), ([[]], [["a"]], "at least one")],
)
def test_unusable_input(truths: list, preds: list, message: str) -> None:
    for metric in (hca, leaf_accuracy, por, s_por, tor, per_level_accuracy):
        with pytest.raises(ValueError, match=message):
            metric(truths, preds)


def test_select_levels() -> None:
    assert select_levels(ROSA, [1, 2, 3]) == ["tracheophyta", "magnoliopsida", "rosa"]
    assert select_levels(("plantae", "tracheophyta"), [1, 3]) == ["tracheophyta"]
    assert select_levels(ROSA, [5]) == []


def test_valid_path_pct(taxonomy: Taxonomy) -> None:
    preds = [("plantae", "tracheophyta"), tuple(x.title() for x in ROSA), ("plantae", "chordata"), (),
             (" plantae",)]
    # a back-off is valid and case does not matter; a crossed path, an empty path and a padded name are not
    assert valid_path_pct(preds, taxonomy) == 40.0
    with pytest.raises(ValueError, match="no predictions"):
        valid_path_pct([], taxonomy)


def test_mistake_severity(taxonomy: Taxonomy) -> None:
    preds = [QUERCUS, ALLIUM, CORVUS, ROSA, ("plantae", "chordata"), (), ROSA[:3]]
    # quercus: 2 edges, LCA magnoliopsida (depth 3); allium: 4, tracheophyta (2); corvus: 8, root (0);
    # the genus-less back-off: 1, magnoliopsida (3); the right leaf, the invalid and the empty path are left out
    assert mistake_severity([ROSA] * len(preds), preds, taxonomy) == Severity(4, 15 / 4, 2.0)
    assert mistake_severity([ROSA], [ROSA], taxonomy) == Severity(0, None, None)
    with pytest.raises(TaxonNotFoundError, match="leaves the taxonomy"):
        mistake_severity([("plantae", "bryophyta")], [ROSA], taxonomy)


def test_backoff() -> None:
    truths = [ROSA] * 5 + [CORVUS]
    preds = [ROSA[:3], ALLIUM[:3], ("Plantae", "Tracheophyta"), ROSA, (), ("animalia", "chordata", "aves", "x", "y")]
    assert backoff(truths, preds) == Backoff(3, pytest.approx(200 / 3), pytest.approx({1: 100 / 3, 2: 200 / 3}))
    assert backoff([ROSA], [ROSA]) == Backoff(0, None, {})


def test_hierarchical_report(taxonomy: Taxonomy) -> None:
    truths = [ROSA, ROSA, ALLIUM, ("plantae",)]
    preds = [QUERCUS, ROSA[:3], ("Plantae", "tracheophyta", "liliopsida", "allium"), ("plantae",)]
    r = hierarchical_report(truths, preds, levels=[3, 1, 2], taxonomy=taxonomy)
    assert r.n == 3  # ("plantae",) has no scored level: left out, as the reference does
    scored_t = [select_levels(t, [1, 2, 3]) for t in truths[:3]]
    scored_p = [select_levels(p, [1, 2, 3]) for p in preds[:3]]
    assert (r.hca, r.acc_leaf, r.por, r.s_por, r.tor) == (
        hca(scored_t, scored_p), leaf_accuracy(scored_t, scored_p), por(scored_t, scored_p),
        s_por(scored_t, scored_p), tor(scored_t, scored_p))
    assert r.hca == pytest.approx(100 / 3)
    assert r.per_level == pytest.approx({1: 100.0, 2: 100.0, 3: 100 / 3})  # keyed by level index in the path
    assert r.valid_path_pct == 100.0
    assert r.severity == Severity(2, 1.5, 3.0)
    assert r.backoff == Backoff(1, 100.0, {2: 100.0})
    plain = hierarchical_report(truths, preds)
    assert plain.n == 4 and plain.per_level[0] == 100.0
    assert plain.valid_path_pct is None and plain.severity is None
    with pytest.raises(ValueError, match="no record has a level"):
        hierarchical_report(truths, preds, levels=[7])

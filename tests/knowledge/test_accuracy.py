"""Extraction accuracy: how answers match known values, and per-attribute figures by hand."""

import pytest

from taxonlens.data import Record
from taxonlens.errors import DataError
from taxonlens.knowledge import extraction_accuracy, normalise_value, values_match


@pytest.mark.parametrize(("answer", "truth", "attribute"), [
    ("pale red", "pale red", "body colour"),
    ("The body colour is Pale Red.", "pale red", "body colour"),
    ("It has five parts", "5", "number of parts"),
    ("light-blue", "light blue", "wing colour"),
    ("gray", "grey", "body colour"),
    ("the organism's pattern is striped", "striped", "pattern"),
])
def test_answers_that_state_the_truth_match(answer, truth, attribute):
    assert values_match(answer, truth, attribute)


@pytest.mark.parametrize(("answer", "truth", "attribute"), [
    ("red", "pale red", "body colour"),
    ("pale red", "red", "body colour"),
    ("stripes", "striped", "pattern"),
    ("red and blue", "red", "body colour"),
    ("", "red", "body colour"),
    ("6", "5", "number of parts"),
])
def test_answers_that_do_not_state_the_truth_do_not_match(answer, truth, attribute):
    assert not values_match(answer, truth, attribute)


def test_normalise_value_drops_fillers_and_the_attribute_name():
    assert normalise_value("The wing colour is olive-green!", "wing colour") == ("olive", "green")
    assert normalise_value("ten", "") == ("10",)


def test_extraction_accuracy_per_attribute_by_hand():
    records = [Record("a.png", ("A",), attributes={"colour": "red", "shape": "round", "description": "x"}),
               Record("b.png", ("B",), attributes={"colour": "blue"}),
               Record("c.png", ("C",), attributes={"colour": "green", "shape": "flat"})]
    rows = [{"image": "a.png", "attributes": {"colour": "red", "shape": "square", "size": "big"}},
            {"image": "b.png", "attributes": {"colour": "Blue.", "shape": "round"}},
            {"image": "c.png", "attributes": {"colour": "red", "shape": "flat"}},
            {"image": "not-in-manifest.png", "attributes": {"colour": "red"}}]
    scores = extraction_accuracy(rows, records)
    assert list(scores) == ["colour", "shape"]  # "size" has no known value
    assert scores["colour"] == {"n": 3, "correct": 2, "accuracy": pytest.approx(200 / 3)}
    assert scores["shape"] == {"n": 2, "correct": 1, "accuracy": 50.0}


def test_extraction_accuracy_needs_known_values():
    with pytest.raises(DataError, match="no known attribute values"):
        extraction_accuracy([{"image": "a.png", "attributes": {"colour": "red"}}], [Record("a.png", ("A",))])

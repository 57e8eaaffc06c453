"""Questions in the reference format, and answers read back whatever shape they take."""

from __future__ import annotations

import pytest

from taxonlens.recognize.answers import parse_answer, question_text

OPTIONS = ["stellaria", "stellaria media", "houstonia", "montia"]


def test_question_text_letters_the_options():
    q = question_text("genus", OPTIONS, organism="plant")
    assert q.splitlines() == [
        "Given the plant in the image, what is its taxonomic classification at the genus level?",
        "A. stellaria", "B. stellaria media", "C. houstonia", "D. montia",
        "Answer with the option's letter from the given choices directly."]
    with pytest.raises(ValueError, match="1 to 26 options"):
        question_text("genus", [])


@pytest.mark.parametrize(("text", "index", "rule"), [
    ("C", 2, "letter"), (" (b) ", 1, "letter"), ("B.", 1, "letter"), ("D)", 3, "letter"),
    ("Answer: A", 0, "letter"), ("option D", 3, "letter"), ("C. houstonia", 2, "letter"),
    ("[B]", 1, "letter"),
    ("Houstonia", 2, "name"), ("It is Stellaria media.", 1, "name"),  # the longest name wins
    ("stellaria!", 0, "name"), ("I think montia, clearly", 3, "name"),
    ("houstonnia", 2, "closest"),
    ("a", None, "none"),  # the English article is not option A
    ("E", None, "none"), ("no idea at all", None, "none"), ("", None, "none"),
])
def test_parse_answer(text, index, rule):
    assert parse_answer(text, OPTIONS) == (index, rule)


def test_letters_beyond_the_options_are_not_answers():
    assert parse_answer("C", ["x", "y"]).index is None

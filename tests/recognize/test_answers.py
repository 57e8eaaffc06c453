"""Questions in the reference format, and answers read back whatever shape they take."""

from __future__ import annotations

import pytest

from taxonlens.recognize.answers import exact_option, parse_answer, question_text

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
    ("stellaria media or stellaria", None, "none"),  # two options named: ambiguous
    ("houstonia, montia", None, "none"), ("pinus quercus alba acer betula", None, "none"),
    ("houstonnia", 2, "closest"),
    ("a", None, "none"),  # the English article is not option A
    ("E", None, "none"), ("no idea at all", None, "none"), ("", None, "none"),
])
def test_parse_answer(text, index, rule):
    assert parse_answer(text, OPTIONS) == (index, rule)


def test_letters_beyond_the_options_are_not_answers():
    assert parse_answer("C", ["x", "y"]).index is None


def test_listing_every_option_is_ambiguous_even_when_one_name_is_the_longest():
    trees = ["pinus", "quercus alba", "acer", "betula"]
    assert parse_answer("pinus quercus alba acer betula", trees) == (None, "none")
    assert parse_answer("Quercus alba!", trees) == (1, "name")


@pytest.mark.parametrize(("text", "index"), [
    ("C", 2), ("(b)", 1), ("Answer: A", 0), ("D.", 3),  # the letter forms parse_answer accepts
    ("B. stellaria media", 1), ("B) Stellaria  media.", 1),  # a letter followed by its own option's name
    ("Houstonia", 2), (" stellaria MEDIA. ", 1), ("stellaria", 0),  # the whole answer is one name
    ("B. houstonia", None),  # the letter of one option, the name of another
    ("It is Houstonia.", None), ("stellaria media or stellaria", None), ("houstonia montia", None),
    ("houstonnia", None), ("stellaria medi", None),  # near misses name nothing
    ("a", None), ("E", None), ("", None),
])
def test_exact_option_accepts_one_letter_or_exactly_one_name(text, index):
    assert exact_option(text, OPTIONS) == index

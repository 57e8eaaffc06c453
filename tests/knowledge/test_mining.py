"""Mining: attribute names from realistic LLM answers, from user files and from synthworld."""

import json

import pytest

from taxonlens.errors import DataError, TaxonlensError
from taxonlens.knowledge import (
    MinedAttributes,
    attributes_from_file,
    mine_with_lmm,
    mining_question,
    parse_attribute_list,
)

QWEN_STYLE = """Sure! Here are some visual attributes that help distinguish bird species:

1. **Bill shape**: conical, hooked, thin or long
2. **Wing colour** – the main colour of the wing feathers
3. Tail length (short, medium, long)
4. "Eye ring"
   - present
   - absent
5. Breast pattern, e.g. streaked or plain
6. bill shape
7. Wing color

These attributes can help you identify birds."""


@pytest.mark.parametrize(("answer", "expected"), [
    (QWEN_STYLE, ["bill shape", "wing colour", "tail length", "eye ring", "breast pattern"]),
    ("1) Crown colour\n2) Leg colour\n3) Crown Colour", ["crown colour", "leg colour"]),
    ("(1) leaf margin\n(2) leaf arrangement\n(3) flower colour", ["leaf margin", "leaf arrangement", "flower colour"]),
    ("- Cap shape\n* Gill spacing\n• Stem colour\n", ["cap shape", "gill spacing", "stem colour"]),
    ("Attributes: bill shape, wing colour; tail length and eye ring.",
     ["bill shape", "wing colour", "tail length", "eye ring"]),
    ("bill shape, wing bars or tail pattern", ["bill shape", "wing bars", "tail pattern"]),
    ('["Bill shape", "wing colour", "bill shape"]', ["bill shape", "wing colour"]),
    ("Here is a JSON list: [\"antenna length\", \"wing venation\"] as asked.", ["antenna length", "wing venation"]),
    ("Bill shape\nWing colour\nHope this helps!", ["bill shape", "wing colour"]),
    ("Certainly!\n\n1. ‘Petal number’.\n2. “Sepal shape”;", ["petal number", "sepal shape"]),
])
def test_parse_attribute_list_reads_llm_lists(answer, expected):
    assert parse_attribute_list(answer) == expected


@pytest.mark.parametrize("junk", [
    "",
    "Sure!",
    "I cannot tell which attributes are useful without more information about the birds.",
    "��abaceaerot liasseriformes Ranuc pinidaetebrate li",
    "1. 12345\n2. ???",
])
def test_parse_attribute_list_finds_no_name_in_junk(junk):
    assert parse_attribute_list(junk) == []


class Fixed:
    """Gives scripted answers, one per question, in turn."""

    def __init__(self, answers):
        self.answers, self.asked = list(answers), []

    def generate(self, images, questions, max_new_tokens=16, system=None):
        self.asked.append((len(images), list(questions), max_new_tokens))
        return [self.answers.pop(0) for _ in questions]


def test_mine_with_lmm_keeps_the_names_most_answers_give_in_one_batched_call():
    answerer = Fixed(["1. tail length\n2. bill shape", "- bill shape\n- wing colour", "bill shape, wing colour, crest"])
    mined = mine_with_lmm(answerer, "birds", images=[object()] * 3, n_attributes=3, max_new_tokens=99)
    assert mined == MinedAttributes("birds", ("bill shape", "wing colour", "tail length"), "lmm")
    assert len(answerer.asked) == 1
    n_images, questions, tokens = answerer.asked[0]
    assert n_images == 3 and tokens == 99 and questions == [mining_question("birds", 3)] * 3
    assert "birds" in questions[0] and "numbered list" in questions[0]


def test_mine_with_lmm_without_photos_shows_one_blank_picture_and_fails_clearly_on_junk():
    answerer = Fixed(["Sure! I can help with that."])
    with pytest.raises(TaxonlensError, match="named no attribute of birds.*Sure! I can help"):
        mine_with_lmm(answerer, "birds")
    assert answerer.asked[0][0] == 1


def test_mine_with_a_tiny_lmm_keeps_what_the_parser_reads_in_its_answer():
    from taxonlens.models.mllm import load_lmm

    lmm, raw = load_lmm("tiny-qwen2.5-vl", seed=0), []

    class Recording:
        def generate(self, *args, **kwargs):
            raw.extend(lmm.generate(*args, **kwargs))
            return raw

    try:
        mined = mine_with_lmm(Recording(), "birds", n_attributes=5, max_new_tokens=24)
    except TaxonlensError:  # random weights write random text: reported, not a crash
        assert len(raw) == 1 and parse_attribute_list(raw[0]) == []
    else:
        assert list(mined.attributes) == parse_attribute_list(raw[0])[:5] and mined.source == "lmm"


def test_attributes_from_text_and_json_files(tmp_path):
    text = tmp_path / "names.txt"
    text.write_text("# bird attributes\nbill shape\n\n  wing   colour \ntail length\n")
    assert attributes_from_file(text, "birds") == MinedAttributes(
        "birds", ("bill shape", "wing colour", "tail length"), "file")
    listed = tmp_path / "names.json"
    listed.write_text(json.dumps(["cap shape", "gill colour"]))
    assert attributes_from_file(listed, "fungi").attributes == ("cap shape", "gill colour")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("twice.txt", "bill shape\nwing colour\nBill Shape\n", "listed twice: Bill Shape"),
    ("empty.txt", "# nothing\n\n", "no attribute names"),
    ("bad.json", "[\"a\", ", "not valid JSON"),
    ("object.json", '{"attributes": 3}', "JSON list of attribute names"),
])
def test_bad_attribute_files_are_named_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        attributes_from_file(path, "birds")
    with pytest.raises(DataError, match="does not exist"):
        attributes_from_file(tmp_path / "missing.txt", "birds")


def test_mined_attributes_round_trip_and_bad_files(tmp_path):
    mined = MinedAttributes("birds", ("bill shape", "wing colour"), "lmm")
    path = mined.save(tmp_path / "mined.json")
    assert json.loads(path.read_text()) == {"super_category": "birds", "attributes": ["bill shape", "wing colour"],
                                            "source": "lmm"}
    assert MinedAttributes.load(path) == mined
    bad = tmp_path / "bad.json"
    for content in ('["bill shape"]', '{"super_category": "b", "attributes": [], "source": "lmm"}',
                    '{"super_category": "b", "attributes": ["x"], "source": "web"}', "{"):
        bad.write_text(content)
        with pytest.raises(DataError, match="attributes mine"):
            MinedAttributes.load(bad)

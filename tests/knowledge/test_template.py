"""The one description template: wording, agreement, and synthworld describing its photos with it."""

from taxonlens.data import read_manifest
from taxonlens.knowledge import DESCRIPTION, describe
from taxonlens.synthworld import SynthWorld, random_taxonomy


def test_template_names_every_value_in_order_with_agreement():
    attrs = {"bill shape": "short and conical", "wing bars": "two, white", "number of parts": "5",
             "antennae": "long", "iris": "red"}
    assert describe(attrs, "bird") == ("a bird whose bill shape is short and conical, wing bars are two, white, "
                                       "number of parts is 5, antennae are long and iris is red.")


def test_template_skips_the_description_and_empty_values():
    assert describe({"cap shape": "convex", "gill colour": " ", DESCRIPTION: "old text"}, "organism") == (
        "an organism whose cap shape is convex.")
    assert describe({}, "insect") == "an insect."


def test_synthworld_describes_its_photos_with_the_template(world_manifest):
    for record in read_manifest(world_manifest):
        values = {k: v for k, v in record.attributes.items() if k != DESCRIPTION}
        assert record.attributes[DESCRIPTION] == describe(values)
        assert values["body plan"] in record.attributes[DESCRIPTION]
    world = SynthWorld.create(random_taxonomy(3, seed=1), 3, 1, 0.0, 16, seed=1)
    photo = world.photo(0, 0)
    assert photo.description == describe(photo.attributes)

"""Captions and zero-shot prompts of a taxon, exactly as documented in taxonlens.models.text."""

from __future__ import annotations

import random

import pytest

from taxonlens.models.text import (
    FIXED_TEXT_TYPES,
    TEXT_TYPES,
    label_prompts,
    openai_templates,
    taxon_name,
    taxon_text,
    taxonomic_name,
)

HOUSTONIA = ("Plantae", "Tracheophyta", "Magnoliopsida", "Gentianales", "Rubiaceae", "Houstonia",
             "Houstonia purpurea")
COMMON = "Venus' pride"
TAXONOMIC = "Plantae Tracheophyta Magnoliopsida Gentianales Rubiaceae Houstonia purpurea"


def test_text_types():
    assert TEXT_TYPES == ("taxonomic", "scientific", "common", "scientific+common", "taxonomic+common", "mixed")
    assert FIXED_TEXT_TYPES == TEXT_TYPES[:-1]


@pytest.mark.parametrize(("text_type", "common", "expected"), [
    ("taxonomic", COMMON, f"a photo of {TAXONOMIC}."),
    ("scientific", COMMON, "a photo of Houstonia purpurea."),
    ("common", COMMON, "a photo of Venus' pride."),
    ("common", None, "a photo of Houstonia purpurea."),
    ("scientific+common", COMMON, "a photo of Houstonia purpurea with common name Venus' pride."),
    ("scientific+common", None, "a photo of Houstonia purpurea."),
    ("taxonomic+common", COMMON, f"a photo of {TAXONOMIC} with common name Venus' pride."),
    ("taxonomic+common", None, f"a photo of {TAXONOMIC}."),
])
def test_caption_of_each_type(text_type, common, expected):
    assert taxon_text(HOUSTONIA, text_type, common) == expected
    assert taxon_name(HOUSTONIA, text_type, common) == expected.removeprefix("a photo of ").removesuffix(".")


def test_taxonomic_name_drops_only_a_repeated_genus():
    # a binomial under its genus contributes its epithet; the genus is written once
    assert taxonomic_name(HOUSTONIA) == TAXONOMIC
    assert taxonomic_name(("Rosa", "Rosa canina var. lutetiana")) == "Rosa canina var. lutetiana"
    # not a binomial of its parent: kept whole (ImageNet-style names, or a genus that is only a prefix)
    assert taxonomic_name(("animal", "dog", "golden retriever")) == "animal dog golden retriever"
    assert taxonomic_name(("Rosa", "Rosaceae")) == "Rosa Rosaceae"
    assert taxonomic_name(("Rosa", "Rosa")) == "Rosa Rosa"
    assert taxonomic_name(("Plantae",)) == "Plantae"
    assert taxonomic_name(HOUSTONIA[:6]) == "Plantae Tracheophyta Magnoliopsida Gentianales Rubiaceae Houstonia"


def test_mixed_draws_several_types_reproducibly():
    fixed = {taxon_text(HOUSTONIA, t, COMMON): t for t in FIXED_TEXT_TYPES}
    assert len(fixed) == 5  # with a common name every type reads differently
    draws = [taxon_text(HOUSTONIA, "mixed", COMMON, rng=random.Random(7)) for _ in range(3)]
    assert len(set(draws)) == 1  # a fresh generator with the same seed draws the same
    rng = random.Random(0)
    texts = [taxon_text(HOUSTONIA, "mixed", COMMON, rng=rng) for _ in range(200)]
    assert set(texts) <= set(fixed)
    assert {fixed[t] for t in texts} == set(FIXED_TEXT_TYPES)  # 200 draws reach every type
    rng = random.Random(0)
    assert [taxon_text(HOUSTONIA, "mixed", COMMON, rng=rng) for _ in range(200)] == texts


def test_label_prompts():
    assert label_prompts(HOUSTONIA, "scientific") == ["a photo of Houstonia purpurea."]
    assert label_prompts(HOUSTONIA, "common", COMMON, templates="photo") == ["a photo of Venus' pride."]
    prompts = label_prompts(HOUSTONIA, "scientific", templates="openai")
    assert len(openai_templates()) == 80 and len(prompts) == 80 and len(set(prompts)) == 80
    assert prompts[0] == "a bad photo of a Houstonia purpurea."
    assert all("Houstonia purpurea" in p for p in prompts)
    assert label_prompts(HOUSTONIA, "taxonomic", templates="openai")[0] == f"a bad photo of a {TAXONOMIC}."


def test_errors():
    with pytest.raises(ValueError, match="unknown text type 'latin'"):
        taxon_text(HOUSTONIA, "latin")
    with pytest.raises(ValueError, match="unknown text type"):
        taxon_name(HOUSTONIA, "mixed")  # mixed is resolved by taxon_text, not a name of its own
    with pytest.raises(ValueError, match="fixed text type"):
        label_prompts(HOUSTONIA, "mixed")
    with pytest.raises(ValueError, match="unknown templates 'simple'"):
        label_prompts(HOUSTONIA, "scientific", templates="simple")
    with pytest.raises(ValueError, match="unknown text type"):
        label_prompts(HOUSTONIA, "vernacular")

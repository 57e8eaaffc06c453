"""Text for a taxon, as in BioCLIP's training captions, and zero-shot templates.

Text types:

- ``taxonomic``: "a photo of Plantae Tracheophyta Magnoliopsida Gentianales Rubiaceae Houstonia purpurea."
  (a binomial leaf under its genus contributes only its epithet, so the genus is not repeated);
- ``scientific``: "a photo of Houstonia purpurea.";
- ``common``: "a photo of Venus' pride." (the scientific name when no common name is known);
- ``scientific+common`` / ``taxonomic+common``: the scientific or taxonomic text
  followed by " with common name {common}.";
- ``mixed``: one of the above drawn at random per sample (BioCLIP draws per batch).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from enum import nonmember
from typing import NoReturn

from taxonlens.choices import Choice
from taxonlens.errors import ChoiceError


class LabelTextType(Choice):
    """How a taxon is written as label text (a fixed text type; see the module docstring)."""

    what = nonmember("text type")
    taxonomic = "taxonomic"
    scientific = "scientific"
    common = "common"
    scientific_common = "scientific+common"
    taxonomic_common = "taxonomic+common"

    @classmethod
    def _missing_(cls, value: object) -> NoReturn:
        if value == "mixed":
            raise ChoiceError(f"unknown text type 'mixed' for labels: mixed is for training; label embeddings "
                              f"need a fixed text type, one of {', '.join(cls)}")
        return super()._missing_(value)


class TextType(Choice):
    """How a training caption writes its taxon: a fixed :class:`LabelTextType`, or ``mixed`` (one
    drawn at random per sample)."""

    what = nonmember("text type")
    taxonomic = "taxonomic"
    scientific = "scientific"
    common = "common"
    scientific_common = "scientific+common"
    taxonomic_common = "taxonomic+common"
    mixed = "mixed"


class PromptTemplates(Choice):
    """The prompts averaged into a label embedding: ``photo`` (one caption) or ``openai`` (80 templates)."""

    what = nonmember("templates")
    photo = "photo"
    openai = "openai"


#: training text types (:class:`TextType`) and label text types (:class:`LabelTextType`), as tuples
TEXT_TYPES = tuple(TextType)
FIXED_TEXT_TYPES = tuple(LabelTextType)


def openai_templates() -> tuple:
    """The 80 prompt templates of OpenAI's ImageNet zero-shot evaluation, as callables ``f(name) -> str``
    (open_clip's; imported on first use, as open_clip takes seconds to import)."""
    import open_clip

    return tuple(open_clip.OPENAI_IMAGENET_TEMPLATES)


def taxonomic_name(path: Sequence[str]) -> str:
    """The names of a path joined by spaces; a binomial leaf ("Houstonia purpurea") under
    its genus ("Houstonia") adds only its epithet."""
    names = list(path)
    if len(names) >= 2 and names[-1].startswith(names[-2] + " "):
        names[-1] = names[-1][len(names[-2]) + 1 :]
    return " ".join(names)


def taxon_name(path: Sequence[str], text_type: str, common_name: str | None = None) -> str:
    """The name part of a caption (no "a photo of"), used inside templates; ``text_type`` is a
    :class:`LabelTextType`."""
    text_type = LabelTextType(text_type)
    scientific = path[-1]
    if text_type == "taxonomic":
        return taxonomic_name(path)
    if text_type == "scientific":
        return scientific
    if text_type == "common":
        return common_name or scientific
    if text_type == "scientific+common":
        return f"{scientific} with common name {common_name}" if common_name else scientific
    tax = taxonomic_name(path)  # taxonomic+common
    return f"{tax} with common name {common_name}" if common_name else tax


def taxon_text(path: Sequence[str], text_type: str, common_name: str | None = None,
               rng: random.Random | None = None) -> str:
    """A training caption, "a photo of {name}.", for a taxon's name path.

    ``mixed`` draws a fixed type with ``rng`` (a :class:`random.Random`) per call.
    """
    if text_type == "mixed":
        text_type = (rng or random).choice(FIXED_TEXT_TYPES)
    return f"a photo of {taxon_name(path, text_type, common_name)}."


def label_prompts(path: Sequence[str], text_type: str, common_name: str | None = None,
                  templates: str = "photo") -> list[str]:
    """Prompts whose embeddings are averaged into one label embedding.

    Args:
        templates: ``photo`` (the single BioCLIP caption "a photo of {name}.") or
            ``openai`` (the 80 ImageNet templates, as BioCLIP's zero-shot evaluation).
    """
    name = taxon_name(path, text_type, common_name)  # a fixed text type: not mixed
    if PromptTemplates(templates) == PromptTemplates.photo:
        return [f"a photo of {name}."]
    return [t(name) for t in openai_templates()]

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

import open_clip

TEXT_TYPES = ("taxonomic", "scientific", "common", "scientific+common", "taxonomic+common", "mixed")
FIXED_TEXT_TYPES = TEXT_TYPES[:-1]
#: The 80 prompt templates of OpenAI's ImageNet zero-shot evaluation, as callables ``f(name) -> str``.
OPENAI_TEMPLATES = tuple(open_clip.OPENAI_IMAGENET_TEMPLATES)


def taxonomic_name(path: Sequence[str]) -> str:
    """The names of a path joined by spaces; a binomial leaf ("Houstonia purpurea") under
    its genus ("Houstonia") adds only its epithet."""
    names = list(path)
    if len(names) >= 2 and names[-1].startswith(names[-2] + " "):
        names[-1] = names[-1][len(names[-2]) + 1 :]
    return " ".join(names)


def taxon_name(path: Sequence[str], text_type: str, common_name: str | None = None) -> str:
    """The name part of a caption (no "a photo of"), used inside templates."""
    scientific = path[-1]
    if text_type == "taxonomic":
        return taxonomic_name(path)
    if text_type == "scientific":
        return scientific
    if text_type == "common":
        return common_name or scientific
    if text_type == "scientific+common":
        return f"{scientific} with common name {common_name}" if common_name else scientific
    if text_type == "taxonomic+common":
        tax = taxonomic_name(path)
        return f"{tax} with common name {common_name}" if common_name else tax
    raise ValueError(f"unknown text type {text_type!r}; choose one of {', '.join(TEXT_TYPES)}")


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
    if text_type == "mixed":
        raise ValueError("label embeddings need a fixed text type, not 'mixed'")
    name = taxon_name(path, text_type, common_name)
    if templates == "photo":
        return [f"a photo of {name}."]
    if templates == "openai":
        return [t(name) for t in OPENAI_TEMPLATES]
    raise ValueError(f"unknown templates {templates!r}; use 'photo' or 'openai'")

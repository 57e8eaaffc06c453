"""Heritable visual traits: what each rank of the tree controls.

A *genome* is one :class:`TraitValue` per trait of :data:`TRAITS`, ordered from
coarse (body plan, set by the first rank) to fine (markings, set by the leaf
rank). Each rank owns a contiguous block of traits; a node draws the traits
its rank owns from a random generator seeded by its own path, and inherits the
others from its parent. So siblings share everything their parent fixed and
differ in the traits of their own rank, and a held-out species still shows its
genus, family, ... traits.

Trees deeper than the number of traits (ImageNet's 12 levels) let a level that
owns no trait *refine* one: it keeps the category and perturbs the continuous
parameters, so its children still differ, by less. A leaf above the deepest
level draws every trait below its own block.
"""

from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass

import numpy as np

from taxonlens.knowledge.mining import MinedAttributes
from taxonlens.taxonomy import Taxonomy


@dataclass(frozen=True)
class Trait:
    """One heritable factor: a category (or none) plus continuous parameters in [0, 1).

    Attributes:
        name: the attribute name shown to users and models ("body plan").
        categories: names of the categories; one entry for a purely continuous trait.
        n_params: number of continuous parameters.
    """

    name: str
    categories: tuple[str, ...]
    n_params: int


HUES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "azure", "blue", "violet", "purple", "magenta")

TRAITS: tuple[Trait, ...] = (
    Trait("body plan", ("radial", "elongated", "star", "branching", "lobed", "fan"), 2),
    Trait("body colour", ("hue",), 2),  # hue, lightness
    Trait("pattern", ("plain", "striped", "spotted", "ringed", "checkered", "banded"), 2),  # frequency, angle
    Trait("number of parts", ("count",), 1),
    Trait("proportions", ("shape",), 2),  # aspect, part length
    Trait("pattern colour", ("hue",), 2),  # hue offset, lightness
    Trait("markings", ("tip dots", "eye spot", "edge band", "centre bar", "paired spots"), 3),  # hue, size, place
)
TRAIT_NAMES: tuple[str, ...] = tuple(t.name for t in TRAITS)
MIN_PARTS, MAX_PARTS = 3, 8
REFINE_SCALE = 0.12


def synthworld_attributes(super_category: str = "organism") -> MinedAttributes:
    """synthworld's own factor names (:data:`TRAIT_NAMES`) as mined attribute names, whose values
    as each photo shows them every synthworld manifest record carries (those a photo hides absent:
    :func:`~taxonlens.synthworld.observe.observe`)."""
    return MinedAttributes(super_category, tuple(TRAIT_NAMES), "synthworld")


@dataclass(frozen=True)
class TraitValue:
    """The value of one trait: category index and parameters, shape ``[n_params]`` in [0, 1)."""

    category: int
    params: tuple[float, ...]


Genome = tuple[TraitValue, ...]


def stable_seed(seed: int, *parts: str) -> int:
    """A 64-bit seed from ``seed`` and strings, stable across runs and Python versions."""
    h = hashlib.blake2b((f"{seed}\x1f" + "\x1f".join(parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def draw(trait: Trait, rng: np.random.Generator) -> TraitValue:
    """A fresh value of ``trait``."""
    return TraitValue(int(rng.integers(len(trait.categories))), tuple(float(x) for x in rng.random(trait.n_params)))


def refine(value: TraitValue, rng: np.random.Generator) -> TraitValue:
    """``value`` with the same category and each parameter moved by up to
    :data:`REFINE_SCALE` (wrapped into [0, 1))."""
    moved = (np.asarray(value.params) + rng.uniform(-REFINE_SCALE, REFINE_SCALE, len(value.params))) % 1.0
    return TraitValue(value.category, tuple(float(x) for x in moved))


def trait_blocks(max_depth: int, n_traits: int = len(TRAITS)) -> list[tuple[int, int]]:
    """``[start, end)`` trait indices owned by each depth 1..max_depth.

    Trait ``k`` belongs to depth ``k * max_depth // n_traits + 1``, so the first rank
    always owns the body plan, a 7-rank tree gives each rank one trait, a shallower
    tree gives a rank several, and a deeper one leaves some ranks an empty block;
    those ranks refine trait ``start - 1``, the finest one fixed above them."""
    owner = [k * max_depth // n_traits + 1 for k in range(n_traits)]
    return [(sum(o < d for o in owner), sum(o <= d for o in owner)) for d in range(1, max_depth + 1)]


def assign_genomes(taxonomy: Taxonomy, seed: int) -> list[Genome]:
    """The genome of every leaf of ``taxonomy``, in leaf order.

    Deterministic in ``seed`` and each node's name path, so the same species gets
    the same look in any world built from any subset of the same taxonomy.
    """
    blocks = trait_blocks(taxonomy.max_depth)
    memo: dict[int, list[TraitValue | None]] = {0: [None] * len(TRAITS)}

    def genome_of(node: int) -> list[TraitValue | None]:
        if node in memo:
            return memo[node]
        inherited = list(genome_of(int(taxonomy.parent[node])))
        d = int(taxonomy.depth[node])
        rng = np.random.default_rng(stable_seed(seed, *taxonomy.path_names(node)))
        start, end = blocks[d - 1]
        if start == end:  # this level owns no trait: it refines the finest trait fixed above it
            inherited[start - 1] = refine(inherited[start - 1], rng)  # type: ignore[arg-type]
        for k in range(start, end):
            inherited[k] = draw(TRAITS[k], rng)
        memo[node] = inherited
        return inherited

    genomes: list[Genome] = []
    for leaf in taxonomy.leaves:
        values = list(genome_of(int(leaf)))
        rng = np.random.default_rng(stable_seed(seed, "leaf", *taxonomy.path_names(int(leaf))))
        for k, v in enumerate(values):  # a shallow leaf draws every finer trait itself
            if v is None:
                values[k] = draw(TRAITS[k], rng)
        genomes.append(tuple(values))  # type: ignore[arg-type]
    return genomes


def hue_name(hue: float) -> str:
    """Colour word for a hue in [0, 1) (any real hue: it wraps)."""
    return HUES[round(hue * len(HUES)) % len(HUES)]


def lightness_word(x: float) -> str:
    """``pale `` / ``dark `` / nothing for a lightness parameter ``x`` in [0, 1)."""
    return "pale " if x > 0.66 else "dark " if x < 0.33 else ""


def hls_rgb(hue: float, lightness: float, saturation: float) -> np.ndarray:
    """An RGB colour, float32 ``[3]`` in 0..255, from HLS values in [0, 1]."""
    return np.asarray(colorsys.hls_to_rgb(hue % 1.0, lightness, saturation), dtype=np.float32) * 255.0


@dataclass(frozen=True)
class Tone:
    """How a colour trait is painted and named.

    The trait's hue and lightness parameter ``p`` paint HLS lightness ``low + span * p`` at
    ``saturation``; the colour word is the hue's (:func:`hue_name`), after
    :func:`lightness_word` of ``p`` when the trait has a lightness (``span > 0``).
    """

    low: float
    span: float
    saturation: float

    def rgb(self, hue: float, p: float) -> np.ndarray:
        """The painted colour, float32 ``[3]`` in 0..255."""
        return hls_rgb(hue, self.low + self.span * p, self.saturation)

    def word(self, hue: float, p: float) -> str:
        """The colour word of hue ``hue`` and lightness parameter ``p``."""
        return (lightness_word(p) if self.span else "") + hue_name(hue)

    def level(self, lightness: float) -> float:
        """The lightness parameter that paints HLS ``lightness`` (inverse of :meth:`rgb`'s)."""
        return (lightness - self.low) / self.span if self.span else 0.0


BODY_TONE = Tone(0.3, 0.4, 0.75)
PATTERN_TONE = Tone(0.2, 0.6, 0.8)
MARK_TONE = Tone(0.5, 0.0, 1.0)


def marking_word(kind: str, size: float) -> str:
    """The markings' value: their kind after a size word for a size parameter in the lower or
    upper third (``small`` / ``large`` spots and dots, ``thin`` / ``broad`` bands and bars)."""
    small, large = ("thin ", "broad ") if kind in ("edge band", "centre bar") else ("small ", "large ")
    return (small if size < 0.33 else large if size > 0.66 else "") + kind


def attributes(genome: Genome) -> dict[str, str]:
    """The species' true attributes (name -> value), as a clean photo shows them.

    A photo's own record carries what that photo shows
    (:func:`~taxonlens.synthworld.observe.observe`): hidden parts left out, colours as lit,
    counts as counted.
    """
    plan, body, pattern, parts, prop, pcol, marks = genome
    aspect = prop.params[0]
    return {
        "body plan": TRAITS[0].categories[plan.category],
        "body colour": BODY_TONE.word(*body.params),
        "pattern": TRAITS[2].categories[pattern.category],
        "number of parts": str(n_parts(parts)),
        "proportions": "slender" if aspect < 0.33 else "stout" if aspect > 0.66 else "balanced",
        "pattern colour": PATTERN_TONE.word(secondary_hue(body, pcol), pcol.params[1]),
        "markings": marking_word(TRAITS[6].categories[marks.category], marks.params[1]),
        "marking colour": MARK_TONE.word(marks.params[0], 0.0),
    }


def n_parts(value: TraitValue) -> int:
    """The number of parts a "number of parts" value encodes."""
    return MIN_PARTS + int(value.params[0] * (MAX_PARTS - MIN_PARTS + 1))


def secondary_hue(body: TraitValue, pattern_colour: TraitValue) -> float:
    """Hue of the pattern: the body hue turned by 90 to 270 degrees, so it always contrasts."""
    return (body.params[0] + 0.25 + 0.5 * pattern_colour.params[0]) % 1.0

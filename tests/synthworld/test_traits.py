"""Heritable traits: siblings share what their parent fixed and differ in their own rank's trait."""

import itertools

import numpy as np
import pytest

from taxonlens.synthworld import describe
from taxonlens.synthworld.traits import (
    REFINE_SCALE,
    TRAIT_NAMES,
    TRAITS,
    assign_genomes,
    attributes,
    marking_word,
    synthworld_attributes,
    trait_blocks,
)
from taxonlens.taxonomy import Taxonomy, load_taxonomy


def test_trait_blocks_partition_the_traits():
    for depth in range(1, 15):
        blocks = trait_blocks(depth)
        assert len(blocks) == depth
        owned = [k for s, e in blocks for k in range(s, e)]
        assert owned == list(range(len(TRAITS)))  # each trait owned once, coarse to fine
    assert trait_blocks(7) == [(k, k + 1) for k in range(7)]


def _siblings_by_depth(tax: Taxonomy):
    """Pairs of leaves whose paths first differ at each depth."""
    pairs: dict[int, list[tuple[int, int]]] = {}
    paths = tax.leaf_paths()
    for i, j in itertools.combinations(range(tax.n_leaves), 2):
        d = next(k for k, (a, b) in enumerate(zip(paths[i], paths[j])) if a != b)
        pairs.setdefault(d, []).append((i, j))
    return pairs


def test_leaves_share_traits_above_their_split_and_differ_at_it():
    tax = Taxonomy.from_paths(
        [("A", "P1", "C1", "O1", "F1", "G1", s) for s in ("s1", "s2", "s3")]
        + [("A", "P1", "C1", "O1", "F1", "G2", "s4"), ("A", "P1", "C1", "O1", "F2", "G3", "s5"),
           ("A", "P2", "C2", "O2", "F3", "G4", "s6"), ("B", "P3", "C3", "O3", "F4", "G5", "s7")]
    )
    genomes = assign_genomes(tax, seed=3)
    for depth, pairs in _siblings_by_depth(tax).items():
        for i, j in pairs:
            # traits of ranks above the split are inherited unchanged
            assert genomes[i][:depth] == genomes[j][:depth]
            # the trait of the rank where they split is drawn independently
            assert genomes[i][depth] != genomes[j][depth]


def test_genomes_are_deterministic_and_independent_of_the_subset(builtin_taxonomies):
    tax = load_taxonomy(builtin_taxonomies / "inat21_plantae.json")
    full = assign_genomes(tax, seed=0)
    sub = tax.subset([5, 17, 400])
    assert assign_genomes(sub, seed=0) == [full[5], full[17], full[400]]
    assert assign_genomes(sub, seed=1) != [full[5], full[17], full[400]]


def test_variable_depth_tree_refines_and_fills_shallow_leaves(builtin_taxonomies):
    tax = load_taxonomy(builtin_taxonomies / "imagenet_animal.json")
    assert trait_blocks(12)[2] == (2, 2)  # level 3 of 12 owns no trait: it refines trait 1
    genomes = assign_genomes(tax, seed=0)
    assert all(len(g) == len(TRAITS) and all(v is not None for v in g) for g in genomes)
    assert len(set(genomes)) == tax.n_leaves  # every leaf looks different, even siblings at depth 12
    level3 = tax.nodes_at_rank(3)
    checked = 0
    for a, b in itertools.combinations(level3, 2):
        if tax.parent[a] != tax.parent[b]:
            continue
        ga, gb = genomes[tax.leaves_under(a)[0]], genomes[tax.leaves_under(b)[0]]
        assert ga[0] == gb[0]  # the body plan of their common level-2 parent
        assert ga[1].category == gb[1].category and ga[1].params != gb[1].params  # refined, not redrawn
        diff = np.abs(np.subtract(ga[1].params, gb[1].params))
        assert (np.minimum(diff, 1 - diff) <= 2 * REFINE_SCALE + 1e-9).all()
        checked += 1
    assert checked >= 10


def test_attributes_cover_every_trait_and_describe_mentions_them():
    tax = Taxonomy.from_paths([("A", "B", "C", "D", "E", "F", "G")])
    attrs = attributes(assign_genomes(tax, 0)[0])
    assert set(TRAIT_NAMES) - {"proportions"} <= set(attrs) and "marking colour" in attrs
    assert 3 <= int(attrs["number of parts"]) <= 8
    assert attrs["markings"].endswith(TRAITS[6].categories[assign_genomes(tax, 0)[0][6].category])
    assert [marking_word(k, s) for k, s in (("eye spot", 0.1), ("eye spot", 0.5), ("edge band", 0.9))] == [
        "small eye spot", "eye spot", "broad edge band"]
    text = describe(attrs)
    for key in ("body plan", "markings", "number of parts"):
        assert attrs[key] in text


@pytest.mark.parametrize("seed", [0, 1])
def test_category_draws_cover_all_values(seed):
    tax = Taxonomy.from_paths([("K", *(f"{r}{i}" for r in "PCOFGS")) for i in range(300)])
    genomes = assign_genomes(tax, seed)
    for k, trait in enumerate(TRAITS):
        cats = np.bincount([g[k].category for g in genomes], minlength=len(trait.categories))
        if k >= 1:  # traits below the single kingdom vary across the 300 phyla
            assert (cats > 0).all(), trait.name


def test_synthworld_attributes_are_its_factor_names():
    mined = synthworld_attributes()
    assert mined.attributes == TRAIT_NAMES and mined.source == "synthworld"

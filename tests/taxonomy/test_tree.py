"""Taxonomy structure and queries, on hand-made trees and on the real taxonomies."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from taxonlens.errors import AmbiguousTaxonError, TaxonNotFoundError, TaxonomyError
from taxonlens.taxonomy import ROOT, STANDARD_RANKS, Taxonomy, default_ranks, load_taxonomy

RANKS3 = ("kingdom", "genus", "species")
SMALL_PATHS = [
    ("Plantae", "Rosa", "Rosa canina"),
    ("Plantae", "Rosa", "Rosa rugosa"),
    ("Plantae", "Bellis", "Bellis perennis"),
    ("Animalia", "Vulpes", "Vulpes vulpes"),
]
REAL_FILES = ["inat21_plantae.json", "inat21_animalia.json", "imagenet_animal.json"]


@pytest.fixture
def small() -> Taxonomy:
    return Taxonomy.from_paths(SMALL_PATHS, ranks=RANKS3)


def _paths(builtin_taxonomies: Path, name: str) -> list[tuple[str, ...]]:
    return [tuple(p) for p in json.loads((builtin_taxonomies / name).read_text()).values()]


@pytest.fixture(scope="module")
def plantae(builtin_taxonomies: Path) -> Taxonomy:
    return load_taxonomy(builtin_taxonomies / "inat21_plantae.json")


@pytest.fixture(scope="module")
def imagenet(builtin_taxonomies: Path) -> Taxonomy:
    return load_taxonomy(builtin_taxonomies / "imagenet_animal.json")


# ---------------------------------------------------------------- real files
@pytest.mark.parametrize("name", REAL_FILES)
def test_counts_per_rank_match_the_file(builtin_taxonomies: Path, name: str) -> None:
    paths = _paths(builtin_taxonomies, name)
    tax = load_taxonomy(builtin_taxonomies / name)
    depth = max(len(p) for p in paths)
    expected = [len({p[:d] for p in paths if len(p) >= d}) for d in range(1, depth + 1)]

    assert tax.max_depth == depth
    assert [len(tax.nodes_at_rank(d)) for d in range(1, depth + 1)] == expected
    assert list(tax.summary()["taxa_per_rank"].values()) == expected
    assert len(tax) - 1 == sum(expected)
    assert tax.n_leaves == len(paths)
    assert tax.leaf_paths() == paths


def test_real_rank_names(plantae: Taxonomy, imagenet: Taxonomy) -> None:
    assert plantae.ranks == STANDARD_RANKS
    assert imagenet.ranks == tuple(f"level{k}" for k in range(1, 13))
    depths = imagenet.depth[imagenet.leaves]
    assert (depths.min(), depths.max()) == (4, 12)  # the README's "4 to 12 levels"


# ---------------------------------------------------------------- structure
def test_ids_paths_and_ancestors(small: Taxonomy) -> None:
    canina = small.node_of_path(SMALL_PATHS[0])
    rosa, plantae = small.parent[canina], small.parent[small.parent[canina]]
    assert small.names[ROOT] == "" and small.parent[ROOT] == -1 and small.depth[ROOT] == 0
    assert small.path(canina) == (plantae, rosa, canina)
    assert small.path_names(canina) == SMALL_PATHS[0]
    assert small.ancestors(canina) == (rosa, plantae)
    assert small.path(ROOT) == () and small.ancestors(plantae) == ()
    assert [int(small.depth[n]) for n in (plantae, rosa, canina)] == [1, 2, 3]
    assert len(small) == 1 + 2 + 3 + 4
    assert small.n_leaves == 4


def test_children_and_leaf_nodes(small: Taxonomy) -> None:
    plantae = small.find("Plantae")
    kids = [small.names[c] for c in small.children(plantae)]
    assert kids == ["Rosa", "Bellis"]
    assert [small.names[c] for c in small.children(ROOT)] == ["Plantae", "Animalia"]
    canina = small.find("Rosa canina")
    assert small.children(canina).size == 0
    assert small.is_leaf_node(canina) and not small.is_leaf_node(plantae)


def test_leaves_under(small: Taxonomy) -> None:
    assert small.leaves_under(small.find("Plantae")).tolist() == [0, 1, 2]
    assert small.leaves_under(small.find("Rosa")).tolist() == [0, 1]
    assert small.leaves_under(small.find("Vulpes vulpes")).tolist() == [3]
    assert small.leaves_under(ROOT).tolist() == [0, 1, 2, 3]


def test_leaves_under_every_imagenet_node(imagenet: Taxonomy, builtin_taxonomies: Path) -> None:
    paths = _paths(builtin_taxonomies, "imagenet_animal.json")
    for node in range(1, len(imagenet)):
        prefix = imagenet.path_names(node)
        expected = [i for i, p in enumerate(paths) if p[: len(prefix)] == prefix]
        assert imagenet.leaves_under(node).tolist() == expected, prefix


def test_nodes_at_rank_by_name_or_depth(small: Taxonomy) -> None:
    genera = [small.names[n] for n in small.nodes_at_rank("genus")]
    assert genera == ["Rosa", "Bellis", "Vulpes"]
    assert small.nodes_at_rank("Genus").tolist() == small.nodes_at_rank(2).tolist()
    with pytest.raises(TaxonNotFoundError, match=r"unknown rank 'family'.*\['kingdom', 'genus', 'species'\]"):
        small.nodes_at_rank("family")
    with pytest.raises(TaxonNotFoundError, match="outside 1..3"):
        small.nodes_at_rank(4)


# ---------------------------------------------------------------- relations
def test_lca_and_distance_on_a_small_tree(small: Taxonomy) -> None:
    canina, rugosa, bellis, vulpes = (small.node_of_path(p) for p in SMALL_PATHS)
    rosa, plantae = small.find("Rosa"), small.find("Plantae")
    assert small.lca(canina, rugosa) == rosa and small.distance(canina, rugosa) == 2
    assert small.lca(canina, bellis) == plantae and small.distance(canina, bellis) == 4
    assert small.lca(canina, vulpes) == ROOT and small.distance(canina, vulpes) == 6
    assert small.lca(canina, rosa) == rosa and small.distance(canina, rosa) == 1
    assert small.lca(canina, canina) == canina and small.distance(canina, canina) == 0
    assert small.lca(ROOT, canina) == ROOT and small.distance(ROOT, canina) == 3
    a, b = np.array([canina, canina, bellis]), np.array([rugosa, vulpes, bellis])
    assert small.lca(a, b).tolist() == [rosa, ROOT, bellis]
    assert small.distance(a, b).tolist() == [2, 6, 0]


def test_imagenet_variable_depth_lca(imagenet: Taxonomy) -> None:
    king_crab, crayfish = imagenet.find("king crab"), imagenet.find("crayfish")
    assert imagenet.depth[king_crab] == 7 and imagenet.depth[crayfish] == 6
    assert imagenet.names[imagenet.lca(king_crab, crayfish)] == "decapod crustacean"
    assert imagenet.distance(king_crab, crayfish) == 3


def test_lca_matches_common_prefix_of_real_paths(imagenet: Taxonomy, builtin_taxonomies: Path) -> None:
    paths = _paths(builtin_taxonomies, "imagenet_animal.json")
    rng = random.Random(0)
    pairs = [(rng.randrange(len(paths)), rng.randrange(len(paths))) for _ in range(500)]
    a = imagenet.leaves[[i for i, _ in pairs]]
    b = imagenet.leaves[[j for _, j in pairs]]
    lca, dist = imagenet.lca(a, b), imagenet.distance(a, b)
    for k, (i, j) in enumerate(pairs):
        n = 0
        while n < min(len(paths[i]), len(paths[j])) and paths[i][n] == paths[j][n]:
            n += 1
        assert imagenet.path_names(int(lca[k])) == paths[i][:n]
        assert dist[k] == len(paths[i]) + len(paths[j]) - 2 * n


# ---------------------------------------------------------------- lookup
def test_find_is_case_insensitive_and_filters_by_rank(small: Taxonomy) -> None:
    assert small.names[small.find("  rosa CANINA ")] == "Rosa canina"
    assert small.find("Rosa", rank="genus") == small.find("rosa", rank=2)
    with pytest.raises(TaxonNotFoundError, match="no taxon named 'Rosa' at rank 'species'"):
        small.find("Rosa", rank="species")


def test_find_suggests_close_names(small: Taxonomy) -> None:
    with pytest.raises(TaxonNotFoundError, match="did you mean 'Rosa canina'") as e:
        small.find("Rosa canin")
    assert "'Vulpes vulpes'" not in str(e.value)
    with pytest.raises(TaxonNotFoundError) as e:
        small.find("Quercus robur")
    assert "did you mean" not in str(e.value)


def test_homonyms_across_kingdoms_are_distinct_nodes() -> None:
    tax = Taxonomy.from_paths(
        [("Plantae", "Dryas", "Dryas octopetala"), ("Animalia", "Dryas", "Dryas iulia")], ranks=RANKS3
    )
    plant = tax.node_of_path(("Plantae", "Dryas"))
    animal = tax.node_of_path(("Animalia", "Dryas"))
    assert plant != animal
    with pytest.raises(AmbiguousTaxonError, match="Plantae > Dryas; Animalia > Dryas") as e:
        tax.find("Dryas", rank="genus")
    assert sorted(e.value.candidates) == sorted([plant, animal])
    assert tax.find("Dryas", parent="animalia") == animal
    assert tax.find("Dryas", parent=tax.find("Plantae")) == plant
    with pytest.raises(TaxonNotFoundError, match="under 'Fungi'"):
        tax.find("Dryas", parent="Fungi")


def test_real_cross_kingdom_homonym(builtin_taxonomies: Path) -> None:
    paths = _paths(builtin_taxonomies, "inat21_plantae.json") + _paths(builtin_taxonomies, "inat21_animalia.json")
    tax = Taxonomy.from_paths(paths)
    genus_paths = {p[:6] for p in paths if p[5] == "Arenaria"}
    assert len(genus_paths) == 2  # a plant genus (sandworts) and a bird genus (turnstones)
    with pytest.raises(AmbiguousTaxonError) as e:
        tax.find("Arenaria", rank="genus")
    for p in genus_paths:
        assert " > ".join(p) in str(e.value)
        assert tax.find("Arenaria", rank="genus", parent=p[4]) == tax.node_of_path(p)


def test_node_of_path(small: Taxonomy) -> None:
    assert small.node_of_path(("PLANTAE", "rosa")) == small.find("Rosa")
    assert small.node_of_path(()) == ROOT
    with pytest.raises(TaxonNotFoundError, match="at level 2: no 'Vulpes' under 'Plantae'"):
        small.node_of_path(("Plantae", "Vulpes"))
    assert small.try_node_of_path(("Plantae", "Vulpes")) is None
    assert small.try_node_of_path(SMALL_PATHS[3]) == small.find("Vulpes vulpes")


# ---------------------------------------------------------------- marginals
def test_leaf_ancestor_matrix_shape_and_rows(imagenet: Taxonomy) -> None:
    m = imagenet.leaf_ancestor_matrix()
    assert m.shape == (imagenet.n_leaves, len(imagenet)) and m.dtype == np.float32
    assert np.asarray(m.sum(axis=1)).ravel().tolist() == imagenet.depth[imagenet.leaves].tolist()
    assert m[:, ROOT].nnz == 0
    king_crab = imagenet.leaf_index[imagenet.find("king crab")]
    assert set(m[king_crab].indices) == set(imagenet.path(imagenet.find("king crab")))


def test_marginals_equal_a_python_loop_on_real_plants(plantae: Taxonomy, builtin_taxonomies: Path) -> None:
    paths = _paths(builtin_taxonomies, "inat21_plantae.json")
    probs = np.random.default_rng(0).dirichlet(np.ones(len(paths)), size=3)
    marginals = np.asarray(probs @ plantae.leaf_ancestor_matrix())
    assert marginals.shape == (3, len(plantae))
    expected: dict[tuple[str, ...], np.ndarray] = {}
    for i, p in enumerate(paths):
        for d in range(1, len(p) + 1):
            expected[p[:d]] = expected.get(p[:d], 0.0) + probs[:, i]
    assert len(expected) == len(plantae) - 1
    for prefix, value in expected.items():
        np.testing.assert_allclose(marginals[:, plantae.node_of_path(prefix)], value, rtol=1e-5)
    for d in range(1, 8):  # every rank is a partition of the probability mass
        np.testing.assert_allclose(marginals[:, plantae.nodes_at_rank(d)].sum(axis=1), 1.0, rtol=1e-5)


def test_genus_only_label_marginals() -> None:
    tax = Taxonomy.from_paths(
        [("Plantae", "Rosa", "Rosa canina"), ("Plantae", "Rosa"), ("Plantae", "Bellis", "Bellis perennis")],
        ranks=RANKS3,
    )
    rosa = tax.node_of_path(("Plantae", "Rosa"))
    assert tax.n_leaves == 3 and tax.leaves[1] == rosa and not tax.is_leaf_node(rosa)
    assert tax.leaves_under(rosa).tolist() == [0, 1]
    assert tax.leaf_paths()[1] == ("Plantae", "Rosa")
    m = tax.leaf_ancestor_matrix()
    assert np.asarray(m.sum(axis=1)).ravel().tolist() == [3, 2, 3]
    marg = np.asarray(np.array([[0.5, 0.2, 0.3]]) @ m)[0]
    assert marg[rosa] == pytest.approx(0.7)
    assert marg[tax.find("Rosa canina")] == pytest.approx(0.5)
    assert marg[tax.find("Plantae")] == pytest.approx(1.0)
    assert marg[tax.find("Bellis")] == pytest.approx(0.3)


# ---------------------------------------------------------------- build and derive
def test_repeated_paths_are_merged() -> None:
    tax = Taxonomy.from_paths([SMALL_PATHS[0], SMALL_PATHS[1], SMALL_PATHS[0]], ranks=RANKS3)
    assert tax.n_leaves == 2 and len(tax) == 5


def test_default_ranks() -> None:
    assert default_ranks(7) == STANDARD_RANKS
    assert default_ranks(3) == ("level1", "level2", "level3")
    assert Taxonomy.from_paths([("a", "b")]).ranks == ("level1", "level2")
    with pytest.raises(TaxonomyError, match="2 rank names given for a tree 3 levels deep"):
        Taxonomy.from_paths(SMALL_PATHS, ranks=("kingdom", "genus"))


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ([()], "path 1: empty path"),
        ([("Plantae", "Rosa"), ("Plantae", " ", "x")], r"path 2: empty name at level 2"),
        ([("Plantae", None)], "path 1: empty name at level 2"),
        ([], "no paths given"),
    ],
)
def test_from_paths_rejects_bad_paths(paths: list, message: str) -> None:
    with pytest.raises(TaxonomyError, match=message):
        Taxonomy.from_paths(paths)


def test_parent_change_within_a_kingdom_is_an_error_unless_allowed() -> None:
    paths = [("Plantae", "Rosales", "Rosa"), ("Plantae", "Asterales", "Rosa")]
    with pytest.raises(
        TaxonomyError, match=r"t\.csv:3: 'Rosa' at level 3 has parent 'Asterales' here but 'Rosales' at t\.csv:2"
    ):
        Taxonomy.from_paths(paths, sources=["t.csv:2", "t.csv:3"])
    tax = Taxonomy.from_paths(paths, allow_homonyms=True)
    assert tax.n_leaves == 2
    with pytest.raises(AmbiguousTaxonError):
        tax.find("Rosa")


def test_subset(small: Taxonomy, imagenet: Taxonomy) -> None:
    sub = small.subset([2, 0])
    assert sub.leaf_paths() == [SMALL_PATHS[2], SMALL_PATHS[0]]
    assert sub.ranks == small.ranks and len(sub) == 1 + 1 + 2 + 2
    assert sub.try_node_of_path(("Animalia",)) is None
    crabs = imagenet.leaves_under(imagenet.find("crab")).tolist()
    sub = imagenet.subset(crabs)
    assert sub.leaf_paths() == [imagenet.leaf_paths()[i] for i in crabs]
    assert sub.ranks == imagenet.ranks[: sub.max_depth]


def test_equality(small: Taxonomy) -> None:
    assert small == Taxonomy.from_paths(SMALL_PATHS, ranks=RANKS3)
    assert small != Taxonomy.from_paths(SMALL_PATHS[::-1], ranks=RANKS3)  # leaf order is the class order
    assert small != Taxonomy.from_paths(SMALL_PATHS, ranks=("k", "g", "s"))
    assert small != Taxonomy.from_paths(SMALL_PATHS[:3], ranks=RANKS3)
    assert small != SMALL_PATHS
    with pytest.raises(TypeError):
        hash(small)


def test_arrays_are_read_only(small: Taxonomy) -> None:
    arrays = {
        "parent": small.parent,
        "depth": small.depth,
        "leaves": small.leaves,
        "leaf_index": small.leaf_index,
        "ancestor_table": small.ancestor_table,
        "children": small.children(ROOT),
        "matrix data": small.leaf_ancestor_matrix().data,
    }
    for name, a in arrays.items():
        assert not a.flags.writeable, name
    with pytest.raises(ValueError):
        small.parent[1] = 5
    assert isinstance(small.names, tuple) and isinstance(small.ranks, tuple)

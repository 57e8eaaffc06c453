"""Building hierarchical-VQA question sets: the benchmark's format, determinism, the
distractors of each mode (random, similar under known embeddings, whole paths with
exactly n_options consistent paths) on real and hand-made taxonomies."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from taxonlens.data import Record, VQARecord, read_vqa_benchmark, vqa_build, write_vqa_benchmark
from taxonlens.data.vqa_build import build_vqa
from taxonlens.data.vqa_options import consistent_path_count, option_nodes
from taxonlens.errors import DataError
from taxonlens.recognize.vqa import blind_decode
from taxonlens.taxonomy import Taxonomy, load_taxonomy


@pytest.fixture(scope="module")
def plantae(builtin_taxonomies: Path) -> Taxonomy:
    return load_taxonomy(builtin_taxonomies / "inat21_plantae.json")


@pytest.fixture(scope="module")
def plants(plantae: Taxonomy) -> Taxonomy:
    """306 of the 4,271 plant species (every 14th), all 7 ranks."""
    return plantae.subset(range(0, plantae.n_leaves, 14))


@pytest.fixture(scope="module")
def imagenet(builtin_taxonomies: Path) -> Taxonomy:
    """397 ImageNet animals, paths 4 to 12 levels deep."""
    return load_taxonomy(builtin_taxonomies / "imagenet_animal.json")


def _records(tax: Taxonomy) -> list[Record]:
    return [Record(f"img/{i}.jpg", tax.path_names(int(leaf)), "val") for i, leaf in enumerate(tax.leaves)]


def _names_at(tax: Taxonomy, depth: int) -> set[str]:
    return {tax.names[n].lower() for n in tax.nodes_at_rank(depth)}


def _check_format(tax: Taxonomy, records: list[Record], built: list[VQARecord], n_options: int) -> None:
    """Labels, lower-case levels, the truth among distinct options of the right rank."""
    assert len(built) == len(records) and [q.line for q in built] == list(range(1, len(records) + 1))
    for rec, q in zip(records, built, strict=True):
        node = tax.node_of_path(rec.path)
        assert (q.image, q.split, q.label) == (rec.image, rec.split, tax.names[node])
        assert q.levels == tuple(x.lower() for x in rec.path) and len(q.choices) == len(rec.path)
        for k, (truth, offered) in enumerate(zip(q.levels, q.choices, strict=True), start=1):
            assert truth in offered and len(set(offered)) == len(offered) <= n_options
            assert all(x == x.lower() for x in offered) and set(offered) <= _names_at(tax, k)


# ------------------------------------------------------------ random and similar
@pytest.mark.parametrize("tax_name", ["plants", "imagenet"])
def test_random_mode_offers_n_options_of_the_right_rank(tax_name: str, request: pytest.FixtureRequest) -> None:
    tax: Taxonomy = request.getfixturevalue(tax_name)
    records = _records(tax)
    built = build_vqa(records, tax, n_options=4, mode="random", seed=3)
    _check_format(tax, records, built, 4)
    for q in built:  # every level offers min(4, names at its rank) options
        assert [len(c) for c in q.choices] == [min(4, len(_names_at(tax, k))) for k in range(1, len(q.levels) + 1)]
    if tax_name == "plants":
        assert all(q.choices[0] == ("plantae",) for q in built)  # as the real benchmark
        assert built[0].label == "Houstonia purpurea" and built[0].levels[-1] == "houstonia purpurea"
    else:
        assert {len(q.levels) for q in built} == set(range(4, 13))  # variable depth
    # the truth's position is shuffled: every position holds the truth somewhere at the leaf level
    assert {q.choices[-1].index(q.levels[-1]) for q in built} == {0, 1, 2, 3}


def test_rebuilds_the_real_benchmark_truths(real_data: Path, plantae: Taxonomy) -> None:
    bench = read_vqa_benchmark(real_data / "benchmarks" / "inat21_plantae_similar_choice.jsonl")[:200]
    built = build_vqa([r.to_record() for r in bench], plantae, mode="random")
    assert [(q.image, q.label, q.split, q.levels) for q in built] == [(r.image, r.label, r.split, r.levels)
                                                                      for r in bench]
    assert [tuple(len(c) for c in q.choices) for q in built] == [tuple(len(c) for c in r.choices) for r in bench]


def test_round_trip_through_the_benchmark_file(tmp_path: Path, plants: Taxonomy, imagenet: Taxonomy) -> None:
    for tax, mode in [(plants, "random"), (plants, "path"), (imagenet, "path")]:
        built = build_vqa(_records(tax), tax, mode=mode)
        assert read_vqa_benchmark(write_vqa_benchmark(built, tmp_path / "q.jsonl")) == built


@pytest.mark.parametrize("mode", ["random", "path"])
def test_deterministic_and_independent_of_record_order(plants: Taxonomy, mode: str) -> None:
    records = _records(plants)
    first = build_vqa(records, plants, mode=mode, seed=5)
    assert build_vqa(records, plants, mode=mode, seed=5) == first
    subset = records[::-3]  # other records, other order: each record still gets the same questions
    again = build_vqa(subset, plants, mode=mode, seed=5)
    by_image = {q.image: q for q in first}
    assert [dataclasses.replace(q, line=0) for q in again] == [dataclasses.replace(by_image[r.image], line=0)
                                                               for r in subset]
    other = build_vqa(records, plants, mode=mode, seed=6)
    assert sum(a.choices != b.choices for a, b in zip(first, other, strict=True)) > 250


def _circle(tax: Taxonomy, depth: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Angles ``[n]`` in [0, 1) rad for the taxa of a rank and their 2-D embeddings ``[n, 2]``
    with random lengths: cosine similarity falls with the difference of angles."""
    rng = np.random.default_rng(seed + depth)
    theta = rng.random(len(tax.nodes_at_rank(depth)))
    return theta, np.stack([np.cos(theta), np.sin(theta)], axis=1) * rng.uniform(0.5, 3, size=(len(theta), 1))


def test_similar_mode_picks_the_nearest_taxa(plants: Taxonomy) -> None:
    angles, emb = {}, {}
    for d, rank in enumerate(plants.ranks, start=1):
        angles[d], emb[rank if d % 2 else d] = _circle(plants, d, 0)  # ranks by name or by depth
    records = _records(plants)
    built = build_vqa(records, plants, mode="similar", similarity=emb)
    _check_format(plants, records, built, 4)
    for rec, q in zip(records, built, strict=True):
        for d, node in enumerate(plants.path(plants.node_of_path(rec.path)), start=1):
            at_rank = plants.nodes_at_rank(d)
            gap = np.abs(angles[d] - angles[d][np.searchsorted(at_rank, node)])
            wrong = [plants.names[n].lower() for n in at_rank[np.argsort(gap, kind="stable")][1:]]
            assert sorted(q.choices[d - 1]) == sorted([q.levels[d - 1], *wrong[:3]]), (rec.image, d)


def test_similar_mode_with_a_callable_ties_and_homonyms() -> None:
    tax = Taxonomy.from_paths(
        [("K", "F1", "G", "a"), ("K", "F1", "G", "b"), ("K", "F2", "G", "c"), ("K", "F2", "H", "d"),
         ("K", "F3", "J", "e")],
        ranks=("kingdom", "family", "genus", "species"), allow_homonyms=True,
    )
    ids = {"/".join(tax.path_names(n)): n for n in range(1, len(tax))}
    assert [ids[x] for x in ("K/F1/G", "K/F1/G/a", "K/F2/G", "K/F2/H", "K/F3/J")] == [3, 4, 7, 9, 12]
    calls = []

    def by_id(true_node: int, candidates: np.ndarray) -> np.ndarray:
        """Nearer node ids are more similar."""
        calls.append((tax.names[true_node], [tax.names[n] for n in candidates]))
        return -np.abs(candidates - true_node).astype(float)

    (q,) = build_vqa([Record("x.jpg", ("K", "F1", "G", "a"))], tax, n_options=2, mode="similar", similarity=by_id)
    # the nearest genus of G (3) is its homonym G (7): the same name, skipped for H (9)
    assert [sorted(c) for c in q.choices] == [["k"], ["f1", "f2"], ["g", "h"], ["a", "b"]]
    assert calls == [("F1", ["F1", "F2", "F3"]), ("G", ["G", "G", "H", "J"]), ("a", ["a", "b", "c", "d", "e"])]
    (q,) = build_vqa([Record("x.jpg", ("K", "F1", "G", "a"))], tax, n_options=3, mode="similar", similarity=by_id)
    assert len(calls) == 4 and calls[-1][0] == "a"  # 3 families, 3 genus names: all offered, nothing to rank
    # all similarities tie: the first other taxon of the rank, in nodes_at_rank order
    (q,) = build_vqa([Record("x.jpg", ("K", "F2", "G", "c"))], tax, n_options=2, mode="similar",
                     similarity=lambda t, c: np.zeros(len(c)))
    assert [sorted(c) for c in q.choices] == [["k"], ["f1", "f2"], ["g", "h"], ["a", "c"]]


# --------------------------------------------------------------------- path mode
@pytest.mark.parametrize("tax_name", ["plants", "imagenet"])
def test_path_mode_gives_exactly_n_consistent_paths(tax_name: str, request: pytest.FixtureRequest) -> None:
    tax: Taxonomy = request.getfixturevalue(tax_name)
    records = _records(tax)
    for n in (2, 4):
        built = build_vqa(records, tax, n_options=n, mode="path", seed=1)
        _check_format(tax, records, built, n)
        for q in built:
            depth = len(q.levels)
            expected = min(n, len(_names_at(tax, depth)))  # imagenet has 2 taxa at level 12
            assert consistent_path_count(q, tax) == expected == len(q.choices[-1]), q.image
            # the options of every level are the names on the offered leaf-level paths
            ends = [tax.path_names(options[0]) for options in option_nodes(q, tax)[-1]]
            assert [sorted(c) for c in q.choices] == [sorted({p[k].lower() for p in ends}) for k in range(depth)]
            assert not blind_decode(q, tax).partial
        # shared upper names are offered once, so upper levels offer fewer options
        assert all(len(q.choices[0]) == 1 for q in built)
        if n == 4:
            sizes = [len(c) for q in built for c in q.choices]
            assert {1, 2, 3, 4} <= set(sizes)


def test_path_mode_blind_control_is_at_chance(plants: Taxonomy) -> None:
    built = build_vqa(_records(plants), plants, mode="path", seed=0)
    right = sum(blind_decode(q, plants).path == q.levels for q in built)
    assert math.isclose(right / len(built), 0.25, abs_tol=0.08)  # one of 4 consistent paths, by option order


def test_path_mode_with_similarity_takes_the_nearest_leaves(plants: Taxonomy) -> None:
    theta, emb = _circle(plants, 7, 2)
    records = _records(plants)[:60]
    built = build_vqa(records, plants, mode="path", similarity={"species": emb})
    species = plants.nodes_at_rank(7)
    for rec, q in zip(records, built, strict=True):
        gap = np.abs(theta - theta[np.searchsorted(species, plants.node_of_path(rec.path))])
        nearest = [plants.names[n].lower() for n in species[np.argsort(gap, kind="stable")][:4]]
        assert sorted(q.choices[-1]) == sorted(nearest)
        assert consistent_path_count(q, plants) == 4


def test_path_mode_refuses_a_path_that_homonyms_would_double(monkeypatch: pytest.MonkeyPatch) -> None:
    # G is a genus of A, B and C; species u is under G of B and G of C. With the truth A > G > s,
    # the distractors B > H > t and C > G > u would also spell B > G > u: 4 consistent paths.
    tax = Taxonomy.from_paths(
        [("K", "A", "G", "s"), ("K", "B", "H", "t"), ("K", "B", "G", "u"), ("K", "C", "G", "u")],
        ranks=("kingdom", "family", "genus", "species"), allow_homonyms=True,
    )
    counts: list[int] = []

    def counting(record: VQARecord, taxonomy: Taxonomy) -> int:
        counts.append(consistent_path_count(record, taxonomy))
        return counts[-1]

    monkeypatch.setattr(vqa_build, "consistent_path_count", counting)
    seen = set()
    for seed in range(40):
        (q,) = build_vqa([Record("x.jpg", ("K", "A", "G", "s"))], tax, n_options=3, mode="path", seed=seed)
        assert consistent_path_count(q, tax) == 3
        families = frozenset(q.choices[1])
        assert families in ({"a", "b"}, {"a", "b", "c"})
        assert not ({"c"} <= families and "h" in q.choices[2])  # the pair that spells 4 paths
        seen.add((families, frozenset(q.choices[2])))
    assert len(seen) == 2  # both valid sets of distractor paths occur
    assert 4 in counts  # and the check did refuse the pair that spells 4 paths


def test_orders_are_complete_and_sorted_lazily() -> None:
    rng = np.random.default_rng(0)
    sims = rng.integers(0, 40, size=1000).astype(float)  # many ties
    assert list(vqa_build._by_similarity(sims)) == np.argsort(-sims, kind="stable").tolist()
    assert list(vqa_build._by_similarity(np.array([1.0]))) == [0]
    order = list(vqa_build._random_order(rng, 50, 3))
    assert sorted(order) == list(range(50)) and order != list(range(50))


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_options": 1}, "n_options must be an integer >= 2"),
        ({"n_options": True}, "n_options must be an integer >= 2"),
        ({"mode": "hard"}, "unknown mode 'hard'; choose one of random, similar, path"),
        ({"mode": "similar"}, "mode 'similar' needs a similarity"),
        ({"mode": "random", "similarity": {}}, "mode 'random' uses no similarity"),
        ({"mode": "similar", "similarity": {"tribe": np.ones((2, 2))}}, "similarity: unknown rank 'tribe'"),
        ({"mode": "similar", "similarity": {"genus": np.ones((3, 2))}},
         r"embeddings of rank 'genus' must be \[\d+, D\] .* got shape \(3, 2\)"),
        ({"mode": "similar", "similarity": {"species": np.ones((306, 2))}},
         "similarity has no embeddings for rank 'class'"),
        ({"mode": "similar", "similarity": lambda t, c: np.ones(3)},
         r"similarity returned shape \(3,\) .* expected one number per candidate"),
    ],
)
def test_bad_arguments(plants: Taxonomy, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        build_vqa(_records(plants)[:3], plants, **kwargs)


def test_zero_embedding_row_is_refused(plants: Taxonomy) -> None:
    emb = np.ones((len(plants.nodes_at_rank(7)), 4))
    emb[5] = 0
    with pytest.raises(DataError, match="embeddings of rank 'species' hold a zero or non-finite row"):
        build_vqa(_records(plants)[:3], plants, mode="path", similarity={"species": emb})


def test_records_outside_the_taxonomy_are_named(plants: Taxonomy) -> None:
    good = _records(plants)[0]
    bad = Record("img/bad.jpg", ("Plantae", "Tracheophyta", "Quercopsida"), "val")
    with pytest.raises(DataError, match=r"record 'img/bad.jpg': path Plantae > Tracheophyta > Quercopsida leaves "
                                        r"the taxonomy at level 3: no 'Quercopsida' under 'Tracheophyta'"):
        build_vqa([good, bad], plants)
    with pytest.raises(DataError, match="record 'img/none.jpg' has no taxon path"):
        build_vqa([good, Record("img/none.jpg", (), "val")], plants)

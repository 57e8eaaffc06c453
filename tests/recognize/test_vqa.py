"""Consistent decoding of hierarchical multiple-choice answers: hand-made cases with a
homonym genus, an unknown option and a partial record; agreement with brute force over
every combination of options on random trees and random log-probabilities; and the
leakage of the real iNat21-plantae similar-choice benchmark."""

from __future__ import annotations

import itertools
import math
import random
import time
from pathlib import Path

import numpy as np
import pytest

from taxonlens.data.vqa import VQARecord, benchmark_taxonomy, read_vqa_benchmark
from taxonlens.data.vqa_options import consistent_path_count, option_nodes
from taxonlens.errors import DataError
from taxonlens.evaluate.metrics import hca, select_levels
from taxonlens.recognize.vqa import blind_decode, consistent_decode, leakage
from taxonlens.taxonomy import Taxonomy, load_taxonomy

BENCHMARK = "benchmarks/inat21_plantae_similar_choice.jsonl"
RANKS = ("kingdom", "family", "genus", "species")
# "Aster" is a genus of Asteraceae and (here) a homonymous genus of Fabaceae
PATHS = [
    ("Plantae", "Rosaceae", "Rosa", "Rosa canina"),
    ("Plantae", "Rosaceae", "Rosa", "Rosa rugosa"),
    ("Plantae", "Rosaceae", "Prunus", "Prunus avium"),
    ("Plantae", "Asteraceae", "Bellis", "Bellis perennis"),
    ("Plantae", "Asteraceae", "Aster", "Aster alpinus"),
    ("Plantae", "Fabaceae", "Aster", "Aster fabaceus"),
    ("Animalia", "Canidae", "Vulpes", "Vulpes vulpes"),
]


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return Taxonomy.from_paths(PATHS, ranks=RANKS, allow_homonyms=True)


def _record(levels: tuple[str, ...], choices: list[list[str]]) -> VQARecord:
    return VQARecord("img.jpg", levels[-1], "test", levels, tuple(tuple(c) for c in choices), 1)


def _lp(*rows: list[float]) -> list[np.ndarray]:
    """Log of the given per-level probabilities."""
    with np.errstate(divide="ignore"):
        return [np.log(np.asarray(r, dtype=np.float64)) for r in rows]


HOMONYM = _record(
    ("plantae", "asteraceae", "aster", "aster alpinus"),
    [["plantae"], ["Fabaceae", "ASTERACEAE", "rosaceae"], ["aster", "rosa"], ["aster alpinus", "aster fabaceus"]],
)


# ---------------------------------------------------------------- option nodes
def test_option_nodes_keeps_every_homonym_and_marks_unknown_names(tax: Taxonomy) -> None:
    record = _record(
        ("plantae", "asteraceae", "aster", "aster alpinus"),
        [["plantae"], ["asteraceae", "Quercaceae"], [" ASTER ", "rosa", "Canidae"], ["aster alpinus", "Aster"]],
    )
    nodes = option_nodes(record, tax)
    aster = sorted(n for n in range(1, len(tax)) if tax.names[n] == "Aster")
    assert len(aster) == 2 and [tax.names[tax.parent[n]] for n in aster] == ["Asteraceae", "Fabaceae"]
    assert nodes[0] == [(tax.node_of_path(["Plantae"]),)]
    assert nodes[1] == [(tax.node_of_path(["Plantae", "Asteraceae"]),), ()]  # Quercaceae: not a taxon
    # a taxon of another rank is not an option of this one
    assert nodes[2] == [tuple(aster), (tax.node_of_path(["Plantae", "Rosaceae", "Rosa"]),), ()]
    assert nodes[3] == [(tax.node_of_path(["Plantae", "Asteraceae", "Aster", "Aster alpinus"]),), ()]


def test_record_deeper_than_the_taxonomy(tax: Taxonomy) -> None:
    record = _record(tuple("abcde"), [[x] for x in "abcde"])
    with pytest.raises(DataError, match="has 5 levels but the taxonomy only 4"):
        option_nodes(record, tax)


# ------------------------------------------------------------------ decoding
def test_homonym_is_resolved_by_the_chosen_parent(tax: Taxonomy) -> None:
    # per level the LLM prefers Fabaceae, Aster, Aster alpinus: not a path (that Aster is Asteraceae's)
    lps = _lp([1.0], [0.5, 0.4, 0.1], [0.9, 0.1], [0.6, 0.4])
    a = consistent_decode(HOMONYM, tax, lps)
    # Fabaceae>Aster>Aster fabaceus scores .5*.9*.4 = .18, Asteraceae>Aster>Aster alpinus .4*.9*.6 = .216
    assert a.path == ("plantae", "ASTERACEAE", "aster", "aster alpinus") and a.indices == (0, 1, 0, 0)
    assert a.nodes == tax.path(tax.node_of_path(["Plantae", "Asteraceae", "Aster", "Aster alpinus"]))
    assert math.isclose(a.score, math.log(0.4 * 0.9 * 0.6)) and not a.partial and a.consistent_depth == 4
    # a stronger preference for Fabaceae switches to the other Aster
    b = consistent_decode(HOMONYM, tax, _lp([1.0], [0.7, 0.2, 0.1], [0.9, 0.1], [0.6, 0.4]))
    assert b.path == ("plantae", "Fabaceae", "aster", "aster fabaceus")
    assert b.nodes[2] == tax.node_of_path(["Plantae", "Fabaceae", "Aster"]) != a.nodes[2]
    assert consistent_path_count(HOMONYM, tax) == 2


def test_option_outside_the_taxonomy_is_never_chosen(tax: Taxonomy) -> None:
    record = _record(
        ("plantae", "rosaceae", "rosa", "rosa canina"),
        [["plantae"], ["rosaceae", "quercaceae"], ["quercus", "rosa"], ["rosa canina", "quercus robur"]],
    )
    a = consistent_decode(record, tax, _lp([1.0], [0.1, 0.9], [0.99, 0.01], [0.3, 0.7]))
    assert a.path == record.levels and not a.partial
    assert consistent_path_count(record, tax) == 1


def test_no_full_path_gives_the_longest_prefix_then_argmax(tax: Taxonomy) -> None:
    # Animalia > Canidae scores higher but stops at level 2 (Vulpes is not offered);
    # Plantae > Rosaceae > Rosa reaches level 3; no offered species is under Rosa.
    record = _record(
        ("plantae", "rosaceae", "rosa", "rosa canina"),
        [["animalia", "plantae"], ["canidae", "rosaceae"], ["rosa", "bellis"], ["bellis perennis", "vulpes vulpes"]],
    )
    assert consistent_path_count(record, tax) == 0
    lps = _lp([0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.2, 0.8])
    a = consistent_decode(record, tax, lps)
    assert a.partial and a.consistent_depth == 3
    assert a.path == ("plantae", "rosaceae", "rosa", "vulpes vulpes") and a.indices == (1, 1, 0, 1)
    assert a.nodes[:3] == tax.path(tax.node_of_path(["Plantae", "Rosaceae", "Rosa"])) and a.nodes[3] == -1
    assert math.isclose(a.score, math.log(0.1 * 0.1 * 0.3 * 0.8))
    # between prefixes of equal length, the higher score wins: Plantae > Asteraceae > Bellis
    record2 = _record(record.levels, [["plantae"], ["rosaceae", "asteraceae"], ["rosa", "bellis"], ["vulpes vulpes"]])
    b = consistent_decode(record2, tax, _lp([1.0], [0.4, 0.6], [0.5, 0.5], [1.0]))
    assert b.partial and b.consistent_depth == 3 and b.path == ("plantae", "asteraceae", "bellis", "vulpes vulpes")


def test_no_option_at_level_one_is_a_taxon(tax: Taxonomy) -> None:
    record = _record(("fungi", "amanitaceae"), [["fungi", "protista"], ["rosaceae", "amanitaceae"]])
    a = consistent_decode(record, tax, _lp([0.4, 0.6], [0.7, 0.3]))
    assert (a.path, a.indices, a.nodes, a.consistent_depth, a.partial) == (
        ("protista", "rosaceae"), (1, 0), (-1, -1), 0, True)
    assert math.isclose(a.score, math.log(0.6 * 0.7)) and a.impossible == 0


def test_single_option_levels_need_no_scores_and_weights_apply(tax: Taxonomy) -> None:
    a = consistent_decode(HOMONYM, tax, [None, *_lp([0.5, 0.4, 0.1], [0.9, 0.1], [0.6, 0.4])])
    assert a.path[1] == "ASTERACEAE"
    # weighting the family level 3x makes Fabaceae win: 3 log .5 + log .4 > 3 log .4 + log .6
    b = consistent_decode(HOMONYM, tax, [None, *_lp([0.5, 0.4, 0.1], [0.9, 0.1], [0.6, 0.4])], weights=[1, 3, 1, 1])
    assert b.path[1:] == ("Fabaceae", "aster", "aster fabaceus")
    assert math.isclose(b.score, 3 * math.log(0.5) + math.log(0.9) + math.log(0.4))
    # weight 0 silences a level, even where it has -inf
    c = consistent_decode(HOMONYM, tax, _lp([1.0], [0.0, 1.0, 0.0], [1, 0], [0, 1]), weights=[1, 0, 1, 1])
    assert c.path[1:] == ("Fabaceae", "aster", "aster fabaceus") and c.score == 0.0


def test_fewest_impossible_options_win(tax: Taxonomy) -> None:
    # one-hot answers Rosaceae, Aster, Aster alpinus: not a path. Asteraceae > Aster > Aster alpinus
    # contradicts one answer, Fabaceae > Aster > Aster fabaceus two (Rosaceae > Rosa has no species offered)
    a = consistent_decode(HOMONYM, tax, _lp([1.0], [0, 0, 1], [1, 0], [1, 0]))
    assert a.path == ("plantae", "ASTERACEAE", "aster", "aster alpinus") and not a.partial
    assert (a.impossible, a.score) == (1, -math.inf)
    # with equally many impossible options, the log-probabilities of the others decide
    b = consistent_decode(HOMONYM, tax, _lp([1.0], [0.0, 0.0, 1.0], [1.0, 0.0], [0.4, 0.6]))
    assert b.path == ("plantae", "Fabaceae", "aster", "aster fabaceus") and b.impossible == 1
    # and a weight of 0 makes a -inf harmless
    c = consistent_decode(HOMONYM, tax, _lp([1.0], [0.0, 0.0, 1.0], [1.0, 0.0], [0.4, 0.6]), weights=[1, 0, 1, 1])
    assert (c.impossible, c.score) == (0, math.log(0.6))


@pytest.mark.parametrize(
    ("logprobs", "weights", "message"),
    [
        ([[0.0]] * 3, None, "3 arrays of log-probabilities for 4 levels"),
        ([None, [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], None, r"level 2 offers 3 options but got .* shape \(2,\)"),
        ([None, [0.0, 0.0, 0.0], None, [0.0, 0.0]], None, r"level 3 offers 2 options but got .* shape \(0,\)"),
        ([None, [0.0, math.nan, 0.0], [0.0, 0.0], [0.0, 0.0]], None, "level 2 log-probabilities must not be NaN"),
        ([None, [0.0, math.inf, 0.0], [0.0, 0.0], [0.0, 0.0]], None, r"must not be NaN or \+inf"),
        ([None, [0.0] * 3, [0.0] * 2, [0.0] * 2], [1, 1, 1], "3 level weights for 4 levels"),
        ([None, [0.0] * 3, [0.0] * 2, [0.0] * 2], [1, -1, 1, 1], "weight of level 2 must be finite and >= 0"),
    ],
)
def test_bad_scores_are_refused(tax: Taxonomy, logprobs: list, weights: list | None, message: str) -> None:
    with pytest.raises(DataError, match="record 'img.jpg' \\(line 1\\): .*" + message):
        consistent_decode(HOMONYM, tax, logprobs, weights)


# -------------------------------------------------------------- blind control
def test_blind_control_takes_the_first_offered_consistent_path(tax: Taxonomy) -> None:
    a = blind_decode(HOMONYM, tax)  # Fabaceae (offered first) > Aster > its only species
    assert a.path == ("plantae", "Fabaceae", "aster", "aster fabaceus") and not a.partial
    assert math.isclose(a.score, -math.log(3) - 2 * math.log(2))
    swapped = _record(HOMONYM.levels, [["plantae"], ["ASTERACEAE", "Fabaceae"], ["rosa", "aster"],
                                       ["aster fabaceus", "aster alpinus"]])
    assert blind_decode(swapped, tax).path == ("plantae", "ASTERACEAE", "aster", "aster alpinus")


def test_duplicate_options_count_once(tax: Taxonomy) -> None:
    record = _record(("plantae", "rosaceae", "rosa", "rosa canina"),
                     [["plantae"], ["rosaceae", "Rosaceae"], ["rosa"], ["rosa canina", "ROSA CANINA", "rosa rugosa"]])
    assert consistent_path_count(record, tax) == 2
    assert blind_decode(record, tax).indices == (0, 0, 0, 0)


# ----------------------------------------------------- brute force, random cases
def _brute(record: VQARecord, tax: Taxonomy, lps: list[list[float]], weights: list[float]) -> tuple:
    """``(indices, score, impossible, depth, n_paths)`` by enumerating every combination of options
    and every prefix length, checking each with ``node_of_path``; first combination on a tie.

    A combination's key is (-number of -inf options on levels of non-zero weight, weighted sum
    of the others), summed from the deepest level up, compared as a tuple."""
    keys = [[(0, 0.0) if w == 0 else (-1, 0.0) if x == -math.inf else (0, w * x) for x in lp]
            for lp, w in zip(lps, weights)]
    depth = len(record.choices)

    def result(combo: tuple[int, ...], key: tuple[int, float], m: int, n_paths: int) -> tuple:
        fill = tuple(int(np.argmax(lps[k])) for k in range(m, depth))
        for k, j in zip(range(m, depth), fill):
            key = (key[0] + keys[k][j][0], key[1] + keys[k][j][1])
        return combo + fill, -math.inf if key[0] else key[1], -key[0], m, n_paths

    for m in range(depth, 0, -1):
        best, best_key, found = None, (0, 0.0), set()
        for combo in itertools.product(*(range(len(c)) for c in record.choices[:m])):
            names = [record.choices[k][j] for k, j in enumerate(combo)]
            if tax.try_node_of_path(names) is None:
                continue
            found.add(tuple(x.casefold() for x in names))
            key = (0, 0.0)
            for k in reversed(range(m)):
                key = (keys[k][combo[k]][0] + key[0], keys[k][combo[k]][1] + key[1])
            if best is None or key > best_key:
                best, best_key = combo, key
        if best is not None:
            return result(best, best_key, m, len(found) if m == depth else 0)
    return result((), (0, 0.0), 0, 0)


def _random_tree(rng: random.Random) -> Taxonomy:
    """4 levels of one-letter names from small alphabets (so homonyms abound), some paths shorter."""
    alphabets = ["AB", "cde", "fgh", "ijk"]
    paths = set()
    for _ in range(rng.randint(3, 14)):
        d = rng.choice([2, 3, 4, 4, 4])
        paths.add(tuple(rng.choice(alphabets[k]) + (str(k) if k == 0 else "") for k in range(d)))
    return Taxonomy.from_paths(sorted(paths), allow_homonyms=True)


def _random_record(rng: random.Random, tax: Taxonomy) -> VQARecord:
    """Up to 5 options per level of a random leaf's path: taxa of that rank, names of no taxon
    of that rank, random upper case; the truth itself is offered at 80 % of the levels."""
    leaf = int(rng.choice(tax.leaves))
    levels = tax.path_names(leaf)
    choices = []
    for k, truth in enumerate(levels, start=1):
        pool = sorted({tax.names[n] for n in tax.nodes_at_rank(k)} | {"zz", "A0" if k > 1 else "c"})
        n = rng.randint(1, 4)
        # sometimes the truth is not offered, so that no full path may exist
        options = [truth] * (rng.random() < 0.8) + rng.sample(pool, min(n, len(pool)))
        options = list(dict.fromkeys(x.upper() if rng.random() < 0.2 else x for x in options))
        rng.shuffle(options)
        choices.append(options)
    return _record(tuple(x.lower() for x in levels), choices)


def _random_logprobs(rng: np.random.Generator, record: VQARecord) -> list[list[float]]:
    out = []
    for c in record.choices:
        lp = np.log(rng.dirichlet(np.ones(len(c)))).tolist()
        if len(c) > 1 and rng.random() < 0.2:
            lp[int(rng.integers(len(c)))] = -math.inf
        out.append(lp)
    return out


def test_decoder_equals_brute_force_on_random_cases() -> None:
    rng, nrng = random.Random(7), np.random.default_rng(7)
    n_partial = n_full = n_homonym = n_impossible = 0
    for _ in range(600):
        tax = _random_tree(rng)
        record = _random_record(rng, tax)
        lps = _random_logprobs(nrng, record)
        weights = [float(w) for w in nrng.choice([0.0, 0.5, 1.0, 2.0], size=len(lps))]
        a = consistent_decode(record, tax, lps, weights)
        indices, score, impossible, m, n_paths = _brute(record, tax, lps, weights)
        assert (a.indices, a.consistent_depth, a.partial) == (indices, m, m < len(record.levels)), record
        assert a.impossible == impossible and (a.score == score or math.isclose(a.score, score, rel_tol=1e-12))
        assert consistent_path_count(record, tax) == n_paths
        for k in range(m):  # the nodes spell the chosen names, from the root down
            assert a.nodes[: k + 1] == tax.path(tax.node_of_path(a.path[: k + 1]))
        assert a.nodes[m:] == (-1,) * (len(record.levels) - m)
        # blind control = brute force's first combination among equal (uniform) scores
        uniform = [[-math.log(len(c))] * len(c) for c in record.choices]
        assert blind_decode(record, tax).indices == _brute(record, tax, uniform, [1.0] * len(uniform))[0]
        n_partial += a.partial
        n_full += not a.partial
        n_homonym += any(len(opt) > 1 for level in option_nodes(record, tax) for opt in level)
        n_impossible += a.impossible > 0
    assert min(n_partial, n_full, n_homonym, n_impossible) > 50  # every branch was exercised


# ------------------------------------------------------------ real benchmark
@pytest.fixture(scope="module")
def benchmark(real_data: Path) -> list[VQARecord]:
    return read_vqa_benchmark(real_data / BENCHMARK)


@pytest.fixture(scope="module")
def plantae(builtin_taxonomies: Path) -> Taxonomy:
    return load_taxonomy(builtin_taxonomies / "inat21_plantae.json")


def test_real_taxonomy_holds_every_offered_option(
    real_data: Path, benchmark: list[VQARecord], plantae: Taxonomy
) -> None:
    # the tree of the benchmark's own true paths is the same tree (lower-cased), so it also
    # holds every distractor: each is the true taxon of another question
    from_truths = benchmark_taxonomy(real_data / BENCHMARK)
    assert sorted(tuple(x.lower() for x in p) for p in plantae.leaf_paths()) == sorted(from_truths.leaf_paths())
    for record in benchmark:
        nodes = option_nodes(record, plantae)
        assert all(len(options) == 1 for level in nodes for options in level), record.image  # no homonyms here
        assert plantae.try_node_of_path(record.levels) is not None


def test_real_benchmark_leakage(benchmark: list[VQARecord], plantae: Taxonomy) -> None:
    start = time.perf_counter()
    s = leakage(benchmark, plantae)
    elapsed = time.perf_counter() - start
    assert s.n_records == 4271
    assert s.path_counts == {1: 1460, 2: 744, 3: 687, 4: 1380}  # never 0: the truth is always a path
    assert (s.n_unique, s.n_unique_truth) == (1460, 1460)
    assert math.isclose(s.share_unique, 1460 / 4271)
    assert s.n_blind_correct == 2482 and math.isclose(s.blind_hca, 100 * 2482 / 4271)  # 58.11 %
    assert s.expected_blind_correct == 1460 + 744 / 2 + 687 / 3 + 1380 / 4 == 2406  # 56.33 %
    assert elapsed < 5, f"leakage over 4,271 records took {elapsed:.2f} s"  # ~0.2 s on one core

    blind = [blind_decode(r, plantae) for r in benchmark]
    assert not any(b.partial for b in blind)
    scored = range(1, 7)  # the reference scores levels 2..7 (level 1 offers only 'plantae')
    truths = [select_levels(r.levels, scored) for r in benchmark]
    assert math.isclose(hca(truths, [select_levels(b.path, scored) for b in blind]), s.blind_hca)
    assert sum(b.path == r.levels for b, r in zip(blind, benchmark) if consistent_path_count(r, plantae) == 1) == 1460


def test_real_benchmark_one_hot_truth_decodes_to_the_truth(benchmark: list[VQARecord], plantae: Taxonomy) -> None:
    for record in benchmark:
        one_hot = [[0.0 if c == t else -math.inf for c in offered] for t, offered in zip(record.levels, record.choices)]
        a = consistent_decode(record, plantae, one_hot)
        assert a.path == record.levels and not a.partial and a.score == 0.0, record.image
        assert a.nodes == plantae.path(plantae.node_of_path(record.levels))


def test_real_benchmark_equals_brute_force(benchmark: list[VQARecord], plantae: Taxonomy) -> None:
    nrng = np.random.default_rng(0)
    for record in random.Random(0).sample(benchmark, 12):
        lps = _random_logprobs(nrng, record)
        a = consistent_decode(record, plantae, lps)
        indices, score, impossible, m, n_paths = _brute(record, plantae, lps, [1.0] * 7)
        assert (a.indices, a.impossible, m, a.partial) == (indices, impossible, 7, False)
        assert math.isclose(a.score, score, rel_tol=1e-12) and consistent_path_count(record, plantae) == n_paths

"""Tree-consistent decoding, against hand-computed cases and brute force (a float64
product with the leaf->ancestor matrix, Python walks down the tree), on hand-made
trees and on the real taxonomies."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from taxonlens.recognize.decode import Prediction, TreeDecoder, flat_paths, rank_scores_from_logits
from taxonlens.taxonomy import Taxonomy, load_taxonomy

pytestmark = pytest.mark.filterwarnings("ignore:Sparse:UserWarning")

REAL_FILES = ["inat21_plantae.json", "inat21_animalia.json", "imagenet_animal.json"]
RANKS3 = ("kingdom", "genus", "species")
SMALL_PATHS = [
    ("Plantae", "Rosa", "Rosa canina"),
    ("Plantae", "Rosa", "Rosa rugosa"),
    ("Plantae", "Bellis", "Bellis perennis"),
    ("Animalia", "Vulpes", "Vulpes vulpes"),
]
# "Rosa" is a label of its own (a genus-only class) beside two of its species
GENUS_ONLY_PATHS = [
    ("Plantae", "Rosa"),
    ("Plantae", "Rosa", "Rosa canina"),
    ("Plantae", "Rosa", "Rosa rugosa"),
    ("Plantae", "Bellis", "Bellis perennis"),
]


def _decoder(tax: Taxonomy, **kw) -> TreeDecoder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: sparse CSR is beta
        return TreeDecoder(tax, **kw)


@pytest.fixture(scope="module")
def real(builtin_taxonomies: Path) -> dict[str, Taxonomy]:
    return {name: load_taxonomy(builtin_taxonomies / name) for name in REAL_FILES}


@pytest.fixture(scope="module")
def with_genus_labels(builtin_taxonomies: Path) -> Taxonomy:
    """The plant taxonomy plus a genus-only label for every 7th genus, listed first."""
    paths = [tuple(p) for p in json.loads((builtin_taxonomies / "inat21_plantae.json").read_text()).values()]
    genera = sorted({p[:6] for p in paths})[::7]
    return Taxonomy.from_paths(genera + paths)


# ------------------------------------------------------------------ helpers
def _probs(n_rows: int, n_leaves: int, seed: int, alpha: float = 0.3) -> np.ndarray:
    """float64 ``[n_rows, n_leaves]`` Dirichlet rows: a few strong leaves, a long tail."""
    return np.random.default_rng(seed).dirichlet(np.full(n_leaves, alpha), size=n_rows)


def _brute_marginals(tax: Taxonomy, probs: np.ndarray | torch.Tensor) -> np.ndarray:
    """float64 ``[B, n_nodes]``: every node's mass as ``probs @ leaf_ancestor_matrix``; root 1."""
    p = probs.double().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, np.float64)
    out = np.asarray((tax.leaf_ancestor_matrix().astype(np.float64).T @ p.T).T)
    out[:, 0] = 1.0
    return out


def _brute_greedy(tax: Taxonomy, probs: np.ndarray) -> list[int]:
    """Top-down walk in Python: at each node take the child of highest marginal (first on a tie),
    unless the node is a label whose own probability is at least every child's marginal."""
    marg = _brute_marginals(tax, probs)
    out = []
    for b in range(len(probs)):
        node = 0
        while True:
            kids = tax.children(node)
            if len(kids) == 0:
                break
            best = int(kids[np.argmax(marg[b, kids])])
            own = probs[b, tax.leaf_index[node]] if tax.leaf_index[node] >= 0 else -1.0
            if marg[b, best] <= own:
                break
            node = best
        out.append(int(tax.leaf_index[node]))
    return out


def _brute_path_scores(tax: Taxonomy, rank_scores: dict, weights: dict | None = None) -> np.ndarray:
    """float64 ``[B, n_leaves]``: for every leaf, the weighted sum over the given ranks of the score
    of its ancestor at that rank (ranks below a shallow leaf add nothing)."""
    batch = len(next(iter(rank_scores.values())))
    out = np.zeros((batch, tax.n_leaves))
    for rank, scores in rank_scores.items():
        d = tax.rank_depth(rank)
        column = {int(n): k for k, n in enumerate(tax.nodes_at_rank(rank))}
        w = 1.0 if weights is None else weights.get(rank, 1.0)
        for i, leaf in enumerate(tax.leaves):
            anc = int(tax.ancestor_table[leaf, d - 1])
            if anc >= 0:
                out[:, i] += w * scores[:, column[anc]].double().numpy()
    return out


def _random_rank_scores(tax: Taxonomy, ranks, batch: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {r: torch.log_softmax(3 * torch.randn(batch, len(tax.nodes_at_rank(r)), generator=gen), dim=1)
            for r in ranks}


# -------------------------------------------------------------- marginals
def test_marginals_hand_computed() -> None:
    tax = Taxonomy.from_paths(SMALL_PATHS, ranks=RANKS3)
    dec = _decoder(tax)
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 1.0]])
    m = dec.marginals(probs)
    expect = {"Plantae": (0.6, 0.0), "Rosa": (0.3, 0.0), "Bellis": (0.3, 0.0), "Animalia": (0.4, 1.0),
              "Vulpes": (0.4, 1.0), "Rosa canina": (0.1, 0.0), "Vulpes vulpes": (0.4, 1.0)}
    for name, col in expect.items():
        assert m[:, tax.find(name)].tolist() == pytest.approx(col, abs=1e-7)
    assert m.shape == (2, len(tax)) and m.dtype == torch.float32
    assert m[:, 0].tolist() == [1.0, 1.0]
    genus, nodes = dec.rank_marginals(probs, "genus")
    assert [tax.names[n] for n in nodes] == ["Rosa", "Bellis", "Vulpes"]
    np.testing.assert_allclose(genus.numpy(), [[0.3, 0.3, 0.4], [0.0, 0.0, 1.0]], atol=1e-7)


@pytest.mark.parametrize("name", REAL_FILES)
def test_marginals_equal_brute_force_on_real_taxonomies(real: dict[str, Taxonomy], name: str) -> None:
    tax = real[name]
    p64 = _probs(12, tax.n_leaves, seed=1)
    p32 = torch.from_numpy(p64).float()
    dec, dec64 = _decoder(tax), _decoder(tax, float64=True)

    m = dec.marginals(p32)
    assert m.shape == (12, len(tax)) and m.dtype == torch.float32
    assert torch.all(m[:, 0] == 1.0)
    np.testing.assert_allclose(m.double().numpy(), _brute_marginals(tax, p32), rtol=0, atol=1e-4)
    m64 = dec64.marginals(torch.from_numpy(p64))
    assert torch.all(m64[:, 0] == 1.0)
    np.testing.assert_allclose(m64.double().numpy(), _brute_marginals(tax, p64), rtol=0, atol=1e-7)
    # every rank sums to the mass of the leaves at least that deep (1 for a fixed-depth tree)
    leaf_depth = tax.depth[tax.leaves]
    for d in range(1, tax.max_depth + 1):
        marg, nodes = dec64.rank_marginals(torch.from_numpy(p64), d)
        np.testing.assert_array_equal(nodes, tax.nodes_at_rank(d))
        np.testing.assert_allclose(marg.sum(1).double().numpy(), p64[:, leaf_depth >= d].sum(1), atol=1e-6)


@pytest.mark.parametrize("name", REAL_FILES)
def test_marginals_of_node_subsets(real: dict[str, Taxonomy], name: str) -> None:
    tax = real[name]
    rng = np.random.default_rng(2)
    p64 = _probs(8, tax.n_leaves, seed=3)
    ref = _brute_marginals(tax, p64)
    dec = _decoder(tax, float64=True)
    probs = torch.from_numpy(p64)

    nodes = np.concatenate([[0], rng.choice(len(tax), 40, replace=False), tax.leaves[:3], [0]])
    for form in (nodes, torch.from_numpy(nodes), nodes.astype(np.int32), nodes.tolist()):
        m = dec.marginals(probs, form)
        assert m.shape == (8, len(nodes))
        np.testing.assert_allclose(m.double().numpy(), ref[:, nodes], atol=1e-7)
    per_row = rng.integers(0, len(tax), size=(8, 25))  # [B, K]: different nodes for each image
    per_row[:, 0] = 0
    m = dec.marginals(probs, torch.from_numpy(per_row))
    assert m.shape == (8, 25)
    np.testing.assert_allclose(m.double().numpy(), np.take_along_axis(ref, per_row, axis=1), atol=1e-7)
    assert torch.all(m[:, 0] == 1.0)


def test_genus_only_label_marginals_include_its_own_mass() -> None:
    tax = Taxonomy.from_paths(GENUS_ONLY_PATHS, ranks=RANKS3)
    dec = _decoder(tax)
    rosa = tax.find("Rosa")
    assert tax.leaf_index[rosa] == 0 and not tax.is_leaf_node(rosa)
    probs = torch.tensor([[0.3, 0.2, 0.1, 0.4]])  # Rosa (as a label), R. canina, R. rugosa, Bellis perennis
    m = dec.marginals(probs)
    assert float(m[0, rosa]) == pytest.approx(0.6)  # 0.3 of its own + 0.2 + 0.1 of its species
    assert float(m[0, tax.find("Plantae")]) == pytest.approx(1.0)
    assert float(m[0, tax.find("Bellis")]) == pytest.approx(0.4)
    assert float(m[0, tax.find("Rosa canina")]) == pytest.approx(0.2)


def _genus_weighted_probs(tax: Taxonomy, seed: int) -> np.ndarray:
    """``[16, n_leaves]`` probabilities where the genus-only labels (listed first) carry real
    weight, so that the greedy walk sometimes stops at one."""
    p64 = _probs(16, tax.n_leaves, seed=seed, alpha=0.05)
    p64[:, : (tax.depth[tax.leaves] == 6).sum()] *= 40
    return p64 / p64.sum(1, keepdims=True)


def test_genus_only_labels_marginals_and_greedy_on_a_real_tree(with_genus_labels: Taxonomy) -> None:
    tax = with_genus_labels
    p64 = _genus_weighted_probs(tax, seed=4)
    dec = _decoder(tax)
    np.testing.assert_allclose(dec.marginals(torch.from_numpy(p64).float()).double().numpy(),
                               _brute_marginals(tax, p64), atol=1e-4)
    got = dec.greedy(torch.from_numpy(p64)).tolist()
    assert got == _brute_greedy(tax, p64)
    assert any(tax.depth[tax.leaves[i]] == 6 for i in got)  # some walks stopped at a genus label


def test_greedy_stops_at_a_genus_label_whose_own_mass_beats_every_child() -> None:
    tax = Taxonomy.from_paths(GENUS_ONLY_PATHS, ranks=RANKS3)
    dec = _decoder(tax)
    probs = torch.tensor([
        [0.3, 0.2, 0.1, 0.4],    # Rosa 0.6 > Bellis 0.4; own 0.3 > canina 0.2: stop at Rosa
        [0.1, 0.35, 0.15, 0.4],  # Rosa 0.6; canina 0.35 > own 0.1: go on to R. canina
        [0.2, 0.2, 0.15, 0.45],  # Rosa 0.55; a tie between own and child stays at the label
        [0.05, 0.1, 0.3, 0.55],  # Bellis 0.55 > Rosa 0.45
    ])
    assert dec.greedy(probs).tolist() == [0, 1, 0, 3]
    assert dec.exact(probs).tolist() == [3, 3, 3, 3]
    conf = dec.path_confidence(probs, torch.tensor([0, 1, 0, 3]))
    assert conf[0, :2].tolist() == pytest.approx([1.0, 0.6]) and math.isnan(conf[0, 2])
    assert conf[1].tolist() == pytest.approx([1.0, 0.6, 0.35])
    pred = dec.decode(probs[:1], "greedy")[0]
    assert pred.path == ("Plantae", "Rosa") and list(pred.confidence) == ["kingdom", "genus"]


# --------------------------------------------------------------- decoding
@pytest.mark.parametrize("name", REAL_FILES)
def test_exact_is_argmax_and_greedy_is_the_top_down_walk(real: dict[str, Taxonomy], name: str) -> None:
    tax = real[name]
    p64 = _probs(32, tax.n_leaves, seed=5, alpha=0.02)
    dec = _decoder(tax)
    probs = torch.from_numpy(p64).float()
    assert dec.exact(probs).tolist() == p64.argmax(1).tolist()
    got = dec.greedy(probs)
    assert got.tolist() == _brute_greedy(tax, probs.double().numpy())
    assert got.tolist() == dec.greedy(probs, dec.internal_marginals(probs)).tolist()
    assert dec.decode_leaves(probs, "greedy").tolist() == got.tolist()
    assert dec.decode_leaves(probs, "exact").tolist() == p64.argmax(1).tolist()
    assert _decoder(tax, float64=True).greedy(torch.from_numpy(p64)).tolist() == _brute_greedy(tax, p64)


def test_exact_and_greedy_differ_on_a_heavy_genus_of_weak_species() -> None:
    weak = [("Plantae", "Weak", f"Weak sp{i}") for i in range(8)]
    tax = Taxonomy.from_paths([*weak, ("Plantae", "Strong", "Strong one")], ranks=RANKS3)
    dec = _decoder(tax)
    probs = torch.tensor([[0.09, 0.08, 0.07, 0.07, 0.07, 0.07, 0.06, 0.05, 0.44]])  # Weak 0.56, Strong 0.44
    assert dec.exact(probs).tolist() == [8]
    assert dec.greedy(probs).tolist() == [0]
    exact, greedy = dec.decode(probs, "exact")[0], dec.decode(probs, "greedy")[0]
    assert exact.path == ("Plantae", "Strong", "Strong one")
    assert greedy.path == ("Plantae", "Weak", "Weak sp0")
    assert greedy.confidence["genus"] == pytest.approx(0.56) and exact.confidence["genus"] == pytest.approx(0.44)
    assert greedy.confidence["species"] == pytest.approx(0.09) and exact.confidence["species"] == pytest.approx(0.44)


@pytest.mark.parametrize("shuffled", [False, True])
def test_greedy_handles_a_batch_of_different_depths_and_fanouts(shuffled: bool) -> None:
    """One row walks into a 3000-species genus, the others into small ones; a shallow leaf too.
    Shuffled, the species of a genus are not consecutive leaves."""
    paths = [("A", "Big", f"Big s{i}") for i in range(3000)]
    paths += [("A", f"G{g}", f"G{g} s{i}") for g in range(40) for i in range(3)] + [("B",), ("C", "Lone")]
    if shuffled:
        paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))]
    tax = Taxonomy.from_paths(paths, ranks=RANKS3)
    p64 = _probs(24, tax.n_leaves, seed=6, alpha=0.01)
    p64[0, [p[1:2] != ("Big",) for p in paths]] = 0  # row 0: all the mass inside Big
    p64[1, :] = 0
    p64[1, tax.leaf_index[tax.find("B")]] = 1  # row 1: the depth-1 leaf
    p64 /= p64.sum(1, keepdims=True)
    got = _decoder(tax).greedy(torch.from_numpy(p64)).tolist()
    assert got == _brute_greedy(tax, p64)
    assert paths[got[0]][1] == "Big" and got[1] == tax.leaf_index[tax.find("B")]


@pytest.mark.parametrize("name", REAL_FILES)
def test_greedy_node_by_node_path_equals_brute_force(real: dict[str, Taxonomy], name: str) -> None:
    """Every fan-out taken node by node (mixed leaf and internal children, columns that are no
    run, masses gathered a few rows at a time) walks exactly as the padded path does."""
    tax = real[name]
    p64 = _probs(16, tax.n_leaves, seed=12, alpha=0.05)
    probs = torch.from_numpy(p64).float()
    dec = _decoder(tax)
    expect = dec.greedy(probs)
    dec._PAD, dec._CHUNK = 0, 50
    assert dec.greedy(probs).tolist() == expect.tolist() == _brute_greedy(tax, probs.double().numpy())


def test_greedy_node_by_node_with_genus_labels(with_genus_labels: Taxonomy) -> None:
    tax = with_genus_labels
    p64 = _genus_weighted_probs(tax, seed=13)
    dec = _decoder(tax)
    dec._PAD = 0
    assert dec.greedy(torch.from_numpy(p64)).tolist() == _brute_greedy(tax, p64)


def test_a_flat_taxonomy_decodes() -> None:
    tax = Taxonomy.from_paths([("a",), ("b",), ("c",)], ranks=("class",))
    dec = _decoder(tax, thresholds={"class": 0.4})
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.35, 0.3, 0.35]])
    np.testing.assert_allclose(dec.marginals(probs).numpy(), [[1.0, 0.2, 0.5, 0.3], [1.0, 0.1, 0.1, 0.8],
                                                              [1.0, 0.35, 0.3, 0.35]])
    assert dec.greedy(probs).tolist() == dec.exact(probs).tolist() == [1, 2, 0]
    preds = dec.decode(probs, top_k=2)
    assert [p.path for p in preds] == [("b",), ("c",), ("a",)]
    assert [p.rank_reached for p in preds] == ["class", "class", None]
    assert preds[2].reached_path == ()


# ------------------------------------------------------ per-rank fusion
def _three_rank_tree() -> Taxonomy:
    return Taxonomy.from_paths([("K1", "G1", "s1"), ("K1", "G1", "s2"), ("K1", "G2", "s3"),
                                ("K2", "G3", "s4"), ("K2", "G3", "s5")], ranks=RANKS3)


def test_path_scores_hand_computed_and_brute_force_on_a_small_tree() -> None:
    tax = _three_rank_tree()
    dec = _decoder(tax)
    scores = {"kingdom": torch.tensor([[-0.1, -2.0]]), "genus": torch.tensor([[-1.0, -0.5, -3.0]]),
              "species": torch.tensor([[-2.0, -1.5, -0.2, -4.0, -0.1]])}
    ps = dec.path_scores(scores)
    # s3: K1 + G2 + s3 = -0.1 - 0.5 - 0.2; s5: K2 + G3 + s5 = -2.0 - 3.0 - 0.1
    assert ps.tolist()[0] == pytest.approx([-3.1, -2.6, -0.8, -9.0, -5.1])
    assert dec.fuse(scores).tolist() == [2]
    w = {"kingdom": 2.0, "genus": 0.5, "species": 1.0}
    assert dec.path_scores(scores, w).tolist()[0] == pytest.approx([-2.7, -2.2, -0.65, -9.5, -5.6])
    rand = _random_rank_scores(tax, RANKS3, batch=7, seed=0)
    np.testing.assert_allclose(dec.path_scores(rand).numpy(), _brute_path_scores(tax, rand), atol=1e-5)
    np.testing.assert_allclose(dec.path_scores(rand, w).numpy(), _brute_path_scores(tax, rand, w), atol=1e-5)
    by_depth = {tax.rank_depth(r): s for r, s in rand.items()}  # ranks may be given as depths
    np.testing.assert_allclose(dec.path_scores(by_depth).numpy(), dec.path_scores(rand).numpy())


def test_weights_can_flip_the_fused_answer() -> None:
    tax = _three_rank_tree()
    dec = _decoder(tax)
    # the species head likes s4 (K2), the kingdom head is sure of K1
    scores = {"kingdom": torch.log(torch.tensor([[0.8, 0.2]])),
              "species": torch.log(torch.tensor([[0.05, 0.05, 0.1, 0.7, 0.1]]))}
    assert dec.fuse(scores).tolist() == [3]  # log .2 + log .7 = -1.97 > log .8 + log .1 = -2.53
    assert dec.fuse(scores, {"kingdom": 3.0}).tolist() == [2]  # 3 log .8 + log .1 > 3 log .2 + log .7
    assert dec.fuse(scores, {"species": 0.0}).tolist() == [0]  # K1's first leaf: a tie inside K1


def test_fusion_of_inconsistent_per_rank_argmaxes_is_a_valid_path() -> None:
    tax = _three_rank_tree()
    dec = _decoder(tax)
    logits = {"kingdom": torch.tensor([[2.0, 0.0]]), "genus": torch.tensor([[0.0, 0.0, 1.0]]),
              "species": torch.tensor([[0.0, 0.0, 1.5, 0.0, 0.0]])}
    flat = flat_paths(tax, logits)
    assert flat == [("K1", "G3", "s3")]
    assert tax.try_node_of_path(flat[0]) is None  # the independent argmaxes are no path
    fused = dec.fuse(rank_scores_from_logits(logits))
    path = tax.path_names(int(tax.leaves[int(fused[0])]))
    assert tax.try_node_of_path(path) == tax.leaves[int(fused[0])]
    brute = _brute_path_scores(tax, rank_scores_from_logits(logits))
    assert int(fused[0]) == int(brute.argmax()) and path == ("K1", "G2", "s3")


def test_path_scores_equal_brute_force_on_imagenet_subsets(real: dict[str, Taxonomy]) -> None:
    full = real["imagenet_animal.json"]
    rng = np.random.default_rng(7)
    for trial in range(3):
        tax = full.subset(np.sort(rng.choice(full.n_leaves, 60, replace=False)))
        dec = _decoder(tax)
        ranks = sorted(rng.choice(np.arange(1, tax.max_depth + 1), 4, replace=False).tolist())
        scores = _random_rank_scores(tax, [tax.ranks[d - 1] for d in ranks], batch=5, seed=trial)
        w = {r: float(rng.uniform(0.2, 3)) for r in scores}
        ref = _brute_path_scores(tax, scores, w)
        np.testing.assert_allclose(dec.path_scores(scores, w).numpy(), ref, atol=1e-4)
        assert dec.fuse(scores, w).tolist() == ref.argmax(1).tolist()


# ----------------------------------------------------- confidence, back-off
@pytest.mark.parametrize("name", REAL_FILES)
def test_path_confidence_is_the_ancestors_marginals_non_increasing(real: dict[str, Taxonomy], name: str) -> None:
    tax = real[name]
    p64 = _probs(32, tax.n_leaves, seed=8, alpha=0.05)
    probs = torch.from_numpy(p64).float()
    dec = _decoder(tax)
    ref = _brute_marginals(tax, probs)
    for leaves in (dec.exact(probs), dec.greedy(probs), torch.randint(0, tax.n_leaves, (32,))):
        conf = dec.path_confidence(probs, leaves)
        assert conf.shape == (32, tax.max_depth)
        for b, leaf in enumerate(leaves.tolist()):
            path = tax.path(int(tax.leaves[leaf]))
            row = conf[b].double().numpy()
            np.testing.assert_allclose(row[: len(path)], ref[b, list(path)], atol=1e-4)
            assert np.all(np.diff(row[: len(path)]) <= 0)  # exactly, even in float32
            assert np.isnan(row[len(path):]).all()
    if name == "imagenet_animal.json":  # variable depth: NaN below every shallow leaf
        shallow = np.flatnonzero(tax.depth[tax.leaves] < tax.max_depth)
        conf = dec.path_confidence(probs[: len(shallow[:32])], torch.from_numpy(shallow[:32]).long())
        assert torch.isnan(conf).any(1).all()


def test_reached_stops_at_the_first_rank_that_fails() -> None:
    tax = _three_rank_tree()
    dec = _decoder(tax, thresholds={"kingdom": 0.9, "genus": 0.5, "species": 0.3})
    conf = torch.tensor([
        [0.95, 0.6, 0.35],   # all pass
        [0.95, 0.4, 0.35],   # genus fails: species is not reached though it clears 0.3
        [0.8, 0.8, 0.8],     # kingdom fails: nothing
        [0.9, 0.5, 0.3],     # thresholds are inclusive
        [0.95, 0.6, float("nan")],  # below a shallow leaf
    ])
    assert dec.reached(conf).tolist() == [3, 1, 0, 3, 2]
    assert _decoder(tax, thresholds={"genus": 0.5}).reached(conf).tolist() == [3, 1, 3, 3, 2]  # unset: reported
    assert _decoder(tax).reached(torch.zeros(2, 3)).tolist() == [3, 3]
    gen = torch.Generator().manual_seed(0)
    conf = torch.rand(200, 3, generator=gen)
    depth = dec.reached(conf)
    passes = conf >= torch.tensor([0.9, 0.5, 0.3])
    for b in range(200):
        d = int(depth[b])
        assert passes[b, :d].all() and (d == 3 or not passes[b, d])


def _synthetic_validation(tax: Taxonomy, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Truth leaves, and leaf probabilities from a softmax of noise plus a per-image signal on the
    truth (strong signal: confident and right; weak: diffuse and often wrong)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, tax.n_leaves, n)
    logits = rng.normal(0, 1, (n, tax.n_leaves))
    logits[np.arange(n), truth] += rng.uniform(0, 9, n)
    # siblings share evidence, so the coarse ranks are easier than the leaf
    parent_of_truth = tax.parent[tax.leaves[truth]]
    sib = tax.parent[tax.leaves][None, :] == parent_of_truth[:, None]
    logits += sib * rng.uniform(0, 3, (n, 1))
    return torch.softmax(torch.from_numpy(logits), dim=1).float(), truth


def _check_thresholds(dec: TreeDecoder, probs: torch.Tensor, truth: np.ndarray, target: float, method: str,
                      min_support: int = 5) -> int:
    """The taxa that back-off reports at each rank are right >= target of the time, and each finite
    threshold is the lowest that achieves this; returns how many ranks have a finite threshold."""
    tax = dec.taxonomy
    leaves = dec.decode_leaves(probs, method)
    conf = dec.path_confidence(probs, leaves)
    depth = dec.reached(conf).numpy()
    pred_anc = tax.ancestor_table[tax.leaves[leaves.numpy()]]
    true_anc = tax.ancestor_table[tax.leaves[truth]]
    finite = 0
    for d, rank in enumerate(tax.ranks):
        t = dec.thresholds[rank]
        reported = depth > d
        right = pred_anc[:, d] == true_anc[:, d]
        if math.isinf(t):
            assert not reported.any()
            continue
        finite += 1
        assert reported.sum() >= min_support
        assert right[reported].mean() >= target, (rank, t, right[reported].mean())
        # any lower threshold among the confidences seen would miss the target
        candidates = depth >= d  # passed every shallower rank
        c = conf[:, d].numpy()
        for lower in np.unique(c[candidates & (c < t)])[-20:]:
            assert right[candidates & (c >= lower)].mean() < target
    return finite


@pytest.mark.parametrize("method", ["exact", "greedy"])
def test_calibrate_meets_the_target_precision(real: dict[str, Taxonomy], method: str) -> None:
    tax = real["inat21_animalia.json"]
    probs, truth = _synthetic_validation(tax, 1500, seed=9)
    dec = _decoder(tax)
    for target in (0.8, 0.95):
        thresholds = dec.calibrate(probs, truth, precision=target, method=method)
        assert thresholds == dec.thresholds and list(thresholds) == list(tax.ranks)
        assert _check_thresholds(dec, probs, truth, target, method) == 7
    # precision that no subset of 5 or more reaches: no rank is ever reported, but the one kingdom
    # (every photo's confidence there is 1) always is
    assert dec.calibrate(probs, truth, precision=1.01) == {r: 0.0 if r == "kingdom" else math.inf for r in tax.ranks}


def test_calibrate_on_a_variable_depth_tree(real: dict[str, Taxonomy]) -> None:
    tax = real["imagenet_animal.json"]
    probs, truth = _synthetic_validation(tax, 1500, seed=10)
    dec = _decoder(tax)
    dec.calibrate(probs, truth, precision=0.9)
    assert _check_thresholds(dec, probs, truth, 0.9, "exact") >= 8


def test_calibrate_gives_inf_to_a_rank_that_cannot_meet_the_target() -> None:
    tax = _three_rank_tree()
    dec = _decoder(tax)
    # always confident in s2 while the truth is its sibling s1: kingdom and genus right, species wrong
    probs = torch.tensor([[0.1, 0.85, 0.05, 0.0, 0.0]] * 10)
    th = dec.calibrate(probs, np.zeros(10, dtype=int), precision=0.9)
    assert th == {"kingdom": pytest.approx(1.0), "genus": pytest.approx(0.95), "species": math.inf}
    assert dec.decode(probs[:1])[0].reached_path == ("K1", "G1")
    assert dec.calibrate(probs, np.zeros(10, dtype=int), min_support=11)["kingdom"] == math.inf


def test_calibrate_counts_every_image_at_a_tied_threshold() -> None:
    tax = Taxonomy.from_paths([("K", "A"), ("K", "B")], ranks=("kingdom", "species"))
    dec = _decoder(tax)
    # nine sure and right; two at 0.5, both decoded as A, one right: a threshold of 0.5 admits
    # both (precision 10/11 < 0.95), so the threshold must stay at 0.9
    probs = torch.tensor([[0.9, 0.1]] * 9 + [[0.5, 0.5]] * 2)
    truth = np.array([0] * 9 + [0, 1])
    for order in (np.arange(11), np.arange(11)[::-1].copy()):
        th = dec.calibrate(probs[order], truth[order], precision=0.95, min_support=1)
        assert th["species"] == pytest.approx(0.9)


def test_calibrate_sets_each_rank_on_the_images_the_shallower_ranks_let_through() -> None:
    tax = Taxonomy.from_paths([("K1", "G1", "a"), ("K1", "G1", "b"), ("K1", "G2", "c"), ("K2", "G3", "d"),
                               ("K2", "G4", "e")], ranks=RANKS3)
    dec = _decoder(tax)
    probs = torch.tensor([[0.6, 0.0, 0.35, 0.05, 0.0]] * 4     # K1 at 0.95, G1 at 0.6: 3 of 4 right
                         + [[0.7, 0.0, 0.0, 0.3, 0.0]] * 8     # K1 and G1 at 0.7, right
                         + [[0.5, 0.0, 0.2, 0.15, 0.15]] * 8)  # K1 at 0.7, G1 at 0.5, wrong
    truth = np.array([0, 0, 0, 2] + [0] * 8 + [3] * 8)
    th = dec.calibrate(probs, truth, precision=0.85, min_support=1)
    # only the first four clear the kingdom (0.95); G1 at 0.6 is then 3 of 4 right. Over all
    # twenty, 0.6 would have looked fine (11 of 12) and the reported genera been 75% right.
    assert th["kingdom"] == pytest.approx(0.95) and th["genus"] == math.inf
    assert _check_thresholds(dec, probs, truth, 0.85, "exact", min_support=1) == 1


def test_calibrate_counts_a_deep_answer_for_a_shallow_truth_as_wrong() -> None:
    tax = Taxonomy.from_paths([("K", "G"), ("K", "G", "s1"), ("K", "G", "s2"), ("K", "H", "s3")], ranks=RANKS3)
    dec = _decoder(tax)
    # five images of s1 decoded as s1 at 0.8; five of the genus-only label G decoded as s1 at 0.9:
    # right at the genus, but a species answer for an image that has none is wrong
    probs = torch.tensor([[0.0, 0.8, 0.1, 0.1]] * 5 + [[0.05, 0.9, 0.0, 0.05]] * 5)
    truth = np.array([1] * 5 + [0] * 5)
    th = dec.calibrate(probs, truth, precision=0.9, min_support=1)
    assert th["genus"] == pytest.approx(0.9)  # every genus answer is right
    assert th["species"] == math.inf  # 0.9: 0 of 5 right; 0.8: 5 of 10
    assert _check_thresholds(dec, probs, truth, 0.9, "exact", min_support=1) == 2


# ---------------------------------------------------------------- answers
@pytest.mark.parametrize("name", REAL_FILES)
@pytest.mark.parametrize("method", ["exact", "greedy"])
def test_decode_returns_full_predictions(real: dict[str, Taxonomy], name: str, method: str) -> None:
    tax = real[name]
    p64 = _probs(10, tax.n_leaves, seed=11, alpha=0.01)
    probs = torch.from_numpy(p64).float()
    thresholds = dict(zip(tax.ranks, np.linspace(0.3, 0.7, tax.max_depth).tolist()))
    dec = _decoder(tax, thresholds=thresholds)
    ref = _brute_marginals(tax, probs)
    leaves = dec.decode_leaves(probs, method)
    preds = dec.decode(probs, method, top_k=5)
    assert len(preds) == 10 and all(isinstance(p, Prediction) for p in preds)
    for b, pred in enumerate(preds):
        node = int(tax.leaves[pred.leaf])
        assert pred.leaf == int(leaves[b])
        assert pred.path == tax.path_names(node)
        assert list(pred.confidence) == list(tax.ranks[: len(pred.path)])
        np.testing.assert_allclose(list(pred.confidence.values()), ref[b, list(tax.path(node))], atol=1e-4)
        ok = [pred.confidence[r] >= thresholds[r] for r in pred.confidence]
        depth = ok.index(False) if False in ok else len(ok)
        assert pred.rank_reached == (tax.ranks[depth - 1] if depth else None)
        assert pred.reached_path == pred.path[:depth]
        alt_leaves = [tax.leaf_index[tax.node_of_path(path)] for path, _ in pred.alternatives]
        assert pred.leaf not in alt_leaves
        top5 = np.argsort(-p64[b], kind="stable")[:5].tolist()
        assert alt_leaves == [i for i in top5 if i != pred.leaf][:4]
        assert [s for _, s in pred.alternatives] == pytest.approx(p64[b, alt_leaves].tolist(), rel=1e-6)
    assert all(p.alternatives == [] for p in dec.decode(probs, method, top_k=1))
    many = dec.decode(probs[:1], method, top_k=tax.n_leaves + 10)[0]
    assert len(many.alternatives) == tax.n_leaves - 1


@pytest.mark.parametrize("name", REAL_FILES)
def test_decode_at_a_rank_answers_its_most_probable_taxon(real: dict[str, Taxonomy], name: str) -> None:
    tax = real[name]
    p64 = _probs(6, tax.n_leaves, seed=12, alpha=0.02)
    probs = torch.from_numpy(p64).float()
    ref = _brute_marginals(tax, probs)
    rank = tax.ranks[2]
    nodes = tax.nodes_at_rank(rank)
    dec = _decoder(tax, thresholds={tax.ranks[0]: 0.99})
    for b, pred in enumerate(dec.decode(probs, top_k=3, rank=rank)):
        order = nodes[np.argsort(-ref[b, nodes], kind="stable")]
        assert pred.path == tax.path_names(int(order[0])) and len(pred.path) == 3
        assert pred.leaf == tax.leaf_index[order[0]]  # -1 unless that taxon is itself a label
        assert list(pred.confidence) == list(tax.ranks[:3])
        np.testing.assert_allclose(list(pred.confidence.values()), ref[b, list(tax.path(int(order[0])))], atol=1e-4)
        assert [path for path, _ in pred.alternatives] == [tax.path_names(int(n)) for n in order[1:3]]
        assert pred.rank_reached == (tax.ranks[2] if pred.confidence[tax.ranks[0]] >= 0.99 else None)


def test_decode_backs_off_to_the_trusted_rank() -> None:
    tax = Taxonomy.from_paths(SMALL_PATHS, ranks=RANKS3)
    dec = _decoder(tax, thresholds={"kingdom": 0.9, "genus": 0.8, "species": 0.7})
    probs = torch.tensor([[0.45, 0.5, 0.05, 0.0], [0.05, 0.9, 0.05, 0.0], [0.3, 0.3, 0.0, 0.4]])
    a, b, c = dec.decode(probs, top_k=2)
    assert a.path == ("Plantae", "Rosa", "Rosa rugosa") and a.rank_reached == "genus"
    assert a.reached_path == ("Plantae", "Rosa") and a.confidence == pytest.approx(
        {"kingdom": 1.0, "genus": 0.95, "species": 0.5})
    assert a.alternatives == [(("Plantae", "Rosa", "Rosa canina"), pytest.approx(0.45))]
    assert b.rank_reached == "species" and b.reached_path == b.path
    assert c.path == ("Animalia", "Vulpes", "Vulpes vulpes") and c.rank_reached is None and c.reached_path == ()


def test_unknown_method_is_an_error() -> None:
    dec = _decoder(Taxonomy.from_paths(SMALL_PATHS, ranks=RANKS3))
    probs = torch.full((1, 4), 0.25)
    for call in (lambda: dec.decode(probs, "beam"), lambda: dec.decode_leaves(probs, "Exact"),
                 lambda: dec.calibrate(probs, [0], method="viterbi")):
        with pytest.raises(ValueError, match="unknown decoding method"):
            call()


def test_flat_paths_and_rank_scores_from_logits() -> None:
    tax = Taxonomy.from_paths(SMALL_PATHS, ranks=RANKS3)
    logits = {"kingdom": torch.tensor([[0.0, 1.0], [3.0, 1.0]]),
              "species": torch.tensor([[5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])}
    assert flat_paths(tax, logits) == [("Animalia", "Rosa canina"), ("Plantae", "Bellis perennis")]
    scores = rank_scores_from_logits({**logits, 2: torch.tensor([[1, 2, 3]], dtype=torch.float64)})
    assert list(scores) == ["kingdom", "species", 2]
    for rank, s in scores.items():
        assert s.dtype == torch.float32
        np.testing.assert_allclose(s.exp().sum(1).numpy(), 1.0, atol=1e-6)
        x = (logits[rank] if rank in logits else torch.tensor([[1.0, 2.0, 3.0]])).double()
        np.testing.assert_allclose(s.numpy(), (x - torch.logsumexp(x, 1, keepdim=True)).numpy(), atol=1e-6)


def test_confidences_stay_in_unit_range_and_rounding_never_drops_a_rank() -> None:
    tax = Taxonomy.from_paths([("Plantae", "Rosa", "Rosa a"), ("Plantae", "Rosa", "Rosa b"),
                               ("Plantae", "Salix", "Salix c")], ranks=("kingdom", "genus", "species"))
    dec = TreeDecoder(tax)
    # float32 sums that overshoot 1 (as summed softmax outputs do in their last bits)
    probs = torch.tensor([[0.7, 0.3000001, 1e-7], [0.2, 0.2, 0.6000001]])
    conf = dec.path_confidence(probs, dec.exact(probs))
    assert float(conf.max()) <= 1.0 and float(conf.min()) >= 0.0
    truth = np.array([0, 2] * 5)
    thresholds = dec.calibrate(probs.repeat(5, 1), truth, precision=0.99, min_support=1)
    assert thresholds["kingdom"] == 0.0  # one kingdom: always reported
    dec.thresholds = {"kingdom": 0.0, "genus": 0.9999999, "species": math.inf}
    below = torch.tensor([[1.0, 0.99999994, 0.5]])  # one float32 step under the threshold
    assert dec.reached(below).tolist() == [2]


def test_per_rank_targets_and_reliability_on_a_real_tree(real: dict[str, Taxonomy]) -> None:
    tax = real["inat21_animalia.json"]
    probs, truth = _synthetic_validation(tax, 1500, seed=11)
    dec = _decoder(tax)
    loose = dec.calibrate(probs, truth, precision=0.6)
    strict = dec.calibrate(probs, truth, precision=0.6, precision_at={"species": 0.95})
    assert {r: t for r, t in strict.items() if r != "species"} == {r: t for r, t in loose.items() if r != "species"}
    assert strict["species"] >= loose["species"]
    with pytest.raises(ValueError, match="no rank tribe"):
        dec.calibrate(probs, truth, precision_at={"tribe": 0.9})
    rel = dec.reliability(probs, truth, bins=5)
    assert list(rel) == list(tax.ranks) and all(sum(r["count"]) == 1500 for r in rel.values())
    conf, right = dec.scored_paths(probs, truth)
    top = conf[:, -1] >= 0.8  # the last bin, closed at 1
    assert rel["species"]["count"][-1] == int(top.sum())
    assert math.isclose(rel["species"]["accuracy"][-1], float(right[top, -1].double().mean()), abs_tol=1e-6)


def test_blocked_argmax_and_folds_give_exactly_what_one_pass_gives():
    """``exact`` reads block maxima first and the folds read the deepest columns a block at a time:
    with blocks of a few leaves (so that every path through the blocks is taken) the leaves and
    marginals are bit for bit those of one block (ties: the first; a NaN row: argmax's answer)."""
    from taxonlens.synthworld import random_taxonomy

    tax = random_taxonomy(300, seed=3)
    probs = torch.softmax(3 * torch.randn(6, tax.n_leaves, generator=torch.Generator().manual_seed(0)), dim=1)
    probs[1, [5, 250]] = 1.0  # a tie across blocks
    probs[2, 17] = float("nan")
    probs[3] = 0.0
    whole, blocked = TreeDecoder(tax), TreeDecoder(tax)
    whole._ARGMAX_BLOCK = whole._FOLD_BLOCK = 10**9
    blocked._ARGMAX_BLOCK, blocked._FOLD_BLOCK = 7, 3
    assert torch.equal(blocked.exact(probs), probs.argmax(dim=1)) and int(blocked.exact(probs)[1]) == 5
    finite = probs[[0, 1, 3, 4, 5]]
    assert torch.equal(blocked.exact(finite), finite.argmax(dim=1))
    assert torch.equal(blocked.internal_marginals(finite), whole.internal_marginals(finite))

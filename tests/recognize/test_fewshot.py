"""Few-shot classifiers against hand-computed cases, the k-shot sampling protocol, and
1-shot vs 5-shot on a synthworld with raw-pixel features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from taxonlens.recognize.fewshot import FewShotScore, LinearProbe, SimpleShot, few_shot_accuracy, sample_shots
from taxonlens.recognize.pixels import pixel_features
from taxonlens.synthworld import SynthWorld, random_taxonomy


# ------------------------------------------------------------- SimpleShot
def test_simpleshot_centres_normalises_and_averages_by_hand():
    x = np.array([[3.0, 1.0], [1.0, 1.0], [1.0, 3.0]])
    clf = SimpleShot(temperature=0.5).fit(x, np.array([0, 0, 1]))
    # mean (5/3, 5/3); centred rows (4/3, -2/3), (-2/3, -2/3), (-2/3, 4/3); normalised:
    a, b, c = np.array([2, -1]) / math.sqrt(5), np.array([-1, -1]) / math.sqrt(2), np.array([-1, 2]) / math.sqrt(5)
    np.testing.assert_allclose(clf.mean_, [5 / 3, 5 / 3], rtol=1e-6)
    np.testing.assert_allclose(clf.prototypes_, [(a + b) / 2, c], rtol=1e-6, atol=1e-7)
    # the query (3, 3) centres to (4/3, 4/3) -> (1, 1)/sqrt(2); scores are -distance / T
    q = np.array([1, 1]) / math.sqrt(2)
    d = np.array([np.linalg.norm(q - (a + b) / 2), np.linalg.norm(q - c)])
    np.testing.assert_allclose(clf.decision_function(np.array([[3.0, 3.0]])), [-d / 0.5], rtol=1e-5)
    expected = np.exp(-d / 0.5) / np.exp(-d / 0.5).sum()
    proba = clf.predict_proba(torch.tensor([[3.0, 3.0]]))
    assert isinstance(proba, torch.Tensor) and proba.dtype == torch.float32
    np.testing.assert_allclose(proba, [expected], rtol=1e-5)
    assert clf.predict(np.array([[3.0, 3.0]])).tolist() == [int(np.argmin(d))]


def test_simpleshot_cosine_metric_and_support_points_classify_as_themselves():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 8))
    y = np.arange(6)
    for metric in ("euclidean", "cosine"):
        clf = SimpleShot(metric=metric).fit(x, y)
        assert clf.predict(x).tolist() == y.tolist()  # 1-shot: each prototype is its own support point
    cos = SimpleShot(metric="cosine", temperature=1.0).fit(x, y)
    z = cos.transform(x)
    np.testing.assert_allclose(cos.decision_function(x), z @ z.T, atol=1e-6)


def test_unsupported_classes_get_probability_zero():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    for clf in (SimpleShot(), LinearProbe()):
        clf.fit(x, np.array([0, 0, 2]), n_classes=4)
        proba = clf.predict_proba(np.array([[0.5, 0.5], [1.0, 0.0], [-1.0, 2.0]]))
        assert proba.shape == (3, 4)
        assert (proba[:, [1, 3]] == 0).all()
        np.testing.assert_allclose(proba.sum(dim=1), 1, atol=1e-6)
        assert set(clf.predict(np.random.default_rng(0).normal(size=(50, 2))).tolist()) <= {0, 2}
        assert torch.isinf(clf.decision_function(x)[:, [1, 3]]).all()


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(1)
    x, q, y = rng.normal(size=(12, 5)).astype(np.float32), rng.normal(size=(4, 5)), np.repeat(np.arange(4), 3)
    for make in (SimpleShot, LinearProbe):
        a = make().fit(x, y).predict_proba(q)
        b = make().fit(torch.from_numpy(x), torch.from_numpy(y)).predict_proba(torch.from_numpy(q))
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------ LinearProbe
def _blobs(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, -1.0, 0.5]])
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + 0.15 * rng.normal(size=(n_per_class, 3)) for c in centres])
    return x, np.repeat(np.arange(3), n_per_class)


def test_linear_probe_separates_a_separable_set_and_is_deterministic():
    x, y = _blobs(10, seed=0)
    probe = LinearProbe(c=10.0).fit(x, y)
    assert probe.predict(x).tolist() == y.tolist()
    x_test, y_test = _blobs(30, seed=1)
    assert (probe.predict(x_test).numpy() == y_test).mean() == 1.0
    assert probe.predict_proba(x).max(dim=1).values.min() > 0.9  # confident on its own support
    again = LinearProbe(c=10.0).fit(x, y)
    assert torch.equal(probe.weight_, again.weight_) and torch.equal(probe.bias_, again.bias_)


def test_linear_probe_penalty_shrinks_weights_and_optimum_has_zero_gradient():
    x, y = _blobs(10, seed=0)
    norms = [LinearProbe(c=c).fit(x, y).weight_.norm().item() for c in (0.01, 1.0, 100.0)]
    assert norms[0] < norms[1] < norms[2]
    # at the optimum the gradient of sum CE + ||W||^2 / (2c) vanishes
    probe = LinearProbe(c=1.0).fit(x, y)
    w = probe.weight_.double().requires_grad_()
    b = probe.bias_.double().requires_grad_()
    xd = torch.from_numpy(x)
    loss = torch.nn.functional.cross_entropy(xd @ w.T + b, torch.from_numpy(y), reduction="sum") + (w * w).sum() / 2
    loss.backward()
    assert w.grad.abs().max() < 1e-4 and b.grad.abs().max() < 1e-4


def test_single_class_support():
    probe = LinearProbe().fit(np.ones((2, 3)), np.array([1, 1]), n_classes=3)
    np.testing.assert_allclose(probe.predict_proba(np.zeros((2, 3))), [[0, 1, 0]] * 2)


# --------------------------------------------------------------- errors
def test_bad_input():
    with pytest.raises(ValueError, match="one label per feature row"):
        SimpleShot().fit(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="2-D"):
        SimpleShot().fit(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        LinearProbe().fit(np.zeros((3, 2)), np.array([0, 1, 2]), n_classes=2)
    with pytest.raises(ValueError, match="labels must lie"):
        SimpleShot().fit(np.zeros((2, 2)), np.array([0, -1]))
    with pytest.raises(ValueError, match="integer class ids"):
        SimpleShot().fit(np.zeros((2, 2)), np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match="at least one"):
        SimpleShot().fit(np.zeros((0, 2)), np.array([], dtype=np.int64))
    with pytest.raises(RuntimeError, match="not fitted"):
        SimpleShot().predict(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="fitted on 2"):
        SimpleShot().fit(np.eye(2), np.array([0, 1])).predict_proba(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="metric"):
        SimpleShot(metric="manhattan")
    with pytest.raises(ValueError, match="temperature"):
        SimpleShot(temperature=0)
    with pytest.raises(ValueError, match="c must be"):
        LinearProbe(c=0)


# -------------------------------------------------------------- protocol
def test_sample_shots_takes_k_per_class_or_all():
    labels = np.array([0, 1, 0, 2, 0, 1, 0, 0])
    idx = sample_shots(labels, 3, seed=0)
    assert idx.dtype == np.int64 and (np.diff(idx) > 0).all()
    assert np.bincount(labels[idx]).tolist() == [3, 2, 1]  # class 1 has 2, class 2 has 1: all of them
    assert sample_shots(labels, 3, seed=0).tolist() == idx.tolist()
    draws = {tuple(sample_shots(labels, 1, seed=s)) for s in range(20)}
    assert len(draws) > 1  # the seed changes the draw
    assert all(np.bincount(labels[list(d)]).tolist() == [1, 1, 1] for d in draws)
    assert sample_shots(torch.from_numpy(labels), 100, seed=3).tolist() == list(range(len(labels)))
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        sample_shots(labels, 0)


def test_few_shot_accuracy_on_blobs_and_bad_input():
    x, y = _blobs(8, seed=0)
    x_test, y_test = _blobs(20, seed=1)
    score = few_shot_accuracy(x, y, x_test, y_test, k=1, seeds=3)
    assert isinstance(score, FewShotScore) and score.mean > 0.9 and score.std >= 0
    mean, std = few_shot_accuracy(x, y, x_test, y_test, k=5, seeds=[4, 5], method="linear")
    assert mean == 1.0 and std == 0.0
    custom = few_shot_accuracy(x, y, x_test, y_test, k=5, seeds=2, method=lambda: SimpleShot(metric="cosine"))
    assert custom.mean == 1.0
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        few_shot_accuracy(x, y, x_test, y_test, k=0)
    with pytest.raises(ValueError, match="one label per feature row"):
        few_shot_accuracy(x, y[:-1], x_test, y_test, k=1)
    with pytest.raises(ValueError, match="one label per feature row"):
        few_shot_accuracy(x, y, x_test, y_test[:-1], k=1)
    with pytest.raises(ValueError, match="columns"):
        few_shot_accuracy(x, y, x_test[:, :2], y_test, k=1)
    with pytest.raises(ValueError, match="unknown few-shot method"):
        few_shot_accuracy(x, y, x_test, y_test, k=1, method="svm")
    with pytest.raises(ValueError, match="seed"):
        few_shot_accuracy(x, y, x_test, y_test, k=1, seeds=[])


# ------------------------------------------------------------ synthworld
@pytest.fixture(scope="module")
def world_pixels() -> dict[str, object]:
    """Raw-pixel features of a 40-species world (6 held out as novel, so 34 classes have train photos)."""
    world = SynthWorld.create(random_taxonomy(200, seed=0), n_species=40, images_per_species=15, novel_fraction=0.15,
                              size=32, seed=0, nuisance=0.5)
    train, test = world.dataset("train"), world.dataset("test")
    return {
        "world": world,
        "x": pixel_features(img for img, _ in train), "y": train.labels(),
        "x_test": pixel_features(img for img, _ in test), "y_test": test.labels(),
    }


def test_five_shot_beats_one_shot_beats_chance_on_synthworld(world_pixels):
    d = world_pixels
    n_seen = len(np.unique(d["y"]))
    chance = 1 / n_seen
    assert n_seen == 34
    # measured: SimpleShot (seeds 0..4) 0.216 / 0.361, linear probe (seeds 0..2) 0.203 / 0.454; chance 0.029
    s1, s5 = (few_shot_accuracy(d["x"], d["y"], d["x_test"], d["y_test"], k, 5, "simpleshot") for k in (1, 5))
    assert s1.mean > max(0.15, 4 * chance)
    assert s5.mean > 0.29 and s5.mean > s1.mean + 0.08
    assert 0 < s1.std < 0.1 and s5.std < 0.1
    l1, l5 = (few_shot_accuracy(d["x"], d["y"], d["x_test"], d["y_test"], k, 3, "linear") for k in (1, 5))
    assert l1.mean > max(0.15, 4 * chance)
    assert l5.mean > 0.38 and l5.mean > l1.mean + 0.15


def test_novel_species_are_never_predicted_over_all_leaves(world_pixels):
    d = world_pixels
    world = d["world"]
    idx = sample_shots(d["y"], 5, seed=0)
    clf = SimpleShot().fit(d["x"][idx], d["y"][idx], n_classes=world.taxonomy.n_leaves)
    proba = clf.predict_proba(d["x_test"])
    novel = sorted(world.novel)
    assert proba.shape == (len(d["y_test"]), world.taxonomy.n_leaves)
    assert (proba[:, novel] == 0).all()
    np.testing.assert_allclose(proba.sum(dim=1), 1, atol=1e-5)

"""Zero-shot classification over a real taxonomy (a 43-species sample of iNat21 plants)
at the leaves and at a higher rank, with a tiny encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from taxonlens.models.encoders import load_encoder
from taxonlens.recognize.labels import label_embeddings, taxon_prompts
from taxonlens.recognize.zeroshot import ZeroShotClassifier, rank_classifiers
from taxonlens.taxonomy import Taxonomy, load_taxonomy


class NoText:
    """An encoder whose text tower must not be used."""

    def __init__(self, encoder):
        self.inner = encoder

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_texts(self, texts):
        raise AssertionError("the text encoder was called")


@pytest.fixture(scope="module")
def plants(builtin_taxonomies: Path) -> Taxonomy:
    full = load_taxonomy(builtin_taxonomies / "inat21_plantae.json")
    return full.subset(np.arange(0, full.n_leaves, 100))


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny-clip")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One label-embedding cache for the module: each label set is embedded once."""
    return tmp_path_factory.mktemp("labels")


@pytest.fixture(scope="module")
def features(encoder) -> torch.Tensor:
    pixels = torch.from_numpy(np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32))
    return encoder.encode_images(pixels)


@pytest.mark.parametrize("rank", [None, "family"])
def test_shapes_probabilities_and_logits(plants, encoder, features, rank, cache):
    clf = ZeroShotClassifier(encoder, plants, rank, cache_dir=cache)
    expected_nodes = plants.leaves if rank is None else plants.nodes_at_rank(rank)
    assert np.array_equal(clf.nodes, expected_nodes)
    n = len(expected_nodes)
    assert n == (43 if rank is None else 34)
    assert clf.embeddings.shape == (n, encoder.embed_dim) and clf.embeddings.dtype == torch.float32
    np.testing.assert_allclose(clf.embeddings.norm(dim=1), 1, atol=1e-5)
    # each column is the embedding of its taxon's own caption
    prompts = taxon_prompts(plants, clf.nodes)
    if rank == "family":
        assert prompts[0] == [f"a photo of {' '.join(plants.path_names(int(clf.nodes[0])))}."]
    torch.testing.assert_close(clf.embeddings, encoder.encode_texts([p[0] for p in prompts]), atol=1e-5, rtol=0)
    logits = clf.logits(features)
    assert logits.shape == (len(features), n)
    torch.testing.assert_close(logits, encoder.logit_scale * features @ clf.embeddings.T)
    proba = clf.predict_proba(features)
    assert proba.shape == (len(features), n) and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(dim=1), 1, atol=1e-5)
    torch.testing.assert_close(proba, torch.softmax(logits, dim=1))


@pytest.mark.parametrize("rank", [None, "family"])
def test_a_label_embedding_as_image_feature_is_classified_as_that_label(plants, encoder, rank, cache):
    clf = ZeroShotClassifier(encoder, plants, rank, cache_dir=cache)
    assert clf.predict_proba(clf.embeddings).argmax(dim=1).tolist() == list(range(len(clf.nodes)))


def test_leaf_captions_use_the_epithet_under_the_genus(plants):
    leaf = int(plants.leaves[0])
    path = plants.path_names(leaf)
    prompt = taxon_prompts(plants, [leaf])[0][0]
    assert prompt == f"a photo of {' '.join(path[:-1])} {path[-1].split(' ', 1)[1]}."


def test_embeddings_argument_skips_the_text_encoder(plants, encoder, features, cache):
    emb = ZeroShotClassifier(encoder, plants, "genus", cache_dir=cache).embeddings
    clf = ZeroShotClassifier(NoText(encoder), plants, "genus", embeddings=emb.double())
    assert clf.embeddings.dtype == torch.float32 and torch.equal(clf.embeddings, emb)
    assert clf.predict_proba(features).shape == (len(features), len(emb))
    with pytest.raises(ValueError, match=r"shape \(42, 128\), expected \(43, 128\)"):
        ZeroShotClassifier(NoText(encoder), plants, None, embeddings=torch.zeros(42, 128))
    with pytest.raises(ValueError, match="expected"):
        ZeroShotClassifier(NoText(encoder), plants, None, embeddings=torch.zeros(43, 64))


def test_text_type_and_cache_are_shared(plants, encoder, tmp_path):
    a = ZeroShotClassifier(encoder, plants, "order", text_type="scientific", cache_dir=tmp_path)
    prompts = taxon_prompts(plants, a.nodes, "scientific")
    assert torch.equal(a.embeddings, label_embeddings(NoText(encoder), prompts, tmp_path))  # served by the cache
    b = ZeroShotClassifier(NoText(encoder), plants, "order", text_type="scientific", cache_dir=tmp_path)
    assert torch.equal(a.embeddings, b.embeddings)


def test_rank_classifiers_cover_every_rank(plants, encoder, cache):
    classifiers = rank_classifiers(encoder, plants, cache_dir=cache)
    assert list(classifiers) == list(plants.ranks)
    for rank, clf in classifiers.items():
        assert np.array_equal(clf.nodes, plants.nodes_at_rank(rank)) and clf.rank == rank
    assert classifiers["kingdom"].embeddings.shape == (1, encoder.embed_dim)


def test_rows_of_one_leaf_add_their_probabilities(plants, encoder, features, cache):
    """Several embedding rows for one leaf (a TreeOfLife lineage listed twice): a softmax over
    the rows, summed per leaf, as pybioclip sums the rows of a lineage."""
    base = ZeroShotClassifier(encoder, plants, cache_dir=cache)
    column_leaf = np.concatenate([np.arange(plants.n_leaves), [0, 0, 5]])
    extra = torch.nn.functional.normalize(torch.randn(3, encoder.embed_dim, generator=torch.Generator().manual_seed(0)),
                                          dim=1)
    clf = ZeroShotClassifier(NoText(encoder), plants, embeddings=torch.cat([base.embeddings, extra]),
                             column_leaf=column_leaf)
    probs = clf.predict_proba(features)
    rows = torch.softmax(clf.logits(features), dim=1)
    assert probs.shape == (len(features), plants.n_leaves)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(features)))
    torch.testing.assert_close(probs[:, 0], rows[:, 0] + rows[:, -3] + rows[:, -2])
    torch.testing.assert_close(probs[:, 1], rows[:, 1])
    identity = ZeroShotClassifier(NoText(encoder), plants, embeddings=base.embeddings,
                                  column_leaf=np.arange(plants.n_leaves))
    assert identity.column_leaf is None
    with pytest.raises(ValueError, match="needs rank=None"):
        ZeroShotClassifier(NoText(encoder), plants, "genus", embeddings=base.embeddings, column_leaf=column_leaf)

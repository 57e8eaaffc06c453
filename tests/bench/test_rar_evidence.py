"""The RAR evidence benchmark (``taxonlens bench rar``) at a tiny size: its structure and
invariants (every figure a percentage, top-k recall grows with k, a reranker picks among the
retrieved candidates so it never beats their recall); no timing assertion."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from taxonlens.bench import TinySFTSpec, WorldSpec
from taxonlens.bench.rar import FIGURES, RarSpec, bench_rar_evidence, top_k_recall
from taxonlens.errors import TaxonlensError

pytestmark = [pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

KS = (3, 5, 10)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    spec = RarSpec(world=WorldSpec(n_species=12, images_per_species=5, novel_fraction=0.0), ks=KS, encoder_epochs=2,
                   ranker=TinySFTSpec(epochs=1))
    return bench_rar_evidence(spec, workdir=tmp_path_factory.mktemp("bench-rar"))


def _arms(result):
    return [("encoder", result.encoder), *((f"rerank k={k}", r) for k, r in result.rerank.items())]


def test_structure(result):
    assert {f.name for f in fields(result)} == {"spec", "world", "encoder_training", "ranker_training", "seconds",
                                                "total_seconds", "n_test", "chance", "encoder", "top_k_recall", "rerank"}
    assert list(result.spec.ks) == list(KS) and result.world["species"] == 12
    records = result.world["records"]
    assert set(records) == {"train", "val", "test"} and result.n_test == records["test"] > 0
    assert result.ranker_training["questions"] == records["train"] and result.ranker_training["epochs"] == 1
    assert set(result.top_k_recall) == set(result.rerank) == set(KS)
    assert set(result.seconds) == {"world", "encoder_training", "ranker_data", "ranker_training", "encoder_test",
                                      *(f"rerank_k{k}" for k in KS)}
    for _, arm in _arms(result):
        assert {f.name for f in fields(arm)} == {*FIGURES, "per_rank"}
        assert len(arm.per_rank) == 7  # random_taxonomy's ranks


def test_every_figure_is_a_percentage(result):
    values = [result.chance, *result.top_k_recall.values()]
    for _, arm in _arms(result):
        values += [getattr(arm, f) for f in FIGURES] + list(arm.per_rank.values())
    assert all(0 <= v <= 100 for v in values)


def test_recall_grows_with_k_and_bounds_the_reranker(result):
    recall = [result.top_k_recall[k] for k in KS]
    assert recall == sorted(recall)
    assert result.encoder.top1 <= recall[0] + 1e-9
    for k in KS:
        arm = result.rerank[k]
        assert arm.top1 <= result.top_k_recall[k] + 1e-9, k
        assert arm.acc_leaf <= result.top_k_recall[k] + 1e-9, k


def test_exact_decoding_leaf_accuracy_is_its_hca(result):
    for name, arm in _arms(result):
        assert arm.hca == pytest.approx(arm.acc_leaf), name


def test_top_k_recall():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    truth = torch.tensor([2, 0])
    assert [top_k_recall(probs, truth, k) for k in (1, 2, 3)] == [0.0, 0.0, 100.0]
    assert top_k_recall(probs, torch.tensor([0, 2]), 1) == 100.0


def test_k_needs_enough_species():
    with pytest.raises(TaxonlensError, match="species"):
        bench_rar_evidence(RarSpec(world=WorldSpec(n_species=4), ks=(3, 5)))
    with pytest.raises(TaxonlensError, match="2..26"):
        bench_rar_evidence(RarSpec(ks=(1, 3)))

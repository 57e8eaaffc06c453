"""The RAR evidence benchmark (``taxonlens bench rar``) from the micro pretrained start: per-photo
values over seeds for every arm, intervals, claims judged, the ranker stopped early on its
validation loss, and a reranker that only ever picks among the retrieved candidates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rich.console import Console

from taxonlens.bench.claims import stack
from taxonlens.bench.rar import RarSpec, bench_rar_evidence, encoder_part, recall_values, top1_values
from taxonlens.errors import TaxonlensError
from taxonlens.synthworld.spec import WorldSpec
from taxonlens.train.pretrain import PretrainSpec

pytestmark = [pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

KS = (2, 3)
RECORDS = 6
LABELS = {"reproduced", "not reproduced", "reversed"}


@pytest.fixture(scope="module")
def result(micro_start, tmp_path_factory):
    spec = RarSpec(start=micro_start.spec, start_folder=str(micro_start.folder), ks=(3, 2), seeds=(0, 1),
                   records_per_split=RECORDS, splits=("seen", "novel"), encoder_share=0.5, encoder_epochs=1,
                   ranker_lists=12, ranker_epochs=3, patience=1, val_lists=4)
    return bench_rar_evidence(spec, workdir=tmp_path_factory.mktemp("bench-rar"))


def _values(result):
    return stack({seed: {arm: {tuple(k.split("/")): v for k, v in figs.items()} for arm, figs in run.items()}
                  for seed, run in result.runs.items()})


def test_every_arm_keeps_per_photo_values_of_every_seed(result):
    assert result.spec.ks == KS and result.world["test_photos"] == {"seen": RECORDS, "novel": RECORDS}
    assert result.world["encoder_photos"] + result.world["ranker_photos"] == result.world["photos"]["train"]
    assert result.world["ranker_lists"] == 12 and result.world["val_lists"] == 4
    values = _values(result)
    assert set(values) == {"encoder", "rerank@2", "rerank@3"}
    for arm, figures in values.items():
        keys = {(split, fig) for split in ("seen", "novel")
                for fig in ("species", "genus", *(("recall",) if arm != "encoder" else ()))}
        assert set(figures) == keys, arm
        for v in figures.values():
            assert v.shape == (2, RECORDS) and set(np.unique(v)) <= {0.0, 100.0}
    assert np.array_equal(values["encoder"]["seen", "species"][0], values["encoder"]["seen", "species"][1])


def test_a_reranker_only_picks_among_the_retrieved(result):
    values = _values(result)
    for k in KS:
        arm = values[f"rerank@{k}"]
        for split in ("seen", "novel"):
            assert np.all(arm[split, "species"] <= arm[split, "recall"]), (k, split)
            assert np.all(values["encoder"][split, "species"] <= arm[split, "recall"]), (k, split)
    assert np.all(values["rerank@2"]["seen", "recall"] <= values["rerank@3"]["seen", "recall"])


def test_intervals_and_claims(result):
    for arm, figures in result.estimates.items():
        for key, e in figures.items():
            assert e["low"] <= e["mean"] <= e["high"], (arm, key)
    assert [row["arm"] for row in result.judged] == ["rerank@2", "rerank@3"]
    for row in result.judged:
        assert row["label"] in LABELS and row["baseline"] == "encoder" and row["figure"] == "seen/species"
        assert (row["seeds"], row["records"]) == (2, RECORDS)
    console = Console(record=True, width=200)
    console.print(result.render())
    text = console.export_text()
    assert all(name in text for name in ("encoder", "rerank@2", "rerank@3", "novel", "RAR's claims", "stopped"))


def test_the_ranker_stops_on_its_validation_loss_and_keeps_the_best(result):
    for seed, r in result.ranker_training.items():
        curve = r["curve"]
        assert [e["epoch"] for e in curve] == list(range(1, r["stopped_epoch"] + 1)), seed
        best = min(curve, key=lambda e: e["val_loss"])
        assert r["best_epoch"] == best["epoch"], seed
        assert r["stopped_epoch"] == 3 or r["stopped_epoch"] == r["best_epoch"] + 1, seed


def test_splitting_the_training_photos():
    world = WorldSpec(n_species=4, images_per_species=10, novel_fraction=0.0, size=32).create()
    train = world.records("train")
    enc, rank = encoder_part(train, 0.5)
    assert len(enc) == len(rank) == len(train) // 2
    assert {r.image for r in enc}.isdisjoint(r.image for r in rank)
    assert {tuple(r.path) for r in enc} == {tuple(r.path) for r in rank}
    enc, rank = encoder_part(train, 1.0)  # one photo per species is always left to the ranker
    assert len(rank) == 4


def test_top1_and_recall_values():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.2, 0.7, 0.1]])
    truth = torch.tensor([1, 2, 0])
    genus_of = torch.tensor([10, 10, 11])  # leaves 0 and 1 share a genus
    got = top1_values(probs, truth, genus_of)
    assert got["species"].tolist() == [0.0, 100.0, 0.0] and got["genus"].tolist() == [100.0, 100.0, 100.0]
    assert recall_values(probs, truth, 2).tolist() == [100.0, 100.0, 100.0]
    assert recall_values(probs, truth, 1).tolist() == [0.0, 100.0, 0.0]


def test_k_needs_enough_species():
    tiny = PretrainSpec(WorldSpec(n_species=4))
    with pytest.raises(TaxonlensError, match="species"):
        bench_rar_evidence(RarSpec(start=tiny, ks=(3, 5)))
    with pytest.raises(TaxonlensError, match="2..26"):
        bench_rar_evidence(RarSpec(ks=(1, 3)))

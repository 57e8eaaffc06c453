"""The consistent-decoding evidence benchmark (``taxonlens bench vqa``) at a tiny size: its
structure and invariants (consistent answers are paths of the taxonomy, the blind control is
what ``leakage``/``blind_decode`` give, every figure a percentage); no timing assertion."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from taxonlens.bench import TinySFTSpec, WorldSpec
from taxonlens.bench.vqa import DECODERS, FIGURES, VQASpec, bench_vqa_evidence, decode_rows, level_logprobs, score_split
from taxonlens.data.vqa_build import build_vqa
from taxonlens.errors import TaxonlensError
from taxonlens.models.mllm import load_lmm
from taxonlens.recognize.vqa import blind_decode, leakage
from taxonlens.synthworld import SynthWorld, random_taxonomy
from taxonlens.train.sft import evaluate_sft

pytestmark = [pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    spec = VQASpec(world=WorldSpec(n_species=4, images_per_species=5, novel_fraction=0.25), recipe=TinySFTSpec(epochs=1))
    return bench_vqa_evidence(spec, workdir=tmp_path_factory.mktemp("bench-vqa"))


def test_structure(result):
    assert {f.name for f in fields(result)} == {"spec", "world", "training", "answer_seconds", "total_seconds", "splits"}
    assert result.spec.mode == "path" and result.world["species"] == 4
    assert len(result.world["novel_species"]) == 1
    assert result.world["records"] == {"train": 9, "test": 3, "novel": 5}
    t = result.training
    assert t["epochs"] == 1 and t["steps"] == -(-t["questions"] // 4) and t["train_seconds"] > 0
    assert set(result.splits) == {"seen", "novel"}
    for name, split in result.splits.items():
        assert split["records"] == result.world["records"]["test" if name == "seen" else "novel"]
        assert split["all"]["n"] == split["records"] and 0 <= split["leakage_free"]["n"] <= split["records"]
        for subset in ("all", "leakage_free"):
            if split[subset]["n"]:
                assert set(split[subset]) == {"n", *DECODERS}
                for decoder in DECODERS:
                    assert set(split[subset][decoder]) == set(FIGURES)


def test_every_figure_is_a_percentage(result):
    for split in result.splits.values():
        for key in ("question_acc", "chance"):
            assert 0 <= split[key] <= 100
        assert all(0 <= v <= 100 for v in split["leakage"].values())
        for subset in ("all", "leakage_free"):
            for decoder in DECODERS:
                for figure, value in split[subset].get(decoder, {}).items():
                    assert 0 <= value <= 100, (subset, decoder, figure)


def test_consistent_answers_are_valid_paths(result):
    for split in result.splits.values():
        for subset in ("all", "leakage_free"):
            if split[subset]["n"]:
                assert split[subset]["consistent"]["valid_path_pct"] == 100.0
                assert split[subset]["blind_control"]["valid_path_pct"] == 100.0


@pytest.fixture(scope="module")
def small():
    world = SynthWorld.create(random_taxonomy(4, seed=1), 4, 2, novel_fraction=0, size=32, seed=1, nuisance=0.2)
    photos = {world.image_name(leaf, k): world.photo(leaf, k).image for leaf, k in world.index(None)}
    records = build_vqa(world.records(None), world.taxonomy, 4, "random", seed=1)
    lmm = load_lmm("tiny-qwen2.5-vl")
    return world.taxonomy, records, lmm, lambda r: photos[r.image]


def test_blind_control_is_what_leakage_and_blind_decode_give(small):
    taxonomy, records, lmm, load = small
    lps = level_logprobs(lmm, records, load, taxonomy.ranks)
    split = score_split(records, lps, taxonomy)
    leak = leakage(records, taxonomy)
    assert split["all"]["blind_control"]["hca"] == pytest.approx(leak.blind_hca)
    assert split["leakage"]["blind_hca"] == pytest.approx(leak.blind_hca)
    assert split["leakage"]["share_unique_pct"] == pytest.approx(100 * leak.share_unique)
    assert split["leakage_free"]["n"] == leak.n_records - leak.n_unique
    rows = decode_rows(records, lps, taxonomy)
    assert [row["path"] for row in rows["blind_control"]] == [list(blind_decode(r, taxonomy).path) for r in records]
    # the independent answers are the per-question argmax evaluate_sft scores for names without a system prompt
    assert split["question_acc"] == pytest.approx(evaluate_sft(lmm, records, load, taxonomy.ranks, "name", False)["acc"])
    for row, r, lp in zip(rows["consistent"], records, lps):
        assert taxonomy.try_node_of_path(row["path"]) is not None
        assert all(x is None or np.exp(x).sum() == pytest.approx(1.0) for x in lp)  # normalised over the options


def test_unknown_mode_is_refused():
    with pytest.raises(TaxonlensError, match="distractor mode"):
        bench_vqa_evidence(VQASpec(mode="similar"))

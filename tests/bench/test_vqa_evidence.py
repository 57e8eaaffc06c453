"""The consistent-decoding evidence benchmark (``taxonlens bench vqa``) from the micro pretrained
start: per-record figures ``[S, N]`` for every answer, the claims judged, and the invariants
(consistent answers are paths of the taxonomy, the blind control is what ``leakage`` /
``blind_decode`` give and does not depend on the seed, the per-record values average to
``consistency_report``'s figures); no timing assertion."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from taxonlens.bench.claims import Claim, judge
from taxonlens.bench.vqa import (
    CLAIMS,
    DECODERS,
    FIGURES,
    VQASpec,
    bench_vqa_evidence,
    decode_rows,
    drawn,
    leakage_free,
    level_logprobs,
    record_figures,
    score_split,
)
from taxonlens.cli import app
from taxonlens.data.vqa_build import build_vqa
from taxonlens.errors import TaxonlensError
from taxonlens.models.mllm import load_lmm
from taxonlens.recognize.vqa import blind_decode, leakage
from taxonlens.synthworld import SynthWorld, random_taxonomy
from taxonlens.train.sft import evaluate_sft

pytestmark = [pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`"),
              pytest.mark.filterwarnings("ignore::UserWarning")]
LABELS = {"reproduced", "not reproduced", "reversed"}


@pytest.fixture(scope="module")
def result(micro_start, tmp_path_factory):
    spec = VQASpec(start=micro_start.spec, start_folder=str(micro_start.folder), records_per_split=5, seeds=(0, 1),
                   epochs=1, questions_per_record=1)
    return bench_vqa_evidence(spec, workdir=tmp_path_factory.mktemp("bench-vqa"))


def test_every_answer_has_per_record_figures_of_the_drawn_records(result):
    assert result.world["records"] == {"seen": 5, "novel": 5} and result.world["novel_species"] == 3
    values = result.values()
    assert set(values) == set(DECODERS)
    for decoder in DECODERS:
        for split in ("seen", "novel"):
            for figure in FIGURES:
                v = values[decoder][(split, figure)]
                assert v.shape == (2, 5) and ((v >= 0) & (v <= 100)).all()
            free = result.world["leakage_free"][split]
            assert ((split + "-leakage-free", "hca") in values[decoder]) == (free > 0)
    for seed in result.seeds.values():
        assert seed["steps"] > 0 and seed["questions_per_second"] > 0
        assert set(seed["question_acc"]) == {"seen", "novel"}


def test_claims_are_judged_with_ordered_intervals(result):
    judged = {row["statement"]: row for row in result.claims}
    assert {c.statement for c in CLAIMS[:4]} <= set(judged)
    for row in result.claims:
        split = row["figure"].split("/")[0]
        n = result.world["leakage_free"][split.removesuffix("-leakage-free")] if split.endswith("-leakage-free") \
            else result.world["records"][split]
        assert row["label"] in LABELS and (row["seeds"], row["records"]) == (2, n)
        for e in (row["arm_estimate"], row["baseline_estimate"], row["difference"]):
            assert e["low"] <= e["mean"] <= e["high"]
    # an answer against itself: no difference, so never reproduced
    (same,) = judge([Claim("test", "same", "consistent", "consistent", ("seen", "hca"))], result.values())
    assert same["label"] == "not reproduced" and same["difference"]["mean"] == 0
    data = result.to_dict()
    assert data["estimates"]["consistent"]["seen/hca"]["low"] <= data["estimates"]["consistent"]["seen/hca"]["high"]
    console = Console(width=250, record=True)
    console.print(result.render())
    text = console.export_text()
    assert CLAIMS[0].statement in text and "blind control" in text and "per-question accuracy" in text


def test_consistent_and_blind_answers_are_paths_and_the_blind_control_ignores_the_seed(result):
    values = result.values()
    for split in ("seen", "novel"):
        assert (values["consistent"][(split, "valid_path_pct")] == 100).all()
        blind = values["blind_control"][(split, "hca")]
        assert (blind[0] == blind[1]).all()


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
    assert split["leakage_free"]["n"] == leak.n_records - leak.n_unique == int(leakage_free(records, taxonomy).sum())
    rows = decode_rows(records, lps, taxonomy)
    assert [row["path"] for row in rows["blind_control"]] == [list(blind_decode(r, taxonomy).path) for r in records]
    # the independent answers are the per-question argmax evaluate_sft scores for names without a system prompt
    assert split["question_acc"] == pytest.approx(evaluate_sft(lmm, records, load, taxonomy.ranks, "name", False)["acc"])
    for row, r, lp in zip(rows["consistent"], records, lps):
        assert taxonomy.try_node_of_path(row["path"]) is not None
        assert all(x is None or np.exp(x).sum() == pytest.approx(1.0) for x in lp)  # normalised over the options
    # each record's figures average to the report's, on all records and on the leakage-free ones
    free = leakage_free(records, taxonomy)
    for decoder in DECODERS:
        figures = record_figures(records, rows[decoder], taxonomy)
        for figure in FIGURES:
            assert figures[figure].shape == (len(records),)
            assert figures[figure].mean() == pytest.approx(split["all"][decoder][figure])
            if free.any():
                assert figures[figure][free].mean() == pytest.approx(split["leakage_free"][decoder][figure])


def test_drawn_records_are_a_seeded_subset_in_order():
    items = list(range(50))
    picked = drawn(items, 10, seed=3)
    assert picked == sorted(picked) and len(set(picked)) == 10 and picked == drawn(items, 10, seed=3)
    assert picked != drawn(items, 10, seed=4) and drawn(items, 80, seed=3) == items


def test_unknown_mode_is_refused():
    with pytest.raises(TaxonlensError, match="distractor mode"):
        bench_vqa_evidence(VQASpec(mode="similar"))


def test_cli_sizes_reach_the_spec(monkeypatch):
    from taxonlens.bench import vqa

    class Ran(Exception):
        pass

    def fake(spec, *args, **kwargs):
        raise Ran(spec)

    monkeypatch.setattr(vqa, "bench_vqa_evidence", fake)
    quick = CliRunner().invoke(app, ["bench", "vqa", "--quick", "--seeds", "3"]).exception.args[0]
    assert quick.start == VQASpec.quick().start and quick.seeds == (0, 1, 2) and quick.records_per_split == 48
    full = CliRunner().invoke(app, ["bench", "vqa", "--records-per-split", "400", "--start-folder", "x"]).exception.args[0]
    assert full.seeds == VQASpec().seeds and len(full.seeds) >= 5 and full.records_per_split == 400
    assert full.start_folder == "x" and full.start == VQASpec().start

"""The pretrained starting point of the benchmarks (taxonlens.train.pretrain)."""

import json
from dataclasses import replace

import pytest

from taxonlens.errors import TaxonlensError
from taxonlens.knowledge.template import DESCRIPTION
from taxonlens.models.mllm import load_lmm
from taxonlens.synthworld.spec import WorldSpec
from taxonlens.train import pretrain as pt

MICRO = pt.PretrainSpec(WorldSpec(n_species=6, images_per_species=4, novel_fraction=0.2, size=32, nuisance=0.2),
                        model="tiny-qwen2.5-vl", epochs=1, batch_size=8, lr=2e-3, bfm_epochs=1, probe=3)


@pytest.fixture(scope="module")
def lmm():
    return load_lmm("tiny-qwen2.5-vl")


def test_examples_describe_and_caption_every_photo_but_never_name_its_species(lmm):
    world = MICRO.world.create()
    records = world.records("train")
    examples = pt.pretrain_examples(lmm, records)
    assert len(examples) == len(records) * 7  # a description and 6 captions (kingdom ... genus) each
    for ex in examples:
        r = records[ex.record]
        if ex.level == -1:
            assert ex.target.startswith(r.attributes[DESCRIPTION])
        else:
            assert ex.target.startswith(f"a photo of {' '.join(r.path[:ex.level + 1])}.")
            assert r.path[-1] not in ex.target  # the species is never captioned
        assert "taxonomic classification" not in ex.prompt  # never the benchmark's questions


def test_each_epoch_asks_every_photo_once_and_both_objectives_are_drawn(lmm):
    records = MICRO.world.create().records("train")
    examples = pt.pretrain_examples(lmm, records)
    plans = [pt.epoch_plan(examples, 0, e) for e in range(4)]
    for plan in plans:
        assert sorted(examples[j].record for j in plan) == list(range(len(records)))
    levels = [examples[j].level for plan in plans for j in plan]
    assert 0.3 < levels.count(-1) / len(levels) < 0.7
    assert len(set(levels)) > 3  # captions at several ranks
    assert plans[0] == pt.epoch_plan(examples, 0, 0) and plans[0] != plans[1]


def test_description_recall_reads_the_template():
    attrs = {"body plan": "radial", "markings": "eye spot", "number of parts": "5"}
    text = "an organism whose body plan is radial, markings are eye spot and number of parts is 6."
    assert pt.description_recall(text, attrs) == pytest.approx(200 / 3)
    assert pt.description_recall("", attrs) == 0.0


def test_the_key_follows_the_settings():
    assert MICRO.key() == replace(MICRO).key() != replace(MICRO, epochs=2).key()


def test_pretrain_trains_once_caches_and_refuses_another_spec(tmp_path, monkeypatch):
    lines = []
    done = pt.pretrain(MICRO, tmp_path / "start", threads=1, say=lines.append)
    assert done.lmm.is_dir() and done.bfm.is_dir() and len(lines) == 3
    known = json.loads((tmp_path / "start" / pt.KNOWLEDGE_FILE).read_text())
    assert known == done.knowledge and known["species"] == 6
    for split in ("seen", "novel"):
        assert 0 <= known[split]["species_retrieval"] <= 100 and "caption_genus" in known[split]
        assert "species_zero_shot" in known[split] and known[split]["photos"] <= 3
    monkeypatch.setattr(pt, "tune_lmm", lambda *a, **k: pytest.fail("a cached pretraining is not trained again"))
    assert pt.pretrain(MICRO, tmp_path / "start").knowledge == known
    with pytest.raises(TaxonlensError, match="another pretraining"):
        pt.pretrain(replace(MICRO, epochs=2), tmp_path / "start")
    monkeypatch.setenv("TAXONLENS_CACHE", str(tmp_path / "cache"))
    assert pt.pretrain_folder(MICRO) == tmp_path / "cache" / "pretrained" / MICRO.key()


def test_the_command_builds_the_spec_and_prints_what_the_models_know(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from taxonlens.cli import app

    seen: list = []
    known = {"species": 400, "chance": 0.25, "seen": {"photos": 300, "species_retrieval": 1.5, "caption_genus": 42.0},
             "novel": {"photos": 300, "species_retrieval": 0.5, "caption_genus": 30.0}}

    def fake(spec, out, threads, say, progress):
        seen.append((spec, out, threads))
        return pt.Pretrained(tmp_path, spec, known)

    monkeypatch.setattr(pt, "pretrain", fake)
    result = CliRunner().invoke(app, ["train", "pretrain-lmm", "--species", "300", "--epochs", "2", "--out",
                                      str(tmp_path), "--threads", "2"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    spec, out, threads = seen[0]
    assert (spec.world.n_species, spec.epochs, spec.model, out, threads) == (300, 2, "small-qwen2.5-vl", tmp_path, 2)
    assert "caption genus" in result.output and "42.0" in result.output and "400 species" in result.output

"""A tiny multimodal LLM answers a hierarchical-VQA set built on synthworld photos in the three
modes; answers are offered options, consistent answers are taxonomy paths, output is scored by
`evaluate` and a run resumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from taxonlens.data import load_image, read_manifest
from taxonlens.data.vqa import VQARecord, write_vqa_benchmark
from taxonlens.errors import DataError
from taxonlens.evaluate import evaluate_files
from taxonlens.models.mllm import load_lmm
from taxonlens.recognize.vqa_answer import answer_benchmark, answer_records
from taxonlens.synthworld import SynthWorld, random_taxonomy


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    w = SynthWorld.create(random_taxonomy(8, seed=3), 8, 1, novel_fraction=0.0, size=64, seed=3)
    w.write(out)
    return w, out


def _records(world) -> list[VQARecord]:
    """One record per photo: at every level the truth and up to 3 other taxa of that rank."""
    w, out = world
    tax = w.taxonomy
    records = []
    for n, rec in enumerate(read_manifest(out / "manifest.jsonl")):
        choices = []
        for d, name in enumerate(rec.path, start=1):
            others = sorted({tax.names[x] for x in tax.nodes_at_rank(d)} - {name})[:3]
            opts = [name, *others]
            opts = opts[n % len(opts):] + opts[: n % len(opts)]  # the truth is not always first
            choices.append(tuple(o.lower() for o in opts))
        records.append(VQARecord(rec.image, rec.path[-1], rec.split, tuple(x.lower() for x in rec.path),
                                 tuple(choices), n + 1))
    return records


@pytest.fixture(scope="module")
def lmm():
    return load_lmm("tiny-qwen2.5-vl")


@pytest.mark.parametrize("mode", ["generate", "score", "consistent"])
def test_every_level_gets_an_offered_option(lmm, world, mode):
    records = _records(world)
    rows = answer_records(lmm, records, lambda r: load_image(r.image), mode, world[0].taxonomy, batch_size=7)
    tax = world[0].taxonomy
    for rec, row in zip(records, rows):
        assert row["image"] == rec.image and len(row["path"]) == len(rec.levels)
        for name, opts in zip(row["path"], rec.choices):
            assert name in opts or (mode == "generate" and name == "")  # an unreadable answer is wrong
        if mode != "generate":
            for lp, opts in zip(row["logprobs"], rec.choices):
                assert (lp is None) == (len(opts) == 1)
                if lp is not None:
                    assert len(lp) == len(opts) and sum(2.718281828 ** x for x in lp) == pytest.approx(1, abs=1e-3)
        if mode == "score":
            assert all(lp is None or opts[lp.index(max(lp))] == name
                       for lp, opts, name in zip(row["logprobs"], rec.choices, row["path"]))
        if mode == "consistent":
            assert not row["partial"] and tax.try_node_of_path(row["path"]) is not None  # a real path


def test_benchmark_output_is_scored_by_evaluate_and_resumes(lmm, world, tmp_path):
    records = _records(world)
    bench = write_vqa_benchmark(records, tmp_path / "bench.jsonl")
    out = tmp_path / "answers.jsonl"
    answer_benchmark(lmm, records[:3], out, mode="consistent", taxonomy=world[0].taxonomy)
    calls = []

    class Counting:
        def __getattr__(self, name):
            return getattr(lmm, name)

        def option_logprobs(self, images, *args, **kwargs):
            calls.append(len(images))
            return lmm.option_logprobs(images, *args, **kwargs)

    with out.open("a") as f:
        f.write('{"image": "cut mid-wri')  # a crash mid-line: that record is answered again
    answer_benchmark(Counting(), records, out, mode="consistent", taxonomy=world[0].taxonomy, chunk=2)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]
    assert sorted(r["image"] for r in rows) == sorted(r.image for r in records)
    asked = sum(len(_levels_asked(r)) for r in records[3:])
    assert sum(calls) == asked  # the three answered records were not asked again
    report = evaluate_files(bench, out, taxonomy=world[0].taxonomy)
    assert report.missing == () and report.extra == ()
    assert report.metrics.valid_path_pct == 100.0  # consistent answers are real paths
    assert 0 <= report.metrics.hca <= report.metrics.acc_leaf <= 100


def _levels_asked(record: VQARecord) -> list[int]:
    return [k for k, opts in enumerate(record.choices) if len(opts) > 1]


def test_bad_mode_missing_taxonomy_and_unreadable_images(lmm, world, tmp_path):
    records = _records(world)
    with pytest.raises(DataError, match="unknown answering mode"):
        answer_records(lmm, records, lambda r: load_image(r.image), "vote")
    with pytest.raises(DataError, match="need the taxonomy"):
        answer_records(lmm, records, lambda r: load_image(r.image), "consistent")
    missing = [dataclasses.replace(records[0], image="nowhere/x.png", line=1)]
    with pytest.raises(DataError, match="benchmark line 1: .*--images DIR"):
        answer_benchmark(lmm, missing, tmp_path / "a.jsonl", image_root=Path(tmp_path))

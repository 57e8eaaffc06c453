"""Extraction: batched questions, resumable per-photo output, accuracy on synthworld's truth."""

import json
import shutil
from pathlib import Path

import pytest

from taxonlens.data import load_image, read_manifest
from taxonlens.errors import DataError
from taxonlens.knowledge import (
    attribute_question,
    clean_answer,
    extract_attributes,
    extract_records,
    extraction_accuracy,
    read_attribute_rows,
)
from taxonlens.synthworld import TRAIT_NAMES

ASKED = ("body colour", "pattern", "number of parts")


def test_question_and_answer_cleaning():
    assert attribute_question("bill shape", "bird") == (
        "What is the bill shape of the bird in this image? Answer in a few words.")
    assert clean_answer('  Answer: "Pale red."\nIt is also shiny.') == "Pale red"
    assert clean_answer("\n\n  short   and conical.  ") == "short and conical"
    assert clean_answer("   ") == ""
    assert clean_answer("\x11\x11nidaera\ufffd red") == "nidaera red"


def test_extract_attributes_batches_questions(world_manifest, scripted):
    records = read_manifest(world_manifest)[:3]
    answerer = scripted()
    values = extract_attributes(answerer, [load_image(r.image) for r in records], ASKED, batch_size=4)
    assert answerer.calls == [4, 4, 1]  # 3 photos x 3 attributes, 4 questions per call
    assert values == [{a: r.attributes[a] for a in ASKED} for r in records]


def test_a_truthful_answerer_scores_100_and_a_wrong_attribute_0(world_manifest, tmp_path, scripted):
    records = read_manifest(world_manifest)
    wrong_pattern = scripted(style=lambda a, v: "zigzag" if a == "pattern" else
                                     f"The {a} is {v}.")
    out, failures = extract_records(wrong_pattern, records, TRAIT_NAMES, tmp_path / "x.jsonl", batch_size=14)
    rows = read_attribute_rows(out)
    assert failures == [] and [r["image"] for r in rows] == [r.image for r in records]
    assert rows[0]["label"] == records[0].label and list(rows[0]["attributes"]) == list(TRAIT_NAMES)
    scores = extraction_accuracy(rows, records)
    assert {a: s["accuracy"] for a, s in scores.items()} == {a: 0.0 if a == "pattern" else 100.0 for a in TRAIT_NAMES}
    assert all(s["n"] == sum(a in r.attributes for r in records) for a, s in scores.items())  # a hidden value: unscored
    assert max(wrong_pattern.calls) <= 14 and sum(wrong_pattern.calls) == len(records) * len(TRAIT_NAMES)


def test_an_interrupted_run_resumes_into_the_same_file(world_manifest, tmp_path, scripted):
    records = read_manifest(world_manifest)
    whole = tmp_path / "whole.jsonl"
    extract_records(scripted(), records, ASKED, whole, batch_size=6)  # 2 photos per call

    cut = tmp_path / "cut.jsonl"
    with pytest.raises(KeyboardInterrupt):
        extract_records(scripted(fail_after=3), records, ASKED, cut, batch_size=6)
    assert len(cut.read_text().splitlines()) == 6
    with cut.open("a") as f:
        f.write('{"image": "' + records[6].image + '", "attributes": {"body col')  # killed mid-line
    resumed = scripted()
    progress = []
    extract_records(resumed, records, ASKED, cut, batch_size=6, progress=progress.append)
    assert cut.read_bytes() == whole.read_bytes()
    assert sum(resumed.calls) == (len(records) - 6) * len(ASKED)  # the six photos done were not asked again
    assert progress[0] == 6 and sum(progress) == len(records)
    again = scripted()
    extract_records(again, records, ASKED, cut, batch_size=6)
    assert again.calls == [] and cut.read_bytes() == whole.read_bytes()


def test_unreadable_photos_are_reported_and_retried(world_manifest, tmp_path, scripted):
    folder = tmp_path / "world"
    shutil.copytree(world_manifest.parent, folder)
    records = read_manifest(folder / "manifest.jsonl")[:4]
    broken = records[1].image
    original = Path(broken).read_bytes()
    Path(broken).write_bytes(b"not a png")
    out = tmp_path / "x.jsonl"
    _, failures = extract_records(scripted(), records, ASKED, out)
    assert [f.path for f in failures] == [broken]
    assert [json.loads(line)["image"] for line in out.read_text().splitlines()] == [
        records[0].image, records[2].image, records[3].image]
    Path(broken).write_bytes(original)
    _, failures = extract_records(scripted(), records, ASKED, out)
    assert failures == [] and {r["image"] for r in read_attribute_rows(out)} == {r.image for r in records}


def test_an_output_of_other_attributes_is_refused(world_manifest, tmp_path, scripted):
    records = read_manifest(world_manifest)[:2]
    out = tmp_path / "x.jsonl"
    extract_records(scripted(), records, ASKED, out)
    with pytest.raises(DataError, match="written with another attributes; pass --overwrite"):
        extract_records(scripted(), records, ["markings"], out)
    with pytest.raises(DataError, match="no attributes"):
        extract_records(scripted(), records, [], tmp_path / "y.jsonl")


def test_extract_with_a_tiny_lmm_writes_one_row_per_photo(world_manifest, tmp_path):
    from taxonlens.models.mllm import load_lmm

    lmm = load_lmm("tiny-qwen3-vl", seed=0)
    records = read_manifest(world_manifest)[:2]
    out, _ = extract_records(lmm, records, ["body colour", "pattern"], tmp_path / "x.jsonl", batch_size=4,
                             max_new_tokens=6)
    rows = read_attribute_rows(out)
    assert [r["image"] for r in rows] == [r.image for r in records]
    assert all(list(r["attributes"]) == ["body colour", "pattern"] and "\n" not in "".join(r["attributes"].values())
               for r in rows)

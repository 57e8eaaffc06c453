"""Descriptions: template and LLM, resumable, the described manifest and what the trainer reads."""

import json

import pytest

from taxonlens.data import Record, read_manifest, write_manifest
from taxonlens.errors import DataError
from taxonlens.journal import run_file
from taxonlens.knowledge import (
    DESCRIPTION,
    describe,
    describe_manifest,
    describe_rows,
    description_question,
    descriptions_for,
    extract_records,
    read_attribute_rows,
    record_rows,
)

ROWS = [{"image": f"{i}.png", "label": f"L{i}", "attributes": {"cap shape": f"shape {i}", "gill colour": "white"}}
        for i in range(5)]


def test_template_descriptions_resume_into_the_same_file(tmp_path):
    whole = tmp_path / "whole.jsonl"
    describe_rows(ROWS, whole, organism="fungus")
    lines = [json.loads(line) for line in whole.read_text().splitlines()]
    assert lines == [{**r, DESCRIPTION: describe(r["attributes"], "fungus")} for r in ROWS]
    assert lines[0][DESCRIPTION] == "a fungus whose cap shape is shape 0 and gill colour is white."
    part = tmp_path / "part.jsonl"
    text = whole.read_text()
    part.write_text(text[: text.index("3.png") + 20])  # two whole lines, a third cut
    run_file(part).write_text(run_file(whole).read_text())  # as the killed run recorded it
    describe_rows(ROWS, part, organism="fungus")
    assert part.read_bytes() == whole.read_bytes()


class Describer:
    """Answers description questions with a scripted sentence ('' for the second photo)."""

    def __init__(self):
        self.questions = []

    def fingerprint(self):
        return "scripted"

    def generate(self, images, questions, max_new_tokens=16, system=None):
        self.questions.extend(questions)
        return ["" if len(self.questions) - len(questions) + k == 1 else f"A fungus, answer {k}."
                for k in range(len(questions))]


def test_lmm_descriptions_read_photos_ask_with_the_values_and_never_stay_empty(world_manifest, tmp_path):
    records = read_manifest(world_manifest)[:3]
    rows = record_rows(records)
    answerer = Describer()
    out, failures = describe_rows(rows, tmp_path / "d.jsonl", "lmm", answerer, "organism", batch_size=2)
    described = read_attribute_rows(out, described=True)
    assert failures == [] and answerer.questions == [description_question(r["attributes"]) for r in rows]
    assert "body colour: " + records[0].attributes["body colour"] in answerer.questions[0]
    assert [d[DESCRIPTION] for d in described] == [
        "A fungus, answer 0", describe(rows[1]["attributes"]), "A fungus, answer 0"]


def test_bad_methods_are_refused(tmp_path):
    with pytest.raises(DataError, match="unknown description method"):
        describe_rows(ROWS, tmp_path / "d.jsonl", "poem")
    with pytest.raises(DataError, match="need a model"):
        describe_rows(ROWS, tmp_path / "d.jsonl", "lmm")


def test_described_manifest_from_extracted_values_is_what_the_trainer_reads(world_manifest, tmp_path, scripted):
    records = read_manifest(world_manifest)
    train = [r for r in records if r.split == "train"]
    extracted = tmp_path / "extracted.jsonl"
    extract_records(scripted(style=lambda a, v: v.upper()), train, ["pattern"], extracted)
    progress = []
    _, manifest, failures = describe_manifest(records, tmp_path / "described.jsonl", extracted,
                                              progress=lambda done, total: progress.append((done, total)))
    assert manifest == tmp_path / "described.manifest.jsonl" and failures == []
    assert progress[-1] == (len(train), len(train))
    copy = read_manifest(manifest)
    assert [(r.image, r.path, r.split) for r in copy] == [(r.image, r.path, r.split) for r in train]
    found = descriptions_for(manifest)
    for r in copy:
        truth = next(t for t in train if t.image == r.image)
        assert dict(r.attributes) == {"pattern": truth.attributes["pattern"].upper(),
                                      DESCRIPTION: f"an organism whose pattern is {truth.attributes['pattern'].upper()}."}
        assert found[r.image] == r.attributes[DESCRIPTION]
    assert descriptions_for(copy) == found


def test_describe_manifest_from_the_records_own_values(world_manifest, tmp_path):
    records = read_manifest(world_manifest)
    _, manifest, _ = describe_manifest(records, tmp_path / "d.jsonl", manifest_out=tmp_path / "m.jsonl")
    assert descriptions_for(manifest) == descriptions_for(records)  # synthworld's own template sentences


def test_records_without_descriptions_ask_for_attributes_describe(world_manifest, tmp_path):
    bare = [Record(r.image, r.path, r.split) for r in read_manifest(world_manifest)]
    with pytest.raises(DataError, match=r"12 of 12 photos have no attribute description.*taxonlens attributes "
                                        r"describe"):
        descriptions_for(bare)
    path = write_manifest(bare, tmp_path / "bare.jsonl")
    with pytest.raises(DataError, match="bare.jsonl: 12 of 12 photos.*taxonlens attributes describe"):
        descriptions_for(path)
    with pytest.raises(DataError, match="carry no attribute values.*attributes extract"):
        describe_manifest(bare, tmp_path / "d.jsonl")
    with pytest.raises(DataError, match="none of its photos"):
        other = tmp_path / "other.jsonl"
        other.write_text(json.dumps({"image": "elsewhere.png", "label": "x", "attributes": {"a": "b"}}) + "\n")
        describe_manifest(bare, tmp_path / "d.jsonl", other)
    with pytest.raises(DataError, match="no records"):
        descriptions_for([])

"""`taxonlens attributes mine | extract | describe` end to end, and bad input as one clear line."""

import json

from typer.testing import CliRunner

from taxonlens.cli import app
from taxonlens.data import Record, read_manifest, write_manifest
from taxonlens.errors import TaxonlensError
from taxonlens.knowledge import DESCRIPTION, descriptions_for, read_attribute_rows
from taxonlens.synthworld import TRAIT_NAMES

runner = CliRunner()


def _input_error(args) -> str:
    """The message of the input error a command stops with (`taxonlens` prints it as one line, exit 2)."""
    result = runner.invoke(app, args)
    assert isinstance(result.exception, TaxonlensError), result.output
    return str(result.exception)


def test_mine_from_synthworld_and_from_a_file(tmp_path):
    out = tmp_path / "mined.json"
    result = runner.invoke(app, ["attributes", "mine", "--synthworld", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == {"super_category": "organisms", "attributes": list(TRAIT_NAMES),
                                           "source": "synthworld"}
    names = tmp_path / "names.txt"
    names.write_text("bill shape\nwing colour\n")
    result = runner.invoke(app, ["attributes", "mine", "--from-file", str(names), "--super-category", "birds",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["attributes"] == ["bill shape", "wing colour"]


def test_extract_with_a_tiny_lmm_then_describe(world_manifest, tmp_path):
    mined = tmp_path / "mined.json"
    runner.invoke(app, ["attributes", "mine", "--synthworld", "--out", str(mined)])
    extracted = tmp_path / "extracted.jsonl"
    args = ["attributes", "extract", str(world_manifest), "--attributes", str(mined), "--model", "tiny-qwen2.5-vl",
            "--out", str(extracted), "--split", "train", "--batch-size", "14", "--max-new-tokens", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    train = [r for r in read_manifest(world_manifest) if r.split == "train"]
    rows = read_attribute_rows(extracted)
    assert [r["image"] for r in rows] == [r.image for r in train]
    assert "extraction accuracy" in result.output and "body plan" in result.output
    before = extracted.read_bytes()
    assert runner.invoke(app, args).exit_code == 0 and extracted.read_bytes() == before  # all done: unchanged

    described = tmp_path / "described.jsonl"
    result = runner.invoke(app, ["attributes", "describe", str(world_manifest), "--extracted", str(extracted),
                                 "--out", str(described), "--organism", "creature"])
    assert result.exit_code == 0, result.output
    manifest = tmp_path / "described.manifest.jsonl"
    found = descriptions_for(manifest)
    assert len(found) == len(train)
    assert all(text.startswith("a creature whose body plan is ") for text in found.values())
    assert [r[DESCRIPTION] for r in read_attribute_rows(described, described=True)] == list(found.values())


def test_describe_with_a_tiny_lmm_writes_a_description_per_photo(world_manifest, tmp_path):
    out = tmp_path / "d.jsonl"
    result = runner.invoke(app, ["attributes", "describe", str(world_manifest), "--out", str(out), "--method", "lmm",
                                 "--model", "tiny-idefics2", "--split", "test", "--max-new-tokens", "6",
                                 "--manifest-out", str(tmp_path / "m.jsonl")])
    assert result.exit_code == 0, result.output
    found = descriptions_for(tmp_path / "m.jsonl")
    test = [r.image for r in read_manifest(world_manifest) if r.split == "test"]
    assert sorted(found) == sorted(test) and all(text.strip() for text in found.values())


def test_bad_input_is_a_clear_error(world_manifest, tmp_path):
    assert "one source of attribute names" in _input_error(["attributes", "mine", "--out", str(tmp_path / "m.json")])
    bare = write_manifest([Record(r.image, r.path, r.split) for r in read_manifest(world_manifest)],
                          tmp_path / "bare.jsonl")
    message = _input_error(["attributes", "describe", str(bare), "--out", str(tmp_path / "d.jsonl")])
    assert "carry no attribute values" in message and "taxonlens attributes extract" in message
    (tmp_path / "bad.json").write_text("[]")
    message = _input_error(["attributes", "extract", str(world_manifest), "--attributes", str(tmp_path / "bad.json"),
                            "--model", "tiny-qwen2.5-vl", "--out", str(tmp_path / "x.jsonl")])
    assert "bad.json" in message and "attributes mine" in message
    assert "--method lmm only" in _input_error(["attributes", "describe", str(world_manifest), "--out",
                                                str(tmp_path / "d.jsonl"), "--model", "tiny-qwen2.5-vl"])
    assert "need a model" in _input_error(["attributes", "describe", str(world_manifest), "--out",
                                           str(tmp_path / "d.jsonl"), "--method", "lmm"])

"""Every text reader reports non-UTF-8 bytes, bad JSON lines and empty files by file and line."""

import pytest

from taxonlens.data import read_manifest, read_vqa_benchmark
from taxonlens.errors import DataError, TaxonlensError, TaxonomyError
from taxonlens.taxonomy import load_taxonomy
from taxonlens.textio import read_jsonl, read_text


@pytest.mark.parametrize(
    ("name", "reader", "error"),
    [
        ("t.csv", load_taxonomy, TaxonomyError),
        ("t.json", load_taxonomy, TaxonomyError),
        ("m.csv", read_manifest, DataError),
        ("m.jsonl", read_manifest, DataError),
        ("b.jsonl", read_vqa_benchmark, DataError),
    ],
)
def test_latin1_file_names_the_line(tmp_path, name, reader, error):
    f = tmp_path / name
    f.write_bytes("kingdom,species\nPlantae,Rosa\nPlantae,Crépis\n".encode("latin-1"))
    with pytest.raises(error, match=rf"{name}:3: not UTF-8 text"):
        reader(f)


def test_read_jsonl(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"a": 1}\n\n{"b": 2}\n')
    assert read_jsonl(f, "thing") == [(1, {"a": 1}), (3, {"b": 2})]
    f.write_text('{"a": 1}\n{"b": \n')
    with pytest.raises(DataError, match=r"x\.jsonl:2: not valid JSON"):
        read_jsonl(f, "thing")
    f.write_text("\n  \n")
    with pytest.raises(DataError, match="empty thing file"):
        read_jsonl(f, "thing")


def test_read_text_missing_and_folder(tmp_path):
    with pytest.raises(TaxonlensError, match="thing file .* does not exist"):
        read_text(tmp_path / "nope.txt", "thing")
    with pytest.raises(TaxonomyError, match="does not exist"):
        read_text(tmp_path, "taxonomy", TaxonomyError)

"""Manifests: JSONL / CSV / TSV / Parquet round trips, label resolution and row validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taxonlens.data import Record, read_manifest, write_manifest
from taxonlens.errors import DataError
from taxonlens.taxonomy import Taxonomy

RANKS = ("kingdom", "genus", "species")


@pytest.fixture
def taxonomy() -> Taxonomy:
    return Taxonomy.from_paths(
        [
            ("Plantae", "Rosa", "Rosa canina"),
            ("Plantae", "Dryas", "Dryas octopetala"),
            ("Animalia", "Dryas", "Dryas iulia"),
        ],
        ranks=RANKS,
    )


def _records(root: Path) -> list[Record]:
    return [
        Record(str(root / "imgs" / "a.jpg"), ("Plantae", "Rosa", "Rosa canina"), "train",
               {"petals": "5", "colour": "pink, white"}, "dog rose"),
        Record(str(root / "imgs" / "sub" / "b.jpg"), ("Plantae", "Dryas"), "val"),
        Record("/elsewhere/c.png", ("Animalia", "Dryas", "Dryas iulia"), "novel", {"wings": "orange"}),
        Record(str(root / "d.jpg"), (), "test", common_name="unlabelled"),
    ]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    records = _records(tmp_path)
    out = write_manifest(records, tmp_path / f"m{suffix}", ranks=RANKS)
    assert read_manifest(out) == records
    if suffix != ".parquet":
        text = out.read_text(encoding="utf-8")
        assert str(tmp_path) not in text  # images under the manifest's folder are written relative to it
        assert "imgs/sub/b.jpg" in text and "/elsewhere/c.png" in text


def test_relative_images_resolve_against_the_manifest_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    f = _write(folder / "m.jsonl", '{"image": "x/a.jpg", "path": ["Plantae"]}\n{"image": "/abs/b.jpg"}\n')
    monkeypatch.chdir(tmp_path)
    assert [r.image for r in read_manifest("data/m.jsonl")] == ["data/x/a.jpg", "/abs/b.jpg"]
    assert [r.image for r in read_manifest(f)] == [str(folder / "x" / "a.jpg"), "/abs/b.jpg"]


def test_csv_needs_ranks_to_write(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs the rank names"):
        write_manifest(_records(tmp_path), tmp_path / "m.csv")


def test_defaults_of_a_minimal_row(tmp_path: Path) -> None:
    (r,) = read_manifest(_write(tmp_path / "m.jsonl", '{"image": "a.jpg"}\n\n'))
    assert r == Record(str(tmp_path / "a.jpg"))
    assert (r.path, r.split, r.attributes, r.common_name, r.label) == ((), "train", {}, None, None)


# ---------------------------------------------------------------- labels and taxonomy
def test_label_only_rows_are_resolved_with_a_taxonomy(tmp_path: Path, taxonomy: Taxonomy) -> None:
    f = _write(tmp_path / "m.csv", "image,label,split\na.jpg,rosa canina,val\nb.jpg,Dryas iulia,\n")
    records = read_manifest(f, taxonomy)
    assert [r.path for r in records] == [("Plantae", "Rosa", "Rosa canina"), ("Animalia", "Dryas", "Dryas iulia")]
    assert [r.split for r in records] == ["val", "train"]
    with pytest.raises(DataError, match=r"m\.csv:2: the manifest gives only 'label'; pass a taxonomy"):
        read_manifest(f)


def test_label_only_row_beside_rank_columns(tmp_path: Path, taxonomy: Taxonomy) -> None:
    f = _write(
        tmp_path / "m.csv",
        "image,kingdom,genus,species,label\na.jpg,Plantae,Rosa,Rosa canina,\nb.jpg,,,,Dryas octopetala\n",
    )
    assert [r.path for r in read_manifest(f, taxonomy)] == [
        ("Plantae", "Rosa", "Rosa canina"),
        ("Plantae", "Dryas", "Dryas octopetala"),
    ]


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("Dryas", r"m\.jsonl:1: 'Dryas' names 2 taxa: Plantae > Dryas; Animalia > Dryas"),
        ("Rosa canna", r"m\.jsonl:1: no taxon named 'Rosa canna'; did you mean 'Rosa canina'"),
    ],
)
def test_unresolvable_labels(tmp_path: Path, taxonomy: Taxonomy, label: str, message: str) -> None:
    f = _write(tmp_path / "m.jsonl", json.dumps({"image": "a.jpg", "label": label}) + "\n")
    with pytest.raises(DataError, match=message):
        read_manifest(f, taxonomy)


def test_path_not_in_the_taxonomy(tmp_path: Path, taxonomy: Taxonomy) -> None:
    f = _write(
        tmp_path / "m.jsonl",
        '{"image": "a.jpg", "path": ["plantae", "ROSA"]}\n{"image": "b.jpg", "path": ["Plantae", "Rosa", "Rosa rugosa"]}\n',
    )
    with pytest.raises(DataError, match=r"m\.jsonl:2: path Plantae > Rosa > Rosa rugosa is not in the taxonomy"):
        read_manifest(f, taxonomy)
    assert len(read_manifest(f)) == 2  # without a taxonomy any path is accepted


def test_intermediate_rank_columns_in_csv(tmp_path: Path) -> None:
    f = _write(tmp_path / "m.csv", "image,kingdom,subkingdom,genus,note\na.jpg,Plantae,Viridiplantae,Rosa,thorny\n")
    assert read_manifest(f)[0].path == ("Plantae", "Viridiplantae", "Rosa")


def test_path_column_as_text_in_csv(tmp_path: Path) -> None:
    f = _write(tmp_path / "m.csv", 'image,path\na.jpg,Plantae > Rosa\nb.jpg,"[""Plantae"", ""Dryas""]"\n')
    assert [r.path for r in read_manifest(f)] == [("Plantae", "Rosa"), ("Plantae", "Dryas")]
    _write(tmp_path / "m.csv", 'image,path\na.jpg,"[""Plantae"", ""Rosa"""\n')
    with pytest.raises(DataError, match=r"m\.csv:2: 'path'"):
        read_manifest(tmp_path / "m.csv")


def test_attributes_as_json_text_in_csv(tmp_path: Path) -> None:
    f = _write(tmp_path / "m.csv", 'image,species,attributes\na.jpg,x,"{""colour"": ""red"", ""legs"": 6}"\nb.jpg,y,\n')
    assert [r.attributes for r in read_manifest(f)] == [{"colour": "red", "legs": "6"}, {}]


# ---------------------------------------------------------------- malformed input
@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.csv", "image,kingdom,genus\na.jpg,Plantae,Rosa\nb.jpg,Plantae\n", r"m\.csv:3: number of fields differs"),
        ("m.csv", "image,kingdom,genus\na.jpg,Plantae,Rosa,x\n", r"m\.csv:2: number of fields differs"),
        ("m.tsv", "image\tspecies\na.jpg\tx\textra\n", r"m\.tsv:2: number of fields differs"),
        ("m.csv", "image,kingdom,genus\na.jpg,,Rosa\n", r"m\.csv:2: empty rank 'kingdom' above a named one"),
        ("m.csv", "image,species,attributes\na.jpg,x,{colour: red}\n", r"m\.csv:2: 'attributes' is not a JSON object"),
        ("m.csv", 'image,species,attributes\na.jpg,x,"[""red""]"\n', r"m\.csv:2: 'attributes' must be an object"),
        ("m.csv", "image,species\n,x\n", r"m\.csv:2: missing 'image'"),
        ("m.jsonl", '{"image": "a.jpg"}\n{"image": "b.jpg",\n', r"m\.jsonl:2: not valid JSON"),
        ("m.jsonl", '["a.jpg"]\n', r"m\.jsonl:1: expected a JSON object per line, got list"),
        ("m.jsonl", '{"image": "a.jpg", "attributes": 5}\n', r"m\.jsonl:1: 'attributes' must be an object"),
        ("m.parquet", "not parquet", r"m\.parquet: not a readable Parquet file"),
        ("m.xlsx", "", r"m\.xlsx: unknown manifest format '\.xlsx'"),
    ],
)
def test_malformed_manifests(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_manifest(_write(tmp_path / name, text))


def test_missing_manifest_and_unknown_output_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="unknown manifest format '.txt'"):
        write_manifest(_records(tmp_path), tmp_path / "m.txt")


def test_parquet_map_column_of_attributes(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    attributes = pa.array([[("colour", "red"), ("legs", "6")], []], type=pa.map_(pa.string(), pa.string()))
    table = pa.table({"image": ["a.jpg", "b.jpg"], "path": [["Animalia"], []], "attributes": attributes})
    pq.write_table(table, tmp_path / "m.parquet")
    records = read_manifest(tmp_path / "m.parquet")
    assert [(r.path, r.attributes) for r in records] == [(("Animalia",), {"colour": "red", "legs": "6"}), ((), {})]

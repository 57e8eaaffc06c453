"""Taxonomy files: JSON, CSV/TSV and the VQA JSONL; round trips and validation messages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taxonlens.errors import TaxonomyError
from taxonlens.taxonomy import Taxonomy, load_taxonomy, save_taxonomy

BENCHMARK = "benchmarks/inat21_plantae_similar_choice.jsonl"  # in tests/fixtures (the real_data fixture)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _raises(path: Path, message: str, **kwargs: object) -> None:
    """``load_taxonomy(path)`` fails with a message that starts with the file (and line) and contains ``message``."""
    with pytest.raises(TaxonomyError) as e:
        load_taxonomy(path, **kwargs)
    assert str(e.value).startswith(str(path)), str(e.value)
    assert message in str(e.value), str(e.value)


# ---------------------------------------------------------------- reading
def test_a_builtin_name_loads_the_shipped_taxonomy(builtin_taxonomies: Path) -> None:
    assert load_taxonomy("imagenet-animal") == load_taxonomy(builtin_taxonomies / "imagenet_animal.json")
    assert load_taxonomy("inat21-plantae").n_leaves == 4271


def test_a_benchmark_is_not_a_taxonomy_file(real_data: Path) -> None:
    _raises(real_data / BENCHMARK, "taxonlens.data.vqa.benchmark_taxonomy builds the tree of its true paths")


def test_csv_with_standard_rank_columns_ignores_other_columns(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "t.csv",
        "id,Kingdom,Genus,Species,common_name\n"
        "1,Plantae,Rosa,Rosa canina,dog rose\n"
        "\n"
        "2, Plantae ,Bellis,Bellis perennis,daisy\n",
    )
    tax = load_taxonomy(f)
    assert tax.ranks == ("Kingdom", "Genus", "Species")
    assert tax.leaf_paths() == [("Plantae", "Rosa", "Rosa canina"), ("Plantae", "Bellis", "Bellis perennis")]


def test_tsv(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.tsv", "level1\tlevel2\nanimal\tcrab, king\nanimal\tcrayfish\n")
    assert load_taxonomy(f).leaf_paths() == [("animal", "crab, king"), ("animal", "crayfish")]


def test_csv_custom_rank_columns(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.csv", "Reich,Gattung,Art\nPlantae,Rosa,Rosa canina\n")
    tax = load_taxonomy(f)
    assert tax.ranks == ("Reich", "Gattung", "Art")
    assert tax.find("Rosa", rank="gattung") == tax.node_of_path(("Plantae", "Rosa"))

    f = _write(tmp_path / "u.csv", "id,kingdom,Gattung,Art,note\n7,Plantae,Rosa,Rosa canina,x\n")
    tax = load_taxonomy(f, ranks=["gattung", "ART"])
    assert tax.ranks == ("Gattung", "Art") and tax.leaf_paths() == [("Rosa", "Rosa canina")]
    _raises(f, "rank columns ['family'] not in the header", ranks=["Gattung", "family"])


def test_csv_intermediate_rank_columns_are_kept(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "t.csv",
        "id,Kingdom,phylum,class,subclass,order,superfamily,family,tribe,genus,species,subspecies,common_name\n"
        "1,Animalia,Chordata,Mammalia,Theria,Carnivora,Canoidea,Canidae,Vulpini,Vulpes,Vulpes vulpes,,red fox\n",
    )
    tax = load_taxonomy(f)
    assert tax.ranks == ("Kingdom", "phylum", "class", "subclass", "order", "superfamily", "family", "tribe",
                         "genus", "species")  # no row fills subspecies: ranks stop at the deepest level
    assert tax.leaf_paths() == [("Animalia", "Chordata", "Mammalia", "Theria", "Carnivora", "Canoidea", "Canidae",
                                 "Vulpini", "Vulpes", "Vulpes vulpes")]
    assert load_taxonomy(save_taxonomy(tax, tmp_path / "u.csv")) == tax


def test_csv_variable_depth_from_trailing_empty_cells(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "t.csv",
        "level1,level2,level3,level4\n"
        "animal,invertebrate,arthropod,trilobite\n"
        "animal,vertebrate,,\n"
        "animal,invertebrate,arthropod,\n",
    )
    tax = load_taxonomy(f)
    assert tax.leaf_paths() == [
        ("animal", "invertebrate", "arthropod", "trilobite"),
        ("animal", "vertebrate"),
        ("animal", "invertebrate", "arthropod"),  # a label that other paths pass through
    ]
    assert tax.ranks == ("level1", "level2", "level3", "level4")


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", [".json", ".csv", ".tsv"])
@pytest.mark.parametrize("name", ["imagenet_animal.json", "inat21_plantae.json"])
def test_round_trip_real_taxonomies(builtin_taxonomies: Path, tmp_path: Path, name: str, suffix: str) -> None:
    tax = load_taxonomy(builtin_taxonomies / name)
    out = save_taxonomy(tax, tmp_path / f"t{suffix}")
    again = load_taxonomy(out)
    assert again == tax
    assert again.ranks == tax.ranks and again.leaf_paths() == tax.leaf_paths()


def test_homonymous_leaves_round_trip_through_csv_only(tmp_path: Path) -> None:
    tax = Taxonomy.from_paths(
        [("Plantae", "Dryas"), ("Animalia", "Dryas"), ("Animalia", "Vulpes", "Vulpes vulpes")],
        ranks=("kingdom", "genus", "species"),
    )
    assert load_taxonomy(save_taxonomy(tax, tmp_path / "t.csv")) == tax
    with pytest.raises(TaxonomyError, match="leaf name 'Dryas' occurs twice; save as .csv"):
        save_taxonomy(tax, tmp_path / "t.json")
    with pytest.raises(TaxonomyError, match="cannot save a taxonomy as '.txt'"):
        save_taxonomy(tax, tmp_path / "t.txt")


def test_json_keeps_non_ascii_names(tmp_path: Path) -> None:
    tax = Taxonomy.from_paths([("Plantae", "Crépis", "Crépis biennis")])
    out = save_taxonomy(tax, tmp_path / "t.json")
    assert "Crépis biennis" in out.read_text(encoding="utf-8")
    assert load_taxonomy(out) == tax


# ---------------------------------------------------------------- validation
JSON_DUPLICATE = """{
 "Rosa canina": ["Plantae", "Rosa", "Rosa canina"],
 "Bellis perennis": ["Plantae", "Bellis", "Bellis perennis"],
 "Rosa canina": ["Plantae", "Rosa", "Rosa canina"],
 "Rosa canina": ["Plantae", "Rosaceae", "Rosa canina"]
}
"""


def test_json_leaf_listed_twice_with_different_paths(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.json", JSON_DUPLICATE)
    _raises(f, ":5: leaf 'Rosa canina' is listed twice with different paths")
    _raises(f, "['Plantae', 'Rosa', 'Rosa canina'] and ['Plantae', 'Rosaceae', 'Rosa canina']")


def test_json_identical_duplicate_is_merged(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.json", "\n".join(JSON_DUPLICATE.splitlines()[:4]).rstrip(",") + "\n}")
    assert load_taxonomy(f).n_leaves == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{\n "a": ["P", "a"],\n "b": ["P", "", "b"]\n}', ":3: empty name at level 2 in path ['P', '', 'b']"),
        ('{\n "a": ["P", "a"],\n "b": ["P", "c"]\n}', ":3: key 'b' differs from the last name of its path ['P', 'c']"),
        ('{\n "a": ["P", "a"],\n "b": "P > b"\n}', ":3: path of 'b' must be a list of names, got 'P > b'"),
        ('{\n "a": ["P", "a"],\n "b": ["P", 2]\n}', ":3: path of 'b' must be a list of names"),
        ('{\n "a": ["P", "a"]\n "b": ["P", "b"]\n}', ":3: not valid JSON"),
        ('[["P", "a"]]', ": expected a JSON object {leaf: [level1, ..., leaf]}, got list"),
        ('{\n "é": ["P", "Q", "é"],\n "b": ["P", "R", "é", "b"]\n}', ":3: 'é' at level 3 has parent 'R' here but 'Q' at FILE:2"),
        ('{\n "\\u00e9": ["P", "Q", "é"],\n "b": ["P", "R", "é", "b"]\n}', "but 'Q' at FILE:2"),
    ],
)
def test_json_errors_name_file_line_and_values(tmp_path: Path, text: str, message: str) -> None:
    f = _write(tmp_path / "t.json", text)
    _raises(f, message.replace("FILE", str(f)))


def test_csv_name_changing_parent_within_a_kingdom(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "t.csv",
        "kingdom,family,genus\n"
        "Plantae,Rosaceae,Rosa\n"
        "Animalia,Canidae,Rosa\n"  # another kingdom: a homonym, accepted
        "Plantae,Asteraceae,Rosa\n",
    )
    _raises(f, f":4: 'Rosa' at level 3 has parent 'Asteraceae' here but 'Rosaceae' at {f}:2")
    _raises(f, "--allow-homonyms")
    tax = load_taxonomy(f, allow_homonyms=True)
    assert tax.n_leaves == 3
    assert tax.find("Rosa", parent="Asteraceae") == tax.node_of_path(("Plantae", "Asteraceae", "Rosa"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kingdom,genus,species\nPlantae,Rosa,Rosa canina\nPlantae,Rosa\n", ":3: 2 fields but the header has 3: ['Plantae', 'Rosa']"),
        ("kingdom,genus,species\nPlantae,Rosa,Rosa canina,x\n", ":2: 4 fields but the header has 3"),
        ("kingdom,genus,species\nPlantae,,Rosa canina\n", ":2: empty name at level 2"),
        ("", ": empty file; expected a header row"),
    ],
)
def test_csv_errors_name_file_line_and_values(tmp_path: Path, text: str, message: str) -> None:
    _raises(_write(tmp_path / "t.csv", text), message)


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    _raises(_write(tmp_path / "t.yaml", "a: [b]\n"), "unknown taxonomy format '.yaml'")
    with pytest.raises(TaxonomyError, match=re.escape(f"taxonomy file {tmp_path / 'nope.json'} does not exist")):
        load_taxonomy(tmp_path / "nope.json")
    with pytest.raises(TaxonomyError, match="does not exist"):
        load_taxonomy(tmp_path)  # a folder is not a taxonomy file

"""Image folders: iNat21 folder names, nested rank folders and plain class names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taxonlens.data import parse_inat_folder, read_image_folder, read_vqa_benchmark
from taxonlens.errors import DataError
from taxonlens.taxonomy import Taxonomy, load_taxonomy

HOUSTONIA = "08351_Plantae_Tracheophyta_Magnoliopsida_Gentianales_Rubiaceae_Houstonia_purpurea"
HOUSTONIA_PATH = ("Plantae", "Tracheophyta", "Magnoliopsida", "Gentianales", "Rubiaceae", "Houstonia",
                  "Houstonia purpurea")


@pytest.fixture(scope="module")
def plantae(builtin_taxonomies: Path) -> Taxonomy:
    return load_taxonomy(builtin_taxonomies / "inat21_plantae.json")


def _touch(root: Path, *relative: str) -> None:
    for rel in relative:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\xff\xd8")  # the reader lists files; it does not decode them


def test_parse_inat_folder() -> None:
    assert parse_inat_folder(HOUSTONIA) == HOUSTONIA_PATH
    assert parse_inat_folder("00001_A_B_C_D_E_Genus_epithet_subepithet")[-1] == "Genus epithet subepithet"
    for name in ("Houstonia purpurea", "08351_Plantae_Rubiaceae_Houstonia_purpurea", HOUSTONIA[6:],
                 "x" + HOUSTONIA, "08351_Plantae__Magnoliopsida_Gentianales_Rubiaceae_Houstonia_purpurea"):
        assert parse_inat_folder(name) is None, name


def test_every_benchmark_folder_parses_to_its_plant_path(builtin_taxonomies: Path, real_data: Path, plantae: Taxonomy) -> None:
    records = read_vqa_benchmark(real_data / "benchmarks" / "inat21_plantae_similar_choice.jsonl")
    plants = json.loads((builtin_taxonomies / "inat21_plantae.json").read_text())
    for r in records:
        path = parse_inat_folder(Path(r.image).parent.name)
        assert path is not None and len(path) == 7, r.image
        assert path == tuple(plants[r.label]), r.image
        assert tuple(n.lower() for n in path) == r.levels  # the benchmark writes names in lower case
        assert plantae.node_of_path(r.levels) == plantae.node_of_path(path) == plantae.find(r.label, rank="species")


def test_inat_folders(tmp_path: Path, plantae: Taxonomy) -> None:
    encelia = "06760_Plantae_Tracheophyta_Magnoliopsida_Asterales_Asteraceae_Encelia_californica"
    _touch(tmp_path, f"{HOUSTONIA}/b.jpg", f"{HOUSTONIA}/a.JPEG", f"{encelia}/c.png", f"{encelia}/notes.txt",
           f"{encelia}/.DS_Store")
    records = read_image_folder(tmp_path, plantae, split="val")
    assert [Path(r.image).relative_to(tmp_path).as_posix() for r in records] == [
        f"{encelia}/c.png", f"{HOUSTONIA}/a.JPEG", f"{HOUSTONIA}/b.jpg"
    ]
    assert records[1].path == HOUSTONIA_PATH and records[0].label == "Encelia californica"
    assert {r.split for r in records} == {"val"}


def test_nested_rank_folders(tmp_path: Path, plantae: Taxonomy) -> None:
    _touch(tmp_path, "/".join(HOUSTONIA_PATH) + "/a.jpg", "/".join(HOUSTONIA_PATH[:6]) + "/genus_only.jpg")
    records = read_image_folder(tmp_path, plantae)
    assert [r.path for r in records] == [HOUSTONIA_PATH, HOUSTONIA_PATH[:6]]
    assert [r.path for r in read_image_folder(tmp_path)] == [HOUSTONIA_PATH, HOUSTONIA_PATH[:6]]
    _touch(tmp_path, "Plantae/Tracheophyta/Rubiaceae/x.jpg")
    with pytest.raises(DataError, match=r"Rubiaceae: path .* leaves the taxonomy at level 3: no 'Rubiaceae'"):
        read_image_folder(tmp_path, plantae)


def test_plain_class_names_are_resolved_by_the_taxonomy(tmp_path: Path, plantae: Taxonomy) -> None:
    _touch(tmp_path, "Houstonia purpurea/a.jpg", "houstonia/b.png", "loose.jpg")
    by_name = {Path(r.image).name: r.path for r in read_image_folder(tmp_path, plantae)}
    assert by_name == {"a.jpg": HOUSTONIA_PATH, "b.png": HOUSTONIA_PATH[:6], "loose.jpg": ()}
    by_name = {Path(r.image).name: r.path for r in read_image_folder(tmp_path)}
    assert by_name == {"a.jpg": ("Houstonia purpurea",), "b.png": ("houstonia",), "loose.jpg": ()}


def test_unknown_folder_name(tmp_path: Path, plantae: Taxonomy) -> None:
    _touch(tmp_path, "Houstonia purpurae/a.jpg")
    with pytest.raises(DataError, match=r"Houstonia purpurae: no taxon named .*did you mean 'Houstonia purpurea'"):
        read_image_folder(tmp_path, plantae)


def test_folders_without_images(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        read_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        read_image_folder(tmp_path / "empty")
    _touch(tmp_path, "other/a/readme.txt", "other/b/labels.csv")
    (tmp_path / "other" / "dir.jpg").mkdir()
    with pytest.raises(DataError, match="no image files"):
        read_image_folder(tmp_path / "other")

"""BioCLIP's TreeOfLife label files: read as pybioclip reads them, grouped by whole lineage,
subset by taxa, and found in the local Hugging Face cache."""

from __future__ import annotations

import json

import huggingface_hub.constants
import numpy as np
import pytest

from taxonlens.data.treeoflife import (
    EMBEDDINGS_FILE,
    NAMES_FILE,
    bioclip_name,
    hub_treeoflife,
    lineage_paths,
    read_treeoflife,
    subset_leaves,
    unnamed,
    write_treeoflife,
)
from taxonlens.errors import DataError
from taxonlens.models.hub import HubFileError, write_snapshot

# Real lineages (and their shape in TreeOfLife-10M): a homonym genus across kingdoms (Morus:
# a plant and a bird), a genus-only label beside a species of that genus, an empty class
# between named ranks, and a lineage listed twice with and without a common name.
ENTRIES = [
    [["Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae", "Morus", "alba"], "white mulberry"],
    [["Animalia", "Chordata", "Aves", "Suliformes", "Sulidae", "Morus", "bassanus"], "northern gannet"],
    [["Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae", "Morus", ""], ""],
    [["Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae", "Morus", "rubra"], "red mulberry"],
    [["Animalia", "Chordata", "", "Testudines", "Cheloniidae", "Chelonia", "mydas"], ""],
    [["Animalia", "Chordata", "Aves", "Suliformes", "Sulidae", "Morus", "bassanus"], ""],
]


@pytest.fixture
def tol(tmp_path):
    folder = tmp_path / "tol"
    (folder / "embeddings").mkdir(parents=True)
    (folder / NAMES_FILE).write_text(json.dumps(ENTRIES))
    emb = np.random.default_rng(0).normal(size=(16, len(ENTRIES))).astype(np.float32)
    np.save(folder / EMBEDDINGS_FILE, emb / np.linalg.norm(emb, axis=0))
    return folder


def test_lineages_group_like_pybioclip(tol):
    labels = read_treeoflife(tol / NAMES_FILE)
    tax = labels.taxonomy
    assert tax.n_leaves == 5  # the gannet is listed twice: one lineage, two columns
    assert labels.embeddings.shape == (6, 16)
    assert labels.column_leaf.tolist() == [0, 1, 2, 3, 4, 1]
    assert tax.path_names(int(tax.leaves[0]))[-1] == "Morus alba"  # "Genus epithet", as pybioclip
    assert tax.path_names(int(tax.leaves[2])) == ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae",
                                                   "Morus")  # genus-only label, a leaf with children
    turtle = tax.path_names(int(tax.leaves[4]))
    assert turtle[2] == unnamed("class") == "(unnamed class)" and bioclip_name(turtle[2]) == ""
    genera = [tax.names[n] for n in tax.nodes_at_rank("genus")]
    assert genera.count("Morus") == 2  # the plant and the bird are distinct taxa
    names = labels.common_names
    assert names[int(tax.leaves[1])] == "northern gannet" and int(tax.leaves[4]) not in names


def test_write_read_round_trip(tmp_path, tol):
    labels = read_treeoflife(tol / NAMES_FILE)
    paths = [labels.taxonomy.path_names(int(labels.taxonomy.leaves[i])) for i in labels.column_leaf]
    out = write_treeoflife(tmp_path / "again", paths, labels.embeddings.numpy(),
                           [e[1] for e in ENTRIES])
    assert json.loads(out.read_text()) == ENTRIES
    again = read_treeoflife(out)
    assert again.taxonomy == labels.taxonomy and np.array_equal(again.column_leaf, labels.column_leaf)
    assert np.allclose(again.embeddings, labels.embeddings)


def test_subset_by_rank_or_csv(tmp_path, tol):
    labels = read_treeoflife(tol / NAMES_FILE)
    tax = labels.taxonomy
    birds_and_plants = subset_leaves(tax, "genus=morus")  # case-insensitive, both homonyms
    assert birds_and_plants.tolist() == [0, 1, 2, 3]
    csv_file = tmp_path / "keep.csv"
    csv_file.write_text("species\nMorus alba\nChelonia mydas\n")
    assert subset_leaves(tax, str(csv_file)).tolist() == [0, 4]
    small = labels.subset(subset_leaves(tax, "class=Aves"))
    assert small.taxonomy.n_leaves == 1 and small.embeddings.shape == (2, 16)
    assert small.column_leaf.tolist() == [0, 0]
    assert np.array_equal(small.embeddings.numpy(), labels.embeddings.numpy()[[1, 5]])
    assert small.common_names == {int(small.taxonomy.leaves[0]): "northern gannet"}


@pytest.mark.parametrize(("spec", "message"), [
    ("genus=Quercus,Morus", "unknown genus in the subset: Quercus"),
    ("tribe=Moreae", "subset rank 'tribe' is not one of"),
    ("genus=", "names no genus"),
    ("no-such-file.csv", "give RANK=NAME"),
])
def test_bad_subsets_say_what_is_wrong(tol, spec, message):
    with pytest.raises(DataError, match=message):
        subset_leaves(read_treeoflife(tol / NAMES_FILE).taxonomy, spec)


def test_malformed_files(tmp_path, tol):
    with pytest.raises(DataError, match="does not exist"):
        read_treeoflife(tmp_path / "missing.json")
    np.save(tol / EMBEDDINGS_FILE, np.zeros((16, 5), np.float32))
    with pytest.raises(DataError, match=r"has shape \(16, 5\), expected \[D, 6\]"):
        read_treeoflife(tol / NAMES_FILE)
    (tol / NAMES_FILE).write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_treeoflife(tol / NAMES_FILE)
    with pytest.raises(DataError, match="entry 0 has 3 rank names"):
        lineage_paths([[["Plantae", "Tracheophyta", "Rosa"], ""]], "x.json")
    with pytest.raises(DataError, match="entry 0 names no rank"):
        lineage_paths([[[""] * 7, ""]], "x.json")
    with pytest.raises(DataError, match="entry 0 is"):
        lineage_paths([["Plantae"]], "x.json")


@pytest.fixture
def offline_home(monkeypatch, tmp_path):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    return home


def test_hub_labels_missing_then_found(offline_home, tol):
    with pytest.raises(HubFileError) as info:
        hub_treeoflife("bioclip")
    msg = str(info.value)
    assert "imageomics/TreeOfLife-10M" in msg and "datasets--imageomics--TreeOfLife-10M" in msg
    assert "huggingface-cli download --repo-type dataset" in msg
    write_snapshot("imageomics/TreeOfLife-10M", {NAMES_FILE: tol / NAMES_FILE, EMBEDDINGS_FILE: tol / EMBEDDINGS_FILE},
                   repo_type="dataset")
    assert hub_treeoflife("bioclip").taxonomy == read_treeoflife(tol / NAMES_FILE).taxonomy
    with pytest.raises(DataError, match="has no TreeOfLife label set"):
        hub_treeoflife("tiny-clip")

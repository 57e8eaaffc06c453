"""Records to classes: the leaf of each record's path, case-insensitively, with one clear error."""

from __future__ import annotations

import pytest

from taxonlens.data import Record
from taxonlens.data.records import record_leaves
from taxonlens.errors import DataError
from taxonlens.taxonomy import Taxonomy

PATHS = [("Plantae", "Rosa"), ("Plantae", "Rosa", "Rosa canina"), ("Animalia", "Vulpes", "Vulpes vulpes")]


def test_leaves_of_records_case_insensitive_and_genus_labels():
    tax = Taxonomy.from_paths(PATHS, ranks=("kingdom", "genus", "species"))
    records = [Record("a.png", ("plantae", "ROSA", "rosa canina")), Record("b.png", ("Plantae", "Rosa")),
               Record("c.png", ("Animalia", "Vulpes", "Vulpes vulpes"))]
    assert record_leaves(records, tax) == [1, 0, 2]


def test_paths_outside_the_classes_are_counted_and_named():
    tax = Taxonomy.from_paths(PATHS, ranks=("kingdom", "genus", "species"))
    records = [Record("ok.png", PATHS[1]), Record("x.png", ("Animalia", "Vulpes")),  # a taxon, not a class
               Record("y.png", ("Fungi", "Amanita"))]
    with pytest.raises(DataError, match=r"2 photos .* e\.g\. x\.png: Animalia > Vulpes"):
        record_leaves(records, tax)

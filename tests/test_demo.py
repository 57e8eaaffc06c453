"""The demo runs end to end on a small world and its figures come from the real evaluator."""

import json

from taxonlens.demo import per_rank_vote, run_demo
from taxonlens.taxonomy import Taxonomy


def test_demo_small_world(tmp_path):
    calls = []
    results = run_demo(tmp_path, species=12, images_per_species=6, size=24, k=3,
                       progress=lambda d, n: (calls.append((d, n)), lambda i: None)[1])
    assert set(results) == {"test", "novel"}
    for split in results.values():
        leaf, vote = split.values()
        assert leaf["valid_path_pct"] == 100.0  # a neighbour's leaf path is always a real path
        assert 0 <= vote["valid_path_pct"] <= 100.0
        assert leaf["per_rank"]["kingdom"] == 100.0  # one kingdom in the plant taxonomy
    assert results["novel"]["leaf path (1-NN)"]["acc_leaf"] == 0.0  # novel species are never in memory
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["world"]["species"] == 12 and report["results"]["test"] == results["test"]
    assert ("writing synthworld", 72) in calls


def test_per_rank_vote_can_be_inconsistent():
    tax = Taxonomy.from_paths([("A", "x", "1"), ("A", "y", "2"), ("A", "y", "3")])
    # neighbours 0, 0, 1, 2, 2 -> rank 2 votes y (3 of 5), leaf votes '1' (2) vs '3' (2): first seen wins
    (path,) = per_rank_vote(tax, [[0, 0, 1, 2, 2]])
    assert path == ("A", "y", "1") and tax.try_node_of_path(path) is None

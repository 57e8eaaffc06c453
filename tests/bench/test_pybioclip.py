"""pybioclip and taxonlens side by side, offline, on the same weights, labels and photos:
the top-k answers and their probabilities agree at every rank (the figures of
``taxonlens bench pybioclip`` come from this same function at full size)."""

from __future__ import annotations

import pytest

from taxonlens.bench.pybioclip import bench_pybioclip, synthetic_lineages
from taxonlens.data.treeoflife import lineage_paths
from taxonlens.taxonomy import Taxonomy

pytest.importorskip("bioclip", reason="pybioclip is a dev dependency: pip install -e '.[dev]'")


def test_synthetic_lineages_have_the_real_file_s_quirks():
    lineages = synthetic_lineages(3000, seed=1)
    assert len(lineages) == 3000 and all(len(p) == 7 for p in lineages)
    assert any(p[6] == "" for p in lineages)  # genus-only labels
    assert any(p[2] == "" or p[3] == "" for p in lineages)  # an empty rank between named ones
    tax = Taxonomy.from_paths(lineage_paths([[[*p[:6], p[6].split(" ", 1)[-1] if p[6] else ""], ""]
                                             for p in lineages], "synthetic"), allow_homonyms=True)
    genus_names = [tax.names[n] for n in tax.nodes_at_rank("genus")]
    assert len(set(genus_names)) < len(genus_names)  # homonyms under different parents


def test_top_k_answers_and_probabilities_agree_at_every_rank(tmp_path):
    result = bench_pybioclip(n_species=3000, n_images=3, arch="tiny-clip-224", batch_size=2, top_k=5,
                             workdir=tmp_path, compile_pybioclip=False)
    assert result.labels <= 3000 and set(result.ranks) == {"kingdom", "phylum", "class", "order", "family",
                                                                  "genus", "species"}
    for rank, r in result.ranks.items():
        assert r["same_top_k"] == 1.0, rank
        assert r["max_abs_prob_diff"] < 1e-5, (rank, r["max_abs_prob_diff"])
        assert r["pybioclip_s"] > 0 and r["taxonlens_s"] > 0
        assert r["pybioclip_rank_step_s"] > 0 and r["taxonlens_rank_step_s"] > 0

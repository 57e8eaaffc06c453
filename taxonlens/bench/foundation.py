"""Foundation benchmarks: taxonomy scale and synthworld generation speed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from taxonlens.bench import timed
from taxonlens.synthworld import SynthWorld, random_taxonomy
from taxonlens.taxonomy import load_taxonomy, save_taxonomy


def bench_taxonomy(n_leaves: int = 450_000, batch: int = 256, seed: int = 0) -> dict[str, float | int]:
    """Seconds to generate, save, load and index a ``n_leaves`` 7-rank taxonomy, and to
    compute every node's marginal for ``batch`` images with one sparse product."""
    tax, t_gen = timed(lambda: random_taxonomy(n_leaves, seed=seed))
    with tempfile.TemporaryDirectory() as d:
        csv_file = Path(d) / "tree.csv"
        _, t_save = timed(lambda: save_taxonomy(tax, csv_file))
        loaded, t_load = timed(lambda: load_taxonomy(csv_file))
    _, t_tables = timed(lambda: (loaded.ancestor_table, loaded.leaf_ancestor_matrix(), loaded.leaves_under(0)))
    rng = np.random.default_rng(seed)
    probs = rng.random((batch, loaded.n_leaves), dtype=np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    m = loaded.leaf_ancestor_matrix()
    _, t_marg = timed(lambda: (m.T @ probs.T).T)
    a, b = rng.integers(1, len(loaded), 1_000_000), rng.integers(1, len(loaded), 1_000_000)
    _, t_lca = timed(lambda: loaded.lca(a, b))
    return {
        "leaves": loaded.n_leaves,
        "taxa": len(loaded) - 1,
        "generate_s": t_gen,
        "save_csv_s": t_save,
        "load_csv_s": t_load,
        "index_tables_s": t_tables,
        f"marginals_batch{batch}_s": t_marg,
        "lca_1M_pairs_s": t_lca,
    }


def bench_synthworld(n_species: int = 100, images_per_species: int = 10, size: int = 64, seed: int = 0) -> dict[str, float | int]:
    """Images per second of synthworld: rendering in memory, and writing PNGs + manifest."""
    world = SynthWorld.create(random_taxonomy(n_species, seed=seed), n_species, images_per_species, size=size, seed=seed)
    index = world.index()
    _, t_render = timed(lambda: [world.photo(leaf, k) for leaf, k in index])
    with tempfile.TemporaryDirectory() as d:
        _, t_write = timed(lambda: world.write(d))
    return {
        "images": len(index),
        "size_px": size,
        "render_images_per_s": len(index) / t_render,
        "write_images_per_s": len(index) / t_write,
    }

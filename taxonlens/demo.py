"""``taxonlens demo``: the main job on the built-in offline default.

Builds a synthworld from the shipped iNat21 plant taxonomy, writes it to disk,
reads it back through the manifest reader and safe image loader, classifies the
test photos (seen species) and the novel photos (held-out species) with a
raw-pixel nearest-neighbour baseline, and scores the paths with the
hierarchical metrics, exactly as ``taxonlens evaluate`` does.

Two decoders are compared on the same neighbours: the leaf's path (always a
valid path) and an independent majority vote per rank (as an LMM answers each
rank separately), which can produce paths the taxonomy does not contain.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from taxonlens.data import Record, load_image, read_manifest, write_manifest
from taxonlens.evaluate import evaluate_files, write_predictions
from taxonlens.recognize.knn import KNNClassifier, pixel_features
from taxonlens.resources import taxonomy_file
from taxonlens.synthworld import SynthWorld
from taxonlens.taxonomy import Taxonomy, load_taxonomy

DEMO_TAXONOMY = "inat21-plantae"


def per_rank_vote(taxonomy: Taxonomy, neighbours: np.ndarray) -> list[tuple[str, ...]]:
    """Independent majority vote per rank over the neighbours' paths.

    Args:
        neighbours: int ``[N, k]`` leaf indices of each query's nearest neighbours.

    Returns:
        one name path per query, each rank decided on its own (may be inconsistent).
    """
    paths = taxonomy.leaf_paths()
    out = []
    for row in neighbours:
        votes = [paths[i] for i in row]
        depth = max(len(p) for p in votes)
        out.append(tuple(Counter(p[d] for p in votes if len(p) > d).most_common(1)[0][0] for d in range(depth)))
    return out


def run_demo(
    out: str | Path = "taxonlens-demo",
    species: int = 200,
    images_per_species: int = 12,
    size: int = 48,
    k: int = 5,
    seed: int = 0,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict[str, dict[str, dict]]:
    """Run the demo; returns ``{split: {decoder: evaluation dict}}`` and writes
    ``report.json`` beside the world, manifests and predictions under ``out``.

    ``progress(description, total)`` may return a callback advanced per item.
    """
    out = Path(out)
    tax = load_taxonomy(taxonomy_file(DEMO_TAXONOMY))
    world = SynthWorld.create(tax, species, images_per_species, novel_fraction=0.15, size=size, seed=seed)
    step = progress("writing synthworld", len(world.index())) if progress else None
    manifest = world.write(out / "world", progress=step)
    records = read_manifest(manifest, taxonomy=world.taxonomy)
    by_split: dict[str, list[Record]] = {}
    for r in records:
        by_split.setdefault(r.split, []).append(r)

    def features(split: str) -> np.ndarray:
        step = progress(f"reading {split} photos", len(by_split[split])) if progress else None
        images = []
        for r in by_split[split]:
            images.append(load_image(r.image))
            if step:
                step(1)
        return pixel_features(images)

    train_y = np.asarray([world.taxonomy.leaf_index[world.taxonomy.node_of_path(r.path)] for r in by_split["train"]])
    knn = KNNClassifier(k=1).fit(features("train"), train_y, world.taxonomy.n_leaves)
    results: dict[str, dict[str, dict]] = {}
    for split in ("test", "novel"):
        x = features(split)
        bench = write_manifest(by_split[split], out / f"{split}.jsonl")
        neighbours = train_y[knn.kneighbors(x, k)[1]]
        decoders = {
            "leaf path (1-NN)": [world.taxonomy.leaf_paths()[i] for i in neighbours[:, 0]],
            f"per-rank vote ({k}-NN)": per_rank_vote(world.taxonomy, neighbours),
        }
        results[split] = {}
        for name, paths in decoders.items():
            pred_file = out / f"predictions-{split}-{name.split()[0]}.jsonl"
            write_predictions([(r.image, p) for r, p in zip(by_split[split], paths)], pred_file)
            results[split][name] = evaluate_files(bench, pred_file, taxonomy=world.taxonomy).to_dict()
    results_meta = {"world": world.config(), "chance_species_pct": 100.0 / world.taxonomy.n_leaves}
    (out / "report.json").write_text(json.dumps({"results": results, **results_meta}, indent=1) + "\n")
    return results

"""``taxonlens synthworld``: write a procedural tree-of-life image set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from taxonlens.cli.common import TaxonomyOpt, console, load_taxonomy, progress_bar


def synthworld(
    out: Annotated[Path, typer.Option(help="Output folder (images/, manifest.jsonl, taxonomy, world.json).")],
    taxonomy: TaxonomyOpt = "inat21-plantae",
    species: Annotated[int, typer.Option(help="Number of species (sibling clusters are chosen).")] = 200,
    images_per_species: Annotated[int, typer.Option(help="Photos of each species.")] = 20,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
    novel_fraction: Annotated[float, typer.Option(help="Share of species held out as the novel split.")] = 0.15,
    nuisance: Annotated[float, typer.Option(help="0..1 strength of pose, clutter, lighting, noise, occlusion.")] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    random_tree: Annotated[bool, typer.Option(help="Ignore --taxonomy and generate a random tree of life.")] = False,
    scene: Annotated[bool, typer.Option(help="Also render camera-trap scenes of 1-4 organisms (2 x 1.5 --size) into "
                                             "OUT/scenes/, a MegaDetector file OUT/detections.json (true boxes with "
                                             "jitter, false boxes on the background) and the truth OUT/scenes.jsonl."
                                        )] = False,
    scenes: Annotated[int, typer.Option(help="Scene photos with --scene.")] = 100,
) -> None:
    """Write a procedural tree-of-life image set (PNGs + manifest). Re-running resumes."""
    from taxonlens.synthworld import SynthWorld, random_taxonomy
    from taxonlens.synthworld.scene import SceneSet

    tax = random_taxonomy(species, seed=seed) if random_tree else load_taxonomy(taxonomy)
    world = SynthWorld.create(tax, species, images_per_species, novel_fraction, size, seed, nuisance)
    with progress_bar() as bar:
        task = bar.add_task("rendering", total=len(world.index()))
        manifest = world.write(out, progress=lambda n: bar.advance(task, n))
    counts = world.config()["images_per_split"]
    console.print(f"wrote {manifest} ({world.taxonomy.n_leaves} species, {len(world.novel)} novel): {counts}")
    if scene:
        scene_set = SceneSet(world, scenes, 2 * size, 3 * size // 2, seed=seed)
        with progress_bar() as bar:
            task = bar.add_task("rendering scenes", total=scenes)
            detections = scene_set.write(out, progress=lambda n: bar.advance(task, n))
        console.print(f"wrote {scenes} scenes of seen species: {detections} and {out / 'scenes.jsonl'}")

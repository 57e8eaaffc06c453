"""A :class:`SynthWorld`: chosen species of a taxonomy, their genomes, and a
deterministic stream of photos split into train / val / test and a *novel*
split of held-out species whose ancestors are all seen.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from taxonlens.data.manifests import write_manifest
from taxonlens.data.records import Record
from taxonlens.errors import DataError
from taxonlens.knowledge.template import DESCRIPTION, describe
from taxonlens.synthworld.observe import observe
from taxonlens.synthworld.render import render
from taxonlens.synthworld.shot import Shot, draw_shot
from taxonlens.synthworld.traits import Genome, assign_genomes, stable_seed
from taxonlens.taxonomy import STANDARD_RANKS, Taxonomy, save_taxonomy

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)


def select_species(taxonomy: Taxonomy, n_species: int, seed: int, max_per_parent: int = 4) -> np.ndarray:
    """Pick ``n_species`` leaves (leaf indices) in sibling clusters.

    Leaves are taken a parent (genus) at a time, up to ``max_per_parent`` from each,
    parents with several leaves first, so the world has siblings that differ only
    in their finest traits and held-out species keep seen relatives.
    """
    if n_species >= taxonomy.n_leaves:
        return np.arange(taxonomy.n_leaves)
    rng = np.random.default_rng(stable_seed(seed, "select"))
    parents = taxonomy.parent[taxonomy.leaves]
    groups: dict[int, list[int]] = {}
    for leaf_idx, p in enumerate(parents.tolist()):
        groups.setdefault(p, []).append(leaf_idx)
    keys = list(groups)
    rng.shuffle(keys)
    keys.sort(key=lambda p: len(groups[p]) < 2)  # stable: multi-leaf parents first, in random order
    chosen: list[int] = []
    for p in keys:
        members = rng.permutation(groups[p])[:max_per_parent].tolist()
        chosen.extend(members[: n_species - len(chosen)])
        if len(chosen) == n_species:
            break
    return np.sort(np.asarray(chosen))


def choose_novel(taxonomy: Taxonomy, n_novel: int, seed: int) -> frozenset[int]:
    """Leaf indices to hold out: at most one per parent that keeps at least one seen sibling."""
    if n_novel <= 0:
        return frozenset()
    rng = np.random.default_rng(stable_seed(seed, "novel"))
    parents = taxonomy.parent[taxonomy.leaves]
    counts = np.bincount(parents, minlength=len(taxonomy))
    order = rng.permutation(taxonomy.n_leaves)
    novel: list[int] = []
    used: set[int] = set()
    for leaf_idx in order.tolist():
        p = int(parents[leaf_idx])
        if counts[p] >= 2 and p not in used:
            novel.append(leaf_idx)
            used.add(p)
            if len(novel) == n_novel:
                break
    return frozenset(novel)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "taxon"


@dataclass(frozen=True)
class SynthImage:
    """One rendered photo and what it shows: the attributes an observer reads from it (hidden
    ones absent; :func:`~taxonlens.synthworld.observe.observe`) and their description."""

    image: Image.Image
    leaf: int
    split: str
    attributes: dict[str, str]
    description: str


@dataclass
class SynthWorld:
    """A procedural world over ``taxonomy`` (already restricted to its species).

    Attributes:
        taxonomy: the world's species and their ancestors.
        images_per_species: photos of each species.
        size: image side in pixels.
        seed: fixes genomes, splits and every photo.
        novel: leaf indices of held-out species (all their photos are in split ``novel``).
        nuisance: 0..1 strength of pose, background, lighting, noise and occlusion.
    """

    taxonomy: Taxonomy
    images_per_species: int = 20
    size: int = 64
    seed: int = 0
    novel: frozenset[int] = field(default_factory=frozenset)
    nuisance: float = 1.0

    @classmethod
    def create(
        cls,
        taxonomy: Taxonomy,
        n_species: int = 200,
        images_per_species: int = 20,
        novel_fraction: float = 0.15,
        size: int = 64,
        seed: int = 0,
        nuisance: float = 1.0,
    ) -> SynthWorld:
        """Choose species from ``taxonomy`` in sibling clusters and hold out a novel set.

        Raises:
            DataError: sizes out of range.
        """
        if n_species < 2 or images_per_species < 1 or size < 16 or not 0 <= novel_fraction < 1:
            raise DataError(
                "synthworld needs species >= 2, images per species >= 1, size >= 16 and 0 <= novel fraction < 1"
            )
        sub = taxonomy.subset(select_species(taxonomy, n_species, seed))
        novel = choose_novel(sub, round(novel_fraction * sub.n_leaves), seed)
        return cls(sub, images_per_species, size, seed, novel, nuisance)

    # ----------------------------------------------------------- contents
    @cached_property
    def genomes(self) -> list[Genome]:
        """Genome of every leaf, in leaf order."""
        return assign_genomes(self.taxonomy, self.seed)

    def split_of(self, leaf: int, k: int) -> str:
        """Split of photo ``k`` of leaf ``leaf``: ``novel`` for held-out species, else
        train / val / test in :data:`SPLIT_FRACTIONS` (at least one train photo)."""
        if leaf in self.novel:
            return "novel"
        n = self.images_per_species
        n_train = max(1, round(SPLIT_FRACTIONS[0] * n))
        n_val = round(SPLIT_FRACTIONS[1] * n)
        return "train" if k < n_train else "val" if k < n_train + n_val else "test"

    def image_name(self, leaf: int, k: int) -> str:
        """Relative file name of photo ``k`` of ``leaf``: ``images/<leaf slug>/<k>.png``."""
        return f"images/{leaf:05d}_{_slug(self.taxonomy.names[self.taxonomy.leaves[leaf]])}/{k:04d}.png"

    def index(self, split: str | None = None) -> list[tuple[int, int]]:
        """``(leaf, k)`` of every photo in ``split`` (all photos if ``None``)."""
        return [
            (leaf, k)
            for leaf in range(self.taxonomy.n_leaves)
            for k in range(self.images_per_species)
            if split is None or self.split_of(leaf, k) == split
        ]

    def shot(self, leaf: int, k: int) -> tuple[Shot, np.random.Generator]:
        """How photo ``k`` of ``leaf`` is taken (deterministic), and the generator, past the
        shot's draws, that gives its sensor noise."""
        rng = np.random.default_rng([stable_seed(self.seed, "photo"), leaf, k])
        return draw_shot(rng, self.size, self.nuisance), rng

    def seen(self, leaf: int, k: int, shot: Shot) -> dict[str, str]:
        """What photo ``k`` of ``leaf``, taken as ``shot``, shows: its attributes (hidden ones
        absent) and their :data:`~taxonlens.knowledge.template.DESCRIPTION` (deterministic).
        The species' truth is ``attributes(world.genomes[leaf])``."""
        observer = np.random.default_rng([stable_seed(self.seed, "observer"), leaf, k])
        attrs = observe(self.genomes[leaf], shot, observer)
        return {**attrs, DESCRIPTION: describe(attrs)}

    def photo(self, leaf: int, k: int) -> SynthImage:
        """Render photo ``k`` of ``leaf`` (deterministic)."""
        shot, rng = self.shot(leaf, k)
        attrs = self.seen(leaf, k, shot)
        description = attrs.pop(DESCRIPTION)
        return SynthImage(render(self.genomes[leaf], shot, rng), leaf, self.split_of(leaf, k), attrs, description)

    def record(self, leaf: int, k: int, root: Path | None = None) -> Record:
        """The manifest record of a photo (image path under ``root`` if given): what the photo
        shows and its description, known without rendering it."""
        name = self.image_name(leaf, k)
        return Record(
            image=str(root / name) if root is not None else name,
            path=self.taxonomy.path_names(int(self.taxonomy.leaves[leaf])),
            split=self.split_of(leaf, k),
            attributes=self.seen(leaf, k, self.shot(leaf, k)[0]),
        )

    def image_source(self) -> Callable[[Record], Image.Image]:
        """A function ``record -> PIL image`` for records whose ``image`` is an :meth:`image_name`
        (as :meth:`records` writes them): each photo rendered on first use and kept in memory.
        The LMM trainers take it as their image source, so a world need not be written.

        Raises (when called):
            DataError: a record naming no photo of this world.
        """
        where = {self.image_name(leaf, k): (leaf, k) for leaf, k in self.index(None)}
        cache: dict[str, Image.Image] = {}

        def load(record: Record) -> Image.Image:
            if record.image not in cache:
                if record.image not in where:
                    raise DataError(f"{record.image} is not a photo of this synthworld")
                cache[record.image] = self.photo(*where[record.image]).image
            return cache[record.image]

        return load

    def records(self, split: str | None = None) -> list[Record]:
        """Records of every photo in ``split`` (image paths relative to a written world)."""
        return [self.record(leaf, k) for leaf, k in self.index(split)]

    def dataset(self, split: str | None = None, transform: Callable | None = None) -> SynthDataset:
        """A torch ``Dataset`` of ``(image, leaf index)`` rendered on the fly (no disk)."""
        return SynthDataset(self, split, transform)

    # ---------------------------------------------------------------- disk
    def write(self, out: str | Path, progress: Callable[[int], None] | None = None) -> Path:
        """Write PNGs, ``manifest.jsonl``, the taxonomy and ``world.json`` under ``out``.

        Photos already on disk are kept (a killed run resumes where it stopped);
        each PNG is written to a temporary name and renamed, so none is half-written.
        ``progress`` is called with the number of photos done after each one.

        Returns:
            the manifest's path.
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for leaf, k in self.index():
            target = out / self.image_name(leaf, k)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                self.photo(leaf, k).image.save(tmp, format="PNG")
                os.replace(tmp, target)
            if progress is not None:
                progress(1)
        names = [p[-1] for p in self.taxonomy.leaf_paths()]
        tax_file = out / ("taxonomy.json" if len(set(names)) == len(names) else "taxonomy.csv")
        save_taxonomy(self.taxonomy, tax_file)
        (out / "world.json").write_text(json.dumps(self.config() | {"taxonomy": tax_file.name}, indent=1) + "\n")
        return write_manifest([self.record(leaf, k, out) for leaf, k in self.index()], out / "manifest.jsonl")

    def config(self) -> dict[str, object]:
        """The settings that reproduce this world from its taxonomy."""
        counts = {s: len(self.index(s)) for s in ("train", "val", "test", "novel")}
        return {
            "species": self.taxonomy.n_leaves,
            "novel_species": sorted(self.taxonomy.names[self.taxonomy.leaves[i]] for i in self.novel),
            "images_per_species": self.images_per_species,
            "size": self.size,
            "seed": self.seed,
            "nuisance": self.nuisance,
            "images_per_split": counts,
        }


class SynthDataset:
    """``torch.utils.data.Dataset`` over one split of a :class:`SynthWorld`.

    Items are ``(image, leaf_index)``: a PIL image, or ``transform(image)`` when a
    transform is given (e.g. an open_clip preprocess giving a ``[3, H, W]`` tensor).
    """

    def __init__(self, world: SynthWorld, split: str | None = None, transform: Callable | None = None):
        self.world, self.split, self.transform = world, split, transform
        self.items = world.index(split)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[object, int]:
        leaf, k = self.items[i]
        img = self.world.photo(leaf, k).image
        return (self.transform(img) if self.transform is not None else img), leaf

    def labels(self) -> np.ndarray:
        """Leaf index of every item, int64 ``[len(self)]``."""
        return np.asarray([leaf for leaf, _ in self.items], dtype=np.int64)


_SYLLABLES = ("ar", "bo", "ca", "da", "el", "fi", "ga", "hu", "ix", "ka", "lo", "mi", "nu", "or", "pa", "qu", "ri",
              "sa", "tu", "ve", "xo", "ze")
_ENDINGS = ("us", "a", "um", "is", "ens", "ii")
_SUFFIXES = {"phylum": "phyta", "class": "opsida", "order": "ales", "family": "aceae"}


def _words(rng: np.random.Generator, n: int, min_syllables: int) -> list[str]:
    """``n`` distinct pseudo-Latin words: distinct random integers spelled in syllables."""
    k = max(min_syllables, int(np.ceil(np.log(max(4 * n, 2)) / np.log(len(_SYLLABLES)))))
    codes = rng.choice(len(_SYLLABLES) ** k, size=n, replace=False)
    digits = (codes[:, None] // len(_SYLLABLES) ** np.arange(k)) % len(_SYLLABLES)
    return ["".join(_SYLLABLES[d] for d in row) for row in digits.tolist()]


def random_taxonomy(n_species: int, seed: int = 0, n_kingdoms: int = 3, species_per_genus: float = 3.0) -> Taxonomy:
    """A random 7-rank tree of life with pseudo-Latin names and exactly ``n_species`` leaves.

    Taxa per rank grow geometrically from ``n_kingdoms`` to ``n_species / species_per_genus``
    genera; every parent gets one child, and the remaining children go to parents
    drawn with Pareto weights, so family and genus sizes are heavy-tailed as in real
    trees. Builds 450,000 species in a few seconds.
    """
    if n_species < 1:
        raise DataError("a random taxonomy needs at least one species")
    rng = np.random.default_rng(stable_seed(seed, "random-tree"))
    n_genera = max(1, round(n_species / species_per_genus))
    top = min(n_kingdoms, n_genera)
    counts = [round(top * (n_genera / top) ** (d / 5)) for d in range(6)] + [n_species]
    prefixes: list[list[str]] = [[]]
    for depth, rank in enumerate(STANDARD_RANKS):
        n_parents = len(prefixes)
        n = max(counts[depth], n_parents)
        weights = rng.pareto(1.2, n_parents) + 1.0
        extra = rng.choice(n_parents, size=n - n_parents, p=weights / weights.sum())
        owners = np.sort(np.concatenate([np.arange(n_parents), extra])).tolist()
        if rank == "species":  # epithets repeat across genera, as in nature; genus + epithet is unique
            epithets = _words(rng, n, 2)
            endings = rng.choice(_ENDINGS, n).tolist()
            prefixes = [[*prefixes[p], f"{prefixes[p][-1]} {e}{end}"] for p, e, end in zip(owners, epithets, endings)]
        else:
            suffix = _SUFFIXES.get(rank, "")
            prefixes = [[*prefixes[p], w.capitalize() + suffix] for p, w in zip(owners, _words(rng, n, 3))]
    return Taxonomy.from_paths(prefixes)

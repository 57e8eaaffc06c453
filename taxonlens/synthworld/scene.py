"""Camera-trap scenes of a :class:`~taxonlens.synthworld.world.SynthWorld`: photos holding 1 to 4
organisms of known species at known boxes, and what a detector would have said about them.

A :class:`SceneSet` draws scene ``i`` deterministically: a backdrop ``width x height``, a first
species among the world's seen species, and each further organism of the same species with
probability ``same_species`` (a herd), else of another; organisms are placed without overlapping,
each painted as a single photo paints it (:func:`~taxonlens.synthworld.render.paint`). Its box is
the bounding box of its painted body. The scene's truth is the species when all organisms share
one, else the lowest common ancestor of their species (what an image-level answer should say).

:meth:`SceneSet.write` writes the photos, ``detections.json`` in MegaDetector's batch format (each
organism's box with jitter and a high confidence, plus ``false_boxes`` boxes on the background on
average, with low confidences, all in category ``animal``) and ``scenes.jsonl`` (the truth: per
photo its path and each organism's species, true box and the index of its detection).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from taxonlens.data.megadetector import ANIMAL, DETECTION_CATEGORIES, write_detections
from taxonlens.errors import DataError
from taxonlens.synthworld.render import develop, paint
from taxonlens.synthworld.shot import PLAIN_GREY, SUPERSAMPLE, Pose, draw_backdrop, draw_light, draw_occluder
from taxonlens.synthworld.traits import stable_seed
from taxonlens.synthworld.world import SynthWorld
from taxonlens.tables import write_table

#: the category id of ``animal`` in the files written
ANIMAL_ID = next(k for k, v in DETECTION_CATEGORIES.items() if v == ANIMAL)
#: detector confidences drawn for true boxes and for false ones
TRUE_CONF, FALSE_CONF = (0.6, 0.99), (0.05, 0.45)
#: body extent in body units (the widest body plan reaches about 1.1 from the centre)
_EXTENT = 1.15


@dataclass(frozen=True)
class SceneOrganism:
    """One organism of a scene: its leaf index and its true box, normalised ``(x, y, w, h)``."""

    leaf: int
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True)
class Scene:
    """One rendered scene: the photo, its organisms and the names of its true path (the shared
    species, or the lowest common ancestor of the species)."""

    image: Image.Image
    organisms: list[SceneOrganism]
    path: tuple[str, ...]


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter) if inter > 0 else 0.0


@dataclass(frozen=True)
class SceneSet:
    """``n_scenes`` camera-trap scenes of ``world`` (see the module docstring).

    Attributes:
        world: the species, their genomes and the nuisance strength.
        n_scenes: photos.
        width, height: photo size in pixels.
        max_organisms: 1 to this many organisms per photo (fewer when they do not fit).
        same_species: probability that a further organism is of the first one's species.
        jitter: standard deviation of each detected box edge, as a fraction of the box's side.
        false_boxes: mean number of false boxes on the background per photo (Poisson).
        seed: draws the scenes (with the world's seed).
    """

    world: SynthWorld
    n_scenes: int = 50
    width: int = 128
    height: int = 96
    max_organisms: int = 4
    same_species: float = 0.6
    jitter: float = 0.05
    false_boxes: float = 0.5
    seed: int = 0
    species: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.n_scenes < 1 or not 1 <= self.max_organisms <= 4 or min(self.width, self.height) < 32:
            raise DataError("scenes need at least 1 photo, 1 to 4 organisms each and sides of at least 32 pixels")
        if not 0 <= self.same_species <= 1 or self.jitter < 0 or self.false_boxes < 0:
            raise DataError("same_species must lie in [0, 1], jitter and false_boxes must be at least 0")
        seen = tuple(i for i in range(self.world.taxonomy.n_leaves) if i not in self.world.novel)
        object.__setattr__(self, "species", seen)

    def _rng(self, i: int, what: str) -> np.random.Generator:
        return np.random.default_rng([stable_seed(self.world.seed, f"scene-{what}"), self.seed, i])

    def scene(self, i: int) -> Scene:
        """Render scene ``i`` (deterministic)."""
        rng = self._rng(i, "photo")
        k = self.world.nuisance
        w, h = self.width * SUPERSAMPLE, self.height * SUPERSAMPLE
        leaves = [int(rng.choice(self.species))]
        for _ in range(int(rng.integers(1, self.max_organisms + 1)) - 1):
            leaves.append(leaves[0] if rng.random() < self.same_species else int(rng.choice(self.species)))
        canvas = draw_backdrop(rng, w, h).paint() if k > 0 else Image.new("RGB", (w, h), PLAIN_GREY)
        placed: list[tuple[float, float, float]] = []
        organisms = []
        for leaf in leaves:
            for _ in range(30):  # a place that overlaps no organism already there
                radius = float(rng.uniform(0.13, 0.22)) * h
                reach = _EXTENT * radius
                cx, cy = float(rng.uniform(reach, w - reach)), float(rng.uniform(reach, h - reach))
                if all(np.hypot(cx - x, cy - y) > reach + r for x, y, r in placed):
                    break
            else:
                continue
            placed.append((cx, cy, reach))
            pose = Pose(angle=float(rng.uniform(-0.7, 0.7) * k), scale=1.0, cx=cx, cy=cy, radius=radius)
            painted = paint(canvas, self.world.genomes[leaf], pose, draw_occluder(rng, pose, k))
            left, top, right, bottom = painted.getbbox()
            organisms.append(SceneOrganism(leaf, (left / w, top / h, (right - left) / w, (bottom - top) / h)))
        tax = self.world.taxonomy
        nodes = [int(tax.leaves[o.leaf]) for o in organisms]
        lca = nodes[0]
        for n in nodes[1:]:
            lca = tax.lca(lca, n)
        return Scene(develop(canvas, draw_light(rng, k), rng), organisms, tax.path_names(lca))

    def detections(self, i: int, scene: Scene) -> tuple[list[dict], list[int]]:
        """What a detector says of scene ``i``: MegaDetector detections (jittered true boxes, then
        false ones, sorted by confidence, best first) and the index of each organism's detection."""
        rng = self._rng(i, "detections")
        boxes: list[tuple[tuple[float, ...], float, int]] = []  # (bbox, conf, organism or -1)
        for o, org in enumerate(scene.organisms):
            x, y, bw, bh = org.bbox
            x0, x1 = x + rng.normal(0, self.jitter, 2) * bw + np.array([0.0, bw])
            y0, y1 = y + rng.normal(0, self.jitter, 2) * bh + np.array([0.0, bh])
            x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(1.0, x1), min(1.0, y1)
            if x1 - x0 < 0.01 or y1 - y0 < 0.01:  # a jitter that collapsed the box: keep the true one
                x0, y0, x1, y1 = x, y, x + bw, y + bh
            boxes.append(((x0, y0, x1 - x0, y1 - y0), float(rng.uniform(*TRUE_CONF)), o))
        for _ in range(int(rng.poisson(self.false_boxes))):
            for _ in range(20):  # a box on the background, overlapping no organism
                bw, bh = rng.uniform(0.12, 0.35), rng.uniform(0.15, 0.45)
                box = (float(rng.uniform(0, 1 - bw)), float(rng.uniform(0, 1 - bh)), float(bw), float(bh))
                if all(box_iou(box, org.bbox) < 0.05 for org in scene.organisms):
                    boxes.append((box, float(rng.uniform(*FALSE_CONF)), -1))
                    break
        boxes.sort(key=lambda b: -b[1])
        which = [next(d for d, b in enumerate(boxes) if b[2] == o) for o in range(len(scene.organisms))]
        dets = [{"category": ANIMAL_ID, "conf": round(conf, 3), "bbox": [round(v, 4) for v in box]}
                for box, conf, _ in boxes]
        return dets, which

    def file_name(self, i: int) -> str:
        """Relative file name of scene ``i``: ``scenes/<i>.png``."""
        return f"scenes/{i:05d}.png"

    def write(self, out: str | Path, progress: Callable[[int], None] | None = None) -> Path:
        """Write the photos (those on disk are kept: a killed run resumes), ``detections.json``
        (file names relative to ``out``) and ``scenes.jsonl`` under ``out``.

        Returns:
            the path of ``detections.json``.
        """
        out = Path(out)
        (out / "scenes").mkdir(parents=True, exist_ok=True)
        images, truth = [], []
        tax = self.world.taxonomy
        for i in range(self.n_scenes):
            scene = self.scene(i)
            target = out / self.file_name(i)
            if not target.exists():
                tmp = target.with_suffix(".tmp")
                scene.image.save(tmp, format="PNG")
                os.replace(tmp, target)
            dets, which = self.detections(i, scene)
            images.append({"file": self.file_name(i), "detections": dets})
            truth.append({"file": self.file_name(i), "path": list(scene.path),
                          "organisms": [{"path": list(tax.path_names(int(tax.leaves[o.leaf]))),
                                         "bbox": [round(v, 4) for v in o.bbox], "detection": d}
                                        for o, d in zip(scene.organisms, which)]})
            if progress is not None:
                progress(1)
        write_table(truth, out / "scenes.jsonl", "scene truth")
        document = {"info": {"format_version": "1.4", "detector": "synthworld scenes (ground truth with jitter)"},
                    "detection_categories": dict(DETECTION_CATEGORIES), "images": images}
        return write_detections(document, out / "detections.json")


__all__ = ["Scene", "SceneOrganism", "SceneSet", "box_iou"]

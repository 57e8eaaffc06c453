"""Camera-trap detections on synthworld scenes (``taxonlens bench detections``): classifying the
detector's boxes vs classifying the whole frame, per animal and per photo, with and without RAR
reranking of the crops, mean +- sd over seeds.

Each seed builds its own synthworld (all species seen), trains a tiny BioCLIP-style encoder
contrastively on its training photos (one organism per photo) and makes it a zero-shot
:class:`~taxonlens.predict.Recognizer`; a tiny LMM is fine-tuned as RAR's ranker on the encoder's
top ``rerank_k`` candidates of the training photos (as :mod:`taxonlens.bench.rar` does). Then it
renders :class:`~taxonlens.synthworld.scene.SceneSet` scenes (1-4 organisms, their boxes jittered,
false boxes on the background) and runs ``predict --detections``
(:func:`~taxonlens.predict.detections.predict_detections`) on their MegaDetector file. Figures,
percent, at each rank:

- ``animals``: each organism's species path against the answer for its box's crop (``crops``,
  ``crops + rerank``), or against the one answer for the whole frame it stands in (``whole frame``);
- ``photos``: each photo's truth (the shared species, or the lowest common ancestor of its
  species) against the rolled-up answer (``rollup``, ``rollup + rerank``, see
  :mod:`taxonlens.predict.rollup`) or the whole frame's answer. At rank ``d`` an answer is right
  when its first ``d`` names are the truth's first ``d`` names: below a mixed photo's common
  ancestor the right answer says nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from taxonlens.bench import HardwareSpec, TinySFTSpec, WorldSpec, bench_run, mean_sd
from taxonlens.bench.cells import sd_cell, table
from taxonlens.data import load_image, read_manifest
from taxonlens.errors import TaxonlensError
from taxonlens.models.encoders import load_encoder
from taxonlens.models.mllm import load_lmm
from taxonlens.predict import Recognizer
from taxonlens.predict.detections import images_table, predict_detections
from taxonlens.recognize.decode import TreeDecoder
from taxonlens.recognize.rerank import LMMReranker, ranker_records
from taxonlens.recognize.zeroshot import ZeroShotClassifier
from taxonlens.synthworld.scene import SceneSet
from taxonlens.tables import read_table
from taxonlens.train.contrastive import ContrastiveConfig, train_contrastive
from taxonlens.train.sft import train_sft

#: the arms of each level, in table order
ARMS = {"animals": ("whole frame", "crops", "crops + rerank"), "photos": ("whole frame", "rollup", "rollup + rerank")}


@dataclass(frozen=True)
class DetectionsSpec(HardwareSpec):
    """What ``bench detections`` runs.

    Attributes:
        world: the synthworld of single-organism photos the models train on (no novel species);
            seed ``world.seed + s`` for seed ``s``.
        scenes, scene_width, scene_height, false_boxes: the scenes (photos, pixels, mean false
            boxes per photo).
        min_conf, crop_pad: as ``predict --detections``.
        encoder, encoder_epochs, encoder_batch_size, encoder_lr: the contrastive training.
        rerank_k: candidates the ranker ranks; ranker: its fine-tuning.
        seeds: worlds, trainings and scenes drawn.
        threads, device, precision: :class:`~taxonlens.bench.HardwareSpec`.
    """

    world: WorldSpec = field(default_factory=partial(WorldSpec, n_species=12, images_per_species=16,
                                                     novel_fraction=0.0))
    scenes: int = 40
    scene_width: int = 96
    scene_height: int = 72
    false_boxes: float = 0.5
    min_conf: float = 0.2
    crop_pad: float = 0.1
    encoder: str = "tiny-clip"
    encoder_epochs: int = 30
    encoder_batch_size: int = 32
    encoder_lr: float = 1e-3
    rerank_k: int = 3
    ranker: TinySFTSpec = field(default_factory=partial(TinySFTSpec, epochs=20))
    seeds: int = 3

    @classmethod
    def quick(cls) -> DetectionsSpec:
        """A size that runs in about a minute: for tests of the result's fields, not for figures."""
        return cls(world=WorldSpec(n_species=6, images_per_species=4, novel_fraction=0.0), scenes=4,
                   encoder_epochs=1, ranker=TinySFTSpec(epochs=1), seeds=2)


@dataclass
class DetectionsResult:
    """What ``bench detections`` measured.

    Attributes:
        spec: what ran.
        counts: per seed, ``scenes``, ``animals`` (organisms), ``boxes`` (animal boxes classified,
            false ones included) and ``false_boxes`` (those on the background).
        accuracy: level (``animals``, ``photos``) -> arm -> rank -> ``{"mean", "sd", "values"}``.
        seconds: per stage, summed over seeds.
    """

    spec: DetectionsSpec
    counts: list[dict[str, int]]
    accuracy: dict[str, dict[str, dict[str, dict[str, Any]]]]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """A rich table: one row per level and arm, one column per rank, ``mean +- sd`` percent."""
        ranks = list(self.accuracy["animals"]["crops"])
        c = self.counts[0]
        out = table(f"camera-trap scenes: {c['scenes']} photos, {c['animals']} animals, {c['false_boxes']} false boxes "
                    f"(seed 0); {self.spec.seeds} seeds; percent right at each rank",
                    ("level", "answer", *ranks), left=("level", "answer"), no_wrap=True)
        for level, arms in self.accuracy.items():
            for arm, per_rank in arms.items():
                out.add_row(level, arm, *(sd_cell(per_rank[r]) for r in ranks))
        return out


def right_at_ranks(predicted: Sequence[str], truth: Sequence[str], depth: int) -> list[bool]:
    """Whether ``predicted`` names the truth's taxa down to each rank ``1 .. depth``: the first ``d``
    names of both are equal (a truth shorter than ``d`` wants an answer that stops there too)."""
    return [list(predicted[:d]) == list(truth[:d]) for d in range(1, depth + 1)]


def bench_detections(spec: DetectionsSpec = DetectionsSpec(), workdir: str | Path | None = None,
                     progress: Callable[[str], None] | None = None) -> DetectionsResult:
    """Run the benchmark of ``spec`` (see the module docstring).

    Raises:
        TaxonlensError: no seeds or scenes, a ``rerank_k`` outside 2..number of species, or novel
            species in the world.
    """
    if spec.seeds < 1 or spec.scenes < 1:
        raise TaxonlensError(f"seeds and scenes must be at least 1, got {spec.seeds} and {spec.scenes}")
    if not 2 <= spec.rerank_k <= min(26, spec.world.n_species):
        raise TaxonlensError(f"rerank k must lie in 2..{min(26, spec.world.n_species)}, got {spec.rerank_k}")
    if spec.world.novel_fraction:
        raise TaxonlensError("the scenes hold seen species only: set the world's novel fraction to 0")
    say = progress or (lambda _msg: None)
    seconds: dict[str, float] = {}
    counts, per_seed = [], []
    with bench_run(workdir, spec.threads, "detections") as work:
        for s in range(spec.seeds):
            count, figures = _seed(spec, spec.world.seed + s, work / f"seed{s}", say, seconds)
            counts.append(count)
            per_seed.append(figures)
    accuracy = {level: {arm: {r: mean_sd([f[level][arm][r] for f in per_seed]) for r in per_seed[0][level][arm]}
                        for arm in arms} for level, arms in ARMS.items()}
    return DetectionsResult(spec, counts, accuracy, seconds)


def _tick(seconds: dict[str, float], stage: str, start: float) -> float:
    now = time.perf_counter()
    seconds[stage] = seconds.get(stage, 0.0) + now - start
    return now


def _seed(spec: DetectionsSpec, seed: int, work: Path, say: Callable[[str], None], seconds: dict[str, float]
          ) -> tuple[dict[str, int], dict[str, dict[str, dict[str, float]]]]:
    """One seed: the counts and ``{level: {arm: {rank: percent}}}``."""
    tick = time.perf_counter()
    say(f"seed {seed}: synthworld of {spec.world.n_species} species, {spec.scenes} scenes")
    world = replace(spec.world, seed=seed).create()
    tax = world.taxonomy
    train = [r for r in read_manifest(world.write(work / "world"), tax) if r.split == "train"]
    scenes_dir = work / "scenes"
    md = SceneSet(world, spec.scenes, spec.scene_width, spec.scene_height, false_boxes=spec.false_boxes,
                  seed=seed).write(scenes_dir)
    truth = [row for _, row in read_table(scenes_dir / "scenes.jsonl", "scene truth")]
    tick = _tick(seconds, "world_and_scenes", tick)

    say(f"seed {seed}: training {spec.encoder} on {len(train)} photos x {spec.encoder_epochs} epochs")
    config = ContrastiveConfig(encoder=spec.encoder, text_type="taxonomic", epochs=spec.encoder_epochs,
                               batch_size=spec.encoder_batch_size, lr=spec.encoder_lr, seed=seed,
                               out=str(work / "encoder"), eval_every=0, **spec.train_settings)
    encoder = spec.scored(train_contrastive(config, train, taxonomy=tax), load_encoder)
    recognizer = Recognizer(encoder, ZeroShotClassifier(encoder, tax), TreeDecoder(tax))
    tick = _tick(seconds, "encoder_training", tick)

    say(f"seed {seed}: fine-tuning {spec.ranker.model} as the ranker of the top {spec.rerank_k}")
    questions = ranker_records(recognizer, train, k=spec.rerank_k, seed=seed)
    ranker = spec.scored(train_sft(spec.ranker.config(work / "ranker", spec, seed), questions, images=None,
                                   ranks=[tax.ranks[-1]]), load_lmm)
    reranking = replace(recognizer, reranker=LMMReranker(ranker, tax, spec.rerank_k, "score", answer="name",
                                                         system=None))
    tick = _tick(seconds, "ranker_training", tick)

    say(f"seed {seed}: classifying boxes and whole frames of {len(truth)} scenes")
    boxes, photos = {}, {}
    for arm, rec in (("crops", recognizer), ("crops + rerank", reranking)):
        out = work / f"{arm.replace(' + ', '_')}.jsonl"
        predict_detections(rec, md, out, spec.min_conf, spec.crop_pad, overwrite=True)
        boxes[arm] = {(r["file_name"], r["detection"]): r for _, r in read_table(out, "output")}
        photos[arm] = {r["file_name"]: r for _, r in read_table(images_table(out), "output")}
    frames = [load_image(scenes_dir / t["file"]) for t in truth]
    whole = [p.path for i in range(0, len(frames), 32) for p in recognizer.predict(frames[i:i + 32], top_k=1)]
    _tick(seconds, "classification", tick)

    depth = tax.max_depth
    animals: dict[str, list[list[bool]]] = {arm: [] for arm in ARMS["animals"]}
    images: dict[str, list[list[bool]]] = {arm: [] for arm in ARMS["photos"]}
    for t, frame in zip(truth, whole):
        for o in t["organisms"]:
            animals["whole frame"].append(right_at_ranks(frame, o["path"], depth))
            for arm in ("crops", "crops + rerank"):
                animals[arm].append(right_at_ranks(boxes[arm][t["file"], o["detection"]]["path"], o["path"], depth))
        images["whole frame"].append(right_at_ranks(frame, t["path"], depth))
        images["rollup"].append(right_at_ranks(photos["crops"][t["file"]]["path"], t["path"], depth))
        images["rollup + rerank"].append(right_at_ranks(photos["crops + rerank"][t["file"]]["path"], t["path"], depth))
    figures = {level: {arm: {r: 100.0 * sum(row[d] for row in rows) / len(rows) for d, r in enumerate(tax.ranks)}
                       for arm, rows in arms.items()} for level, arms in (("animals", animals), ("photos", images))}
    n_boxes = sum(1 for r in boxes["crops"].values() if r["category"] == "animal" and r["path"])
    n_animals = sum(len(t["organisms"]) for t in truth)
    return {"scenes": len(truth), "animals": n_animals, "boxes": n_boxes, "false_boxes": n_boxes - n_animals}, figures


__all__ = ["ARMS", "DetectionsResult", "DetectionsSpec", "bench_detections", "right_at_ranks"]

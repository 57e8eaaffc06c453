"""BioCLIP's Rare-Species protocol on synthworld's novel split (``taxonlens bench fewshot``):
zero-, one- and five-shot recognition of species the encoder never saw, per rank, mean +- sd over
seeds.

One run builds a synthworld whose *novel* species (all their photos in split ``novel``; their
genera are seen) play the rare species, trains a tiny BioCLIP-style encoder contrastively on the
training photos of the seen species (:func:`~taxonlens.train.contrastive.train_contrastive`,
taxonomic captions), and encodes every novel photo once. Then, for each seed, as BioCLIP draws its
shots: ``max(shots)`` photos per novel species are drawn as the labelled pool and the rest are the
test photos of that seed; every arm is scored on the same test photos:

- ``zero-shot``: the novel species' taxonomic names embedded as text
  (:class:`~taxonlens.recognize.zeroshot.ZeroShotClassifier`);
- ``k-shot``: SimpleShot prototypes (or a linear probe) of the first ``k`` pool photos of each
  species (:mod:`taxonlens.recognize.fewshot`).

Each arm's leaf probabilities over the novel species are decoded to the most probable consistent
path (:class:`~taxonlens.recognize.decode.TreeDecoder`) and scored per rank
(:func:`~taxonlens.evaluate.metrics.hierarchical_report`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taxonlens.bench import HardwareSpec, WorldSpec, bench_run, mean_sd
from taxonlens.data import read_manifest
from taxonlens.data.records import record_leaves
from taxonlens.errors import TaxonlensError
from taxonlens.evaluate.metrics import hierarchical_report
from taxonlens.index.exemplars import encode_records
from taxonlens.models.encoders import load_encoder
from taxonlens.recognize.decode import TreeDecoder
from taxonlens.recognize.fewshot import classifier_class
from taxonlens.recognize.zeroshot import ZeroShotClassifier
from taxonlens.train.contrastive import ContrastiveConfig, train_contrastive


@dataclass(frozen=True)
class FewShotSpec(HardwareSpec):
    """What ``bench fewshot`` runs.

    Attributes:
        world: the synthworld (its seed seeds the training too).
        encoder, encoder_epochs, encoder_batch_size, encoder_lr: the contrastive training.
        shots: the k of the k-shot arms (BioCLIP: 1 and 5).
        method: ``simpleshot`` (BioCLIP's) or ``linear``.
        seeds: shot draws (seeds ``0 .. seeds - 1``).
        threads, device, precision: :class:`~taxonlens.bench.HardwareSpec`.
    """

    world: WorldSpec = field(default_factory=partial(WorldSpec, n_species=24, images_per_species=20, novel_fraction=0.34))
    encoder: str = "tiny-clip"
    encoder_epochs: int = 30
    encoder_batch_size: int = 32
    encoder_lr: float = 1e-3
    shots: tuple[int, ...] = (1, 5)
    method: str = "simpleshot"
    seeds: int = 5


@dataclass
class FewShotResult:
    """What ``bench fewshot`` measured.

    Attributes:
        spec: what ran.
        novel_species: species held out of training; ``pool`` / ``test``: photos per species
            drawn as shots / scored, per seed.
        encoder_training: photos, epochs, steps, first and last loss.
        accuracy: arm (``zero-shot``, ``1-shot``, ...) -> rank -> ``{"mean", "sd", "values"}``,
            percent of test photos whose consistent path is right at that rank.
        seconds: per stage.
    """

    spec: FewShotSpec
    novel_species: int
    pool: int
    test: int
    encoder_training: dict[str, Any]
    accuracy: dict[str, dict[str, dict[str, Any]]]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """A rich table: one row per arm, one column per rank, ``mean +- sd`` percent."""
        from rich.table import Table

        ranks = list(next(iter(self.accuracy.values())))
        table = Table(title=f"few-shot on {self.novel_species} novel species ({self.pool} shots drawn, "
                            f"{self.test} test photos each; {self.spec.seeds} seeds, {self.spec.method})")
        table.add_column("arm")
        for r in ranks:
            table.add_column(r, justify="right")
        for arm, per_rank in self.accuracy.items():
            table.add_row(arm, *(f"{per_rank[r]['mean']:.1f} +- {per_rank[r]['sd']:.1f}" for r in ranks))
        return table


def bench_fewshot(spec: FewShotSpec = FewShotSpec(), workdir: str | Path | None = None,
                  progress: Callable[[str], None] | None = None) -> FewShotResult:
    """Run the Rare-Species protocol of ``spec`` (see the module docstring).

    Raises:
        TaxonlensError: shots below 1, or a world without two novel species with more photos
            than shots.
    """
    shots = sorted({int(k) for k in spec.shots})
    if not shots or shots[0] < 1:
        raise TaxonlensError(f"shots must be at least 1, got {list(spec.shots)}")
    if spec.world.images_per_species <= shots[-1]:
        raise TaxonlensError(f"{shots[-1]} shots need more than {shots[-1]} photos per species")
    classifier_class(spec.method)  # an unknown method fails before any work
    say = progress or (lambda _msg: None)
    with bench_run(workdir, spec.threads, "fewshot") as work:
        return _run(spec, shots, work, say)


def _run(spec: FewShotSpec, shots: Sequence[int], work: Path, say: Callable[[str], None]) -> FewShotResult:
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    say(f"synthworld: {spec.world.n_species} species x {spec.world.images_per_species} photos")
    world = spec.world.create()
    records = read_manifest(world.write(work / "world"), world.taxonomy)
    train = [r for r in records if r.split == "train"]
    novel = [r for r in records if r.split == "novel"]
    tree = world.taxonomy
    novel_tax = tree.subset(sorted({int(tree.leaf_index[tree.node_of_path(r.path)]) for r in novel}))
    if novel_tax.n_leaves < 2:
        raise TaxonlensError(f"the world holds {novel_tax.n_leaves} novel species; raise --novel-fraction")
    seconds["world"] = time.perf_counter() - tick

    tick = time.perf_counter()
    say(f"training {spec.encoder}: {len(train)} photos of seen species x {spec.encoder_epochs} epochs")
    config = ContrastiveConfig(encoder=spec.encoder, text_type="taxonomic", epochs=spec.encoder_epochs,
                               batch_size=spec.encoder_batch_size, lr=spec.encoder_lr, seed=spec.world.seed,
                               out=str(work / "encoder"), eval_every=0, **spec.train_settings)
    trained = train_contrastive(config, train, taxonomy=tree)
    encoder = spec.scored(trained, load_encoder)
    losses = [m["train_loss"] for m in trained.metrics if "train_loss" in m]
    seconds["encoder_training"] = time.perf_counter() - tick

    tick = time.perf_counter()
    say(f"encoding {len(novel)} photos of {novel_tax.n_leaves} novel species")
    features, kept = encode_records(encoder, novel)
    features = torch.from_numpy(features)
    labels = np.asarray(record_leaves([novel[i] for i in kept], novel_tax))
    text_probs = ZeroShotClassifier(encoder, novel_tax).predict_proba(features)
    seconds["encoding"] = time.perf_counter() - tick

    tick = time.perf_counter()
    decoder = TreeDecoder(novel_tax)
    paths = [list(novel_tax.path_names(int(novel_tax.leaves[c]))) for c in labels]
    arms = ["zero-shot", *(f"{k}-shot" for k in shots)]
    per_seed: dict[str, dict[str, list[float]]] = {a: {r: [] for r in novel_tax.ranks} for a in arms}
    n_pool = shots[-1]
    for seed in range(spec.seeds):
        rng = np.random.default_rng(seed)
        pool = {c: rng.permutation(np.flatnonzero(labels == c))[:n_pool] for c in np.unique(labels)}
        test = np.setdiff1d(np.arange(len(labels)), np.concatenate(list(pool.values())))
        probs = {"zero-shot": text_probs[test]}
        for k in shots:
            support = np.concatenate([idx[:k] for idx in pool.values()])
            clf = classifier_class(spec.method)().fit(features[support], labels[support], novel_tax.n_leaves)
            probs[f"{k}-shot"] = clf.predict_proba(features[test])
        for arm, p in probs.items():
            predicted = [list(x.path) for x in decoder.decode(p, top_k=1)]
            report = hierarchical_report([paths[i] for i in test], predicted, range(novel_tax.max_depth), novel_tax)
            for d, r in enumerate(novel_tax.ranks):
                per_seed[arm][r].append(report.per_level[d])
    seconds["few_shot"] = time.perf_counter() - tick
    return FewShotResult(
        spec=spec, novel_species=novel_tax.n_leaves, pool=n_pool, test=len(test) // novel_tax.n_leaves,
        encoder_training={"photos": len(train), "epochs": spec.encoder_epochs, "steps": trained.steps,
                          "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None},
        accuracy={a: {r: mean_sd(v) for r, v in per_rank.items()} for a, per_rank in per_seed.items()},
        seconds=seconds)


__all__ = ["FewShotResult", "FewShotSpec", "bench_fewshot"]

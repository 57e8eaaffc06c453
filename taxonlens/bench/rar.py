"""Evidence for RAR (retrieve and rerank) from the pretrained start (``taxonlens bench rar``): the
encoder's top-1 vs the encoder retrieving ``k`` candidate species and the pretrained multimodal
LLM, fine-tuned as a ranker, choosing among them, for every ``k`` of ``ks``, over seeds.

The world is the start's (:attr:`PretrainSpec.world
<taxonlens.train.pretrain.PretrainSpec.world>`: 400 species in genera of several species,
nuisance 0.6). The training photos of each seen species are split in two (``encoder_share``):

- **the memory**: tiny-clip (the BFM's architecture) trained contrastively with taxonomic captions
  on the encoder part only (:func:`~taxonlens.train.contrastive.train_contrastive`), once per run
  (the world's seed), and used zero-shot over every species of the world
  (:class:`~taxonlens.recognize.zeroshot.ZeroShotClassifier`). The pretrained BFM cannot be the
  memory: it saw every training photo, so no photo would be left to train the ranker on lists like
  the test's. Trained on part of the photos for few epochs, its top-1 sits well below its top-k
  recall, the room RAR's reranking needs. Measured on the start's world (300 seen test photos):
  on 3/4 of the training photos (3,040), 6 epochs, top-1 14.0%, recall@3 / 5 / 10 30.0 / 44.3 /
  64.0% (396 s); on half of them, 4 epochs, 5.7% and 12.7 / 20.0 / 31.0% (too weak: 14 points
  between top-1 and recall@5);
- **the ranker's lists**: ``ranker_lists`` of the ranker part's photos (drawn once), each with the
  encoder's ``max(ks)`` retrieved candidates (the truth put in when missed,
  :func:`~taxonlens.recognize.rerank.ranker_records`): photos the encoder never saw, so their lists look like the test's. The pretrained LMM
  (:attr:`Pretrained.lmm <taxonlens.train.pretrain.Pretrained.lmm>`) learns them with LoRA, once per
  seed, answering the species name (no system prompt), stopped early on the validation loss of up
  to ``val_lists`` lists of the val split (``patience`` epochs without a lower loss; the weights of
  the best epoch are kept, :class:`~taxonlens.train.loop.EarlyStopping`), so it cannot memorise.

On ``records_per_split`` test photos of each of ``splits`` (``seen``: the seen species' test
photos; ``novel``: the novel species' photos), drawn once with the world's seed
(:func:`~taxonlens.bench.vqa.drawn`), every arm keeps per photo: ``species`` (its top-1 species
is right, percent 0/100), ``genus`` (its top-1 species is in the right genus) and, for
``rerank@k``, ``recall`` (the truth is among the encoder's top ``k``: the ceiling of any ranker).
``rerank@k`` is :class:`~taxonlens.recognize.rerank.LMMReranker` (``score``: the log-likelihood of
each candidate's name) on the top ``k``. The claims (:func:`claims`) are judged per ``k`` with
:func:`~taxonlens.bench.claims.judge` (intervals over seeds and photos).

Recipe, measured on the quick start (one seed, 54 lists of 10, 6 epochs, lr 1e-3, alpha 32, batch
8): LoRA on ``language+head`` learns (validation loss 5.05 -> 3.15), ``language`` alone barely
(5.29 -> 4.72), so ``language+head``. Size, from the per-unit costs of small-qwen2.5-vl at 64 px
measured on the loaded 2-core machine (one thread): 0.37 s per training list of 10 names, 0.14 s
per validation list (loss only: scoring its options would cost 1.1 s), 0.23 / 0.45 / 1.09 s per
test photo reranked at k = 3 / 5 / 10; tiny-clip trained at 13.7 to 46 photos/s. Per seed: 200
lists x at most 3 epochs (~265 s with the validation of 100 lists) and 300 seen photos x k = 3, 5,
10 (~530 s); five seeds, the memory (400 to 1,330 s) and rendering the photos (~60 s): 74 to 89
minutes at those loads, less on an idle machine. The novel split (``splits``) doubles the scoring; on the quick start no
arm named a novel species, so it is off by default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from taxonlens.bench import EvidenceSpec, bench_run
from taxonlens.bench.cells import figures_table, table
from taxonlens.bench.claims import Claim, claims_table, estimates_json, interval_cell, judge, stack
from taxonlens.bench.vqa import drawn
from taxonlens.data import Record
from taxonlens.errors import TaxonlensError
from taxonlens.models.encoders import load_encoder
from taxonlens.models.mllm import load_lmm
from taxonlens.predict import Recognizer
from taxonlens.recognize.decode import TreeDecoder
from taxonlens.recognize.rerank import LMMReranker, ranker_records
from taxonlens.recognize.zeroshot import ZeroShotClassifier
from taxonlens.taxonomy import Taxonomy
from taxonlens.train.contrastive import ContrastiveConfig, train_contrastive
from taxonlens.train.pretrain import Pretrained, PretrainSpec
from taxonlens.train.sft import SFTConfig, train_sft

#: candidates per photo compared by default
RAR_KS = (3, 5, 10)
#: the splits of the test photos: seen species (the world's ``test``) and novel species
SPLITS = {"seen": "test", "novel": "novel"}


def claims(ks: Sequence[int]) -> list[Claim]:
    """RAR's claim for each ``k``: retrieving the top ``k`` and reranking beats the encoder's top-1
    on the seen species' photos."""
    return [Claim("RAR", f"top-{k} + rerank beats the encoder's top-1", f"rerank@{k}", "encoder",
                  ("seen", "species"), +1) for k in ks]


def encoder_probs(recognizer: Recognizer, images: Sequence[Image.Image], batch_size: int = 64) -> torch.Tensor:
    """``[B, n_leaves]`` leaf probabilities of the recognizer's encoder and classifier (no reranking)."""
    enc = recognizer.encoder
    return torch.cat([recognizer.classifier.predict_proba(enc.encode_images(
        torch.stack([enc.preprocess(img) for img in images[i:i + batch_size]])))
        for i in range(0, len(images), batch_size)]).float()


def rerank_probs(reranker: LMMReranker, images: Sequence[Image.Image], probs: torch.Tensor,
                 batch_size: int = 16) -> torch.Tensor:
    """``reranker.rerank`` over ``images`` in batches."""
    return torch.cat([reranker.rerank(images[i:i + batch_size], probs[i:i + batch_size])
                      for i in range(0, len(images), batch_size)])


def top1_values(probs: torch.Tensor, truth: torch.Tensor, genus_of: torch.Tensor) -> dict[str, np.ndarray]:
    """Per photo, percent 0/100: ``species`` (the most probable leaf of ``probs`` ``[N, L]`` is
    ``truth`` ``[N]``) and ``genus`` (it has the truth's genus; ``genus_of``: ``[L]`` genus node of
    every leaf)."""
    top = probs.argmax(dim=1)
    return {"species": 100.0 * (top == truth).double().numpy(),
            "genus": 100.0 * (genus_of[top] == genus_of[truth]).double().numpy()}


def recall_values(probs: torch.Tensor, truth: torch.Tensor, k: int) -> np.ndarray:
    """Per photo, 100 when its ``truth`` leaf is among the ``k`` most probable of ``probs`` ``[N, L]``, else 0."""
    top = probs.topk(min(k, probs.shape[1]), dim=1).indices
    return 100.0 * (top == truth[:, None]).any(dim=1).double().numpy()


def encoder_part(records: Sequence[Record], share: float) -> tuple[list[Record], list[Record]]:
    """Each species' training photos split in two, in their order: the first ``share`` of them
    (at least one) for the encoder, the rest (at least one) for the ranker's lists."""
    by_species: dict[tuple[str, ...], list[Record]] = {}
    for r in records:
        by_species.setdefault(tuple(r.path), []).append(r)
    enc: list[Record] = []
    rank: list[Record] = []
    for photos in by_species.values():
        cut = min(max(1, round(share * len(photos))), len(photos) - 1)
        enc += photos[:cut]
        rank += photos[cut:]
    return enc, rank


@dataclass(frozen=True)
class RarSpec(EvidenceSpec):
    """What ``bench rar`` runs.

    Attributes:
        start, start_folder: the pretrained start (its world is the bench's) and its folder
            (``None``: the cache).
        ks: candidates per photo compared (each in 2..26); the ranker learns lists of ``max(ks)``.
        seeds: the ranker's fine-tuning seeds (one LoRA run each).
        records_per_split: test photos drawn per split, the same for every seed and arm.
        splits: the test splits scored: ``seen`` (the seen species' test photos), ``novel``.
        encoder_share: share of each seen species' training photos the encoder learns (the rest
            are the ranker's).
        encoder_epochs, encoder_batch_size, encoder_lr: the memory's contrastive training.
        ranker_lists: the ranker part's photos whose lists the ranker learns (drawn once).
        ranker_epochs, ranker_batch_size, ranker_lr, lora_alpha, lora_targets: the ranker's LoRA
            fine-tuning (at most ``ranker_epochs``).
        patience: validation evaluations without a lower loss before the ranker stops.
        val_lists: validation lists (drawn once from the val split) the ranker is stopped on.
        threads, device, precision (and the start, records and seeds): :class:`~taxonlens.bench.EvidenceSpec`.
    """

    ks: tuple[int, ...] = RAR_KS
    splits: tuple[str, ...] = ("seen",)
    encoder_share: float = 0.75
    encoder_epochs: int = 6
    encoder_batch_size: int = 32
    encoder_lr: float = 1e-3
    ranker_lists: int = 200
    ranker_epochs: int = 3
    ranker_batch_size: int = 8
    ranker_lr: float = 1e-3
    lora_alpha: float = 32.0
    lora_targets: str = "language+head"
    patience: int = 1
    val_lists: int = 100

    @classmethod
    def quick(cls, **changes: Any) -> RarSpec:
        """The ``--quick`` size: the quick start, 2 seeds, every test photo it has (18 seen, 48 novel)."""
        return cls(**{"start": PretrainSpec.quick(), "seeds": (0, 1), "records_per_split": 48,
                      "splits": ("seen", "novel"), "encoder_epochs": 10, "ranker_epochs": 6, "patience": 2,
                      "val_lists": 36, **changes})


@dataclass
class RarResult:
    """What ``bench rar`` measured.

    Attributes:
        spec: what ran (``ks`` sorted).
        world: species, photos per split, encoder and ranker photos, test photos drawn per split.
        encoder_training: photos, epochs, steps, first / last loss, seconds.
        ranker_training: per seed, the loss curve (per epoch: train loss, validation loss and
            accuracy), the best epoch kept and the epoch it stopped at, seconds.
        seconds: per stage (summed over seeds); total_seconds: the whole run.
        runs: ``{seed: {arm: {"split/figure": per-photo values}}}`` (arms ``encoder``, ``rerank@k``).
        estimates: ``{arm: {"split/figure": mean and 95% interval}}``; judged: :func:`judge`'s rows.
    """

    spec: RarSpec
    world: dict[str, Any]
    encoder_training: dict[str, Any]
    ranker_training: dict[int, dict[str, Any]]
    seconds: dict[str, float]
    total_seconds: float
    runs: dict[int, dict[str, dict[str, list[float]]]]
    estimates: dict[str, dict[str, dict[str, float]]]
    judged: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """Sizes and costs, the ranker's loss curves, every arm's figures with intervals, the claims."""
        from rich.console import Group

        enc = self.encoder_training
        sizes = figures_table(f"tiny-clip retrieves, {self.spec.start.model} (pretrained) reranks", {
            "species": self.world["species"], **{f"{k} photos": v for k, v in self.world["photos"].items()},
            "encoder photos": enc["photos"], "encoder first / last loss": f"{enc['first_loss']:.3f} / {enc['last_loss']:.3f}",
            "seeds": len(self.spec.seeds), **{f"{k} s": v for k, v in self.seconds.items()},
            "total s": self.total_seconds})
        curves = table("ranker: train / validation loss per epoch (* kept)", ("seed", "stopped", "curve"),
                       left=("curve",))
        for seed, r in self.ranker_training.items():
            curves.add_row(str(seed), f"{r['stopped_epoch']}", "  ".join(
                f"{e['train_loss']:.2f}/{e['val_loss']:.2f}{'*' if e['epoch'] == r['best_epoch'] else ''}"
                for e in r["curve"]))
        arms = table(f"test photos (percent, mean [95% interval] over {len(self.spec.seeds)} seeds and photos)",
                     ("arm", "split", "species top-1", "genus top-1", "top-k recall"), left=("arm", "split"),
                     no_wrap=True)
        for arm, figures in self.estimates.items():
            for split in self.spec.splits:
                arms.add_row(arm, split, *(interval_cell(figures.get(f"{split}/{fig}"))
                                           for fig in ("species", "genus", "recall")))
        return Group(sizes, curves, arms, claims_table("RAR's claims", self.judged))


def bench_rar_evidence(spec: RarSpec = RarSpec(), workdir: str | Path | None = None,
                       progress: Callable[[str], None] | None = None) -> RarResult:
    """Encoder top-1 vs retrieve (top ``k``) + rerank by the pretrained LMM, over ``spec.seeds``.

    Args:
        workdir: where the encoder and the rankers are written (a temporary folder if None).
        progress: called with a line at the start of each stage.

    Raises:
        TaxonlensError: a k outside 2..26 or above the world's species; no seed; an unknown split.
    """
    ks = tuple(sorted({int(k) for k in spec.ks}))
    if not ks or ks[0] < 2 or ks[-1] > 26:
        raise TaxonlensError(f"rerank k must lie in 2..26, got {list(ks)}")
    if ks[-1] > spec.start.world.n_species:
        raise TaxonlensError(f"k = {ks[-1]} needs at least {ks[-1]} species, got {spec.start.world.n_species}")
    if not spec.seeds:
        raise TaxonlensError("bench rar needs at least one seed")
    if not spec.splits or not set(spec.splits) <= set(SPLITS):
        raise TaxonlensError(f"bench rar scores the splits {', '.join(SPLITS)}; got {list(spec.splits)}")
    say = progress or (lambda _msg: None)
    start = spec.pretrained(say)
    with bench_run(workdir, spec.threads, "rar") as work:
        return _run(replace(spec, ks=ks), start, work, say)


def _run(s: RarSpec, start: Pretrained, work: Path, say: Callable[[str], None]) -> RarResult:
    begin = time.perf_counter()
    seconds: dict[str, float] = {}
    world = s.start.world.create()
    tax: Taxonomy = world.taxonomy
    load = world.image_source()
    enc_photos, rank_part = encoder_part(world.records("train"), s.encoder_share)
    val = drawn(world.records("val"), s.val_lists, s.start.world.seed)
    rank_photos = drawn(rank_part, s.ranker_lists, s.start.world.seed)
    photos = {name: world.records(SPLITS[name]) for name in s.splits}
    tests = {name: drawn(recs, s.records_per_split, s.start.world.seed) for name, recs in photos.items() if recs}

    say(f"memory: tiny-clip on {len(enc_photos)} photos x {s.encoder_epochs} epochs")
    tick = time.perf_counter()
    trained = train_contrastive(ContrastiveConfig(
        encoder="tiny-clip", text_type="taxonomic", epochs=s.encoder_epochs, batch_size=s.encoder_batch_size,
        lr=s.encoder_lr, seed=s.start.world.seed, out=str(work / "encoder"), eval_every=0, **s.train_settings),
        [(load(r), r.path) for r in enc_photos], taxonomy=tax)
    seconds["encoder_training"] = time.perf_counter() - tick
    losses = [m["train_loss"] for m in trained.metrics]
    encoder = s.scored(trained, load_encoder)
    recognizer = Recognizer(encoder, ZeroShotClassifier(encoder, tax), TreeDecoder(tax))

    max_k = s.ks[-1]
    tick = time.perf_counter()
    lists = ranker_records(recognizer, rank_photos, k=max_k, seed=s.start.world.seed, images=load)
    val_lists = ranker_records(recognizer, val, k=max_k, seed=s.start.world.seed, images=load)
    genus_of = torch.tensor([tax.ancestors(int(leaf))[0] for leaf in tax.leaves])
    scored: dict[str, tuple[list[Image.Image], torch.Tensor, torch.Tensor]] = {}
    for name, recs in tests.items():
        images = [load(r) for r in recs]
        truth = torch.tensor([int(tax.leaf_index[tax.node_of_path(r.path)]) for r in recs])
        scored[name] = images, encoder_probs(recognizer, images), truth
    seconds["retrieval"] = time.perf_counter() - tick
    encoder_values = {f"{name}/{fig}": v.tolist() for name, (_, probs, truth) in scored.items()
                      for fig, v in top1_values(probs, truth, genus_of).items()}

    runs: dict[int, dict[str, dict[str, list[float]]]] = {}
    ranker_training: dict[int, dict[str, Any]] = {}
    for seed in s.seeds:
        say(f"seed {seed}: ranker on {len(lists)} lists of {max_k} (stopped on {len(val_lists)} val lists)")
        tick = time.perf_counter()
        config = SFTConfig(model=str(start.lmm), out=work / f"ranker-{seed}", epochs=s.ranker_epochs,
                           batch_size=s.ranker_batch_size, lr=s.ranker_lr, lora_alpha=s.lora_alpha,
                           lora_targets=s.lora_targets, answer="name", system=False, eval_every=1,
                           patience=s.patience, score_validation=False, seed=seed, **s.train_settings)
        result = train_sft(config, lists, images=load, ranks=[tax.ranks[-1]], val_records=val_lists)
        seconds["ranker_training"] = seconds.get("ranker_training", 0.0) + time.perf_counter() - tick
        ranker_training[seed] = ranker_curve(result.metrics)
        ranker = s.scored(result, load_lmm)
        runs[seed] = {"encoder": encoder_values}
        tick = time.perf_counter()
        for k in s.ks:
            reranker = LMMReranker(ranker, tax, k=k, method="score", answer="name", system=None)
            arm: dict[str, list[float]] = {}
            for name, (images, probs, truth) in scored.items():
                values = top1_values(rerank_probs(reranker, images, probs), truth, genus_of)
                values["recall"] = recall_values(probs, truth, k)
                arm |= {f"{name}/{fig}": v.tolist() for fig, v in values.items()}
            runs[seed][f"rerank@{k}"] = arm
        seconds["reranking"] = seconds.get("reranking", 0.0) + time.perf_counter() - tick

    values = stack(runs)
    return RarResult(
        spec=s, world={"species": tax.n_leaves, "photos": {split: len(world.records(split)) for split in
                                                           ("train", "val", "test", "novel")},
                       "encoder_photos": len(enc_photos), "ranker_photos": len(rank_part), "ranker_lists": len(lists),
                       "val_lists": len(val_lists), "test_photos": {k: len(v) for k, v in tests.items()}},
        encoder_training={"photos": len(enc_photos), "epochs": s.encoder_epochs, "steps": trained.steps,
                          "first_loss": losses[0], "last_loss": losses[-1], "seconds": seconds["encoder_training"]},
        ranker_training=ranker_training, seconds=seconds, total_seconds=time.perf_counter() - begin, runs=runs,
        estimates=estimates_json(values),
        judged=judge(claims(s.ks), values))


def ranker_curve(metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ranker's training in brief, from its metrics rows: per epoch the train and validation
    losses, the best epoch (kept) and the last trained (where it stopped)."""
    curve = [{"epoch": m["epoch"], "train_loss": m["train_loss"], "val_loss": m["val"]["loss"]} for m in metrics]
    return {"curve": curve, "best_epoch": metrics[-1]["best_epoch"], "stopped_epoch": metrics[-1]["epoch"],
            "steps": metrics[-1]["step"], "train_seconds": sum(m["train_seconds"] for m in metrics),
            "eval_seconds": sum(m.get("eval_seconds", 0.0) for m in metrics)}


__all__ = ["RAR_KS", "SPLITS", "RarResult", "RarSpec", "bench_rar_evidence", "claims", "encoder_part",
           "encoder_probs", "ranker_curve", "recall_values", "rerank_probs", "top1_values"]

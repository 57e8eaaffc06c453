"""Evidence for RAR (retrieve and rerank), measured on synthworld with tiny models trained from
random weights (``taxonlens bench rar``): the encoder's top-1 vs the encoder retrieving ``k``
candidates and a fine-tuned multimodal LLM ranking them, for every ``k`` of ``ks``.

One run builds a small synthworld of seen species only (train / val / test photos), trains a
tiny BioCLIP-style encoder contrastively on the training photos
(:func:`~taxonlens.train.contrastive.train_contrastive`) and makes it a zero-shot
:class:`~taxonlens.predict.Recognizer` over the world's species. The ranker's fine-tuning data
are the training photos with the ``max(ks)`` candidates the encoder retrieves
(:func:`~taxonlens.recognize.rerank.ranker_records`); the tiny LMM learns them with LoRA
(:func:`~taxonlens.train.sft.train_sft`, configured as a random-weight tiny preset needs, as in
:mod:`taxonlens.bench.vqa`: names as answers, no system prompt, ``language+head``, lr 2e-3,
alpha 32, batch 4). On the test photos it measures:

- ``encoder``: the encoder's leaf probabilities, decoded as they are;
- ``top_k_recall``: per ``k``, the percent of photos whose species is among the encoder's top ``k``
  (the ceiling of any reranker that picks among them);
- ``rerank``: per ``k``, the probabilities after
  :class:`~taxonlens.recognize.rerank.LMMReranker` (``score`` method, asked as trained) reranked
  the top ``k``.

Each arm reports the argmax leaf accuracy (``top1``) and the tree-consistent path of
``recognizer.decoder.decode`` (exact decoding) scored by
:func:`~taxonlens.evaluate.metrics.hierarchical_report`: HCA, leaf accuracy and per-rank accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from taxonlens.bench import HardwareSpec, TinySFTSpec, WorldSpec, bench_run
from taxonlens.bench.cells import figures_table, table
from taxonlens.data import load_image, read_manifest
from taxonlens.errors import TaxonlensError
from taxonlens.evaluate.metrics import hierarchical_report
from taxonlens.models.encoders import load_encoder
from taxonlens.models.mllm import load_lmm
from taxonlens.predict import Recognizer
from taxonlens.recognize.decode import TreeDecoder
from taxonlens.recognize.rerank import LMMReranker, ranker_records
from taxonlens.recognize.zeroshot import ZeroShotClassifier
from taxonlens.taxonomy import Taxonomy
from taxonlens.train.contrastive import ContrastiveConfig, train_contrastive
from taxonlens.train.sft import check_records, train_sft

#: candidates per photo compared by default
RAR_KS = (3, 5, 10)
#: the figures of every arm (percent)
FIGURES = ("top1", "hca", "acc_leaf")


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


def top_k_recall(probs: torch.Tensor, truth: torch.Tensor, k: int) -> float:
    """Percent of rows whose ``truth`` leaf is among the ``k`` most probable."""
    top = probs.topk(min(k, probs.shape[1]), dim=1).indices
    return 100.0 * (top == truth[:, None]).any(dim=1).float().mean().item()


@dataclass
class RarFigures:
    """The figures of one arm, in percent: ``top1`` (argmax leaf accuracy), and ``hca``,
    ``acc_leaf`` and ``per_rank`` (rank -> accuracy) of the exact consistent paths."""

    top1: float
    hca: float
    acc_leaf: float
    per_rank: dict[str, float]


def score_probs(decoder: TreeDecoder, probs: torch.Tensor, truth: torch.Tensor,
                truths: Sequence[Sequence[str]]) -> RarFigures:
    """The :class:`RarFigures` of ``probs`` (the paths scored by :func:`hierarchical_report`)."""
    tax = decoder.taxonomy
    paths = [list(p.path) for p in decoder.decode(probs, "exact", top_k=1)]
    rep = hierarchical_report(truths, paths, range(tax.max_depth), tax)
    return RarFigures(top1=100.0 * (probs.argmax(dim=1) == truth).float().mean().item(), hca=rep.hca,
                      acc_leaf=rep.acc_leaf, per_rank={tax.ranks[k]: v for k, v in rep.per_level.items()})


@dataclass(frozen=True)
class RarSpec(HardwareSpec):
    """What ``bench rar`` runs.

    Attributes:
        world: the synthworld (no novel species).
        ks: candidates per photo compared (each in 2..26); the ranker is trained on ``max(ks)``.
        encoder, encoder_epochs, encoder_batch_size, encoder_lr: the contrastive training
            (:class:`ContrastiveConfig`, taxonomic captions).
        ranker: the ranker's fine-tuning (seeded by the world's seed).
        threads, device, precision: :class:`~taxonlens.bench.HardwareSpec`.
    """

    world: WorldSpec = field(default_factory=partial(WorldSpec, n_species=16, images_per_species=20, novel_fraction=0.0))
    ks: tuple[int, ...] = RAR_KS
    encoder: str = "tiny-clip"
    encoder_epochs: int = 30
    encoder_batch_size: int = 32
    encoder_lr: float = 1e-3
    ranker: TinySFTSpec = field(default_factory=partial(TinySFTSpec, epochs=40))


@dataclass
class RarResult:
    """What ``bench rar`` measured on the test photos.

    Attributes:
        spec: what ran (``ks`` sorted).
        world: species and records per split.
        encoder_training, ranker_training: steps, seconds, first and last epoch loss, ...
        seconds: per stage; total_seconds: the whole run.
        n_test: test photos; chance: percent.
        encoder: the encoder's figures; top_k_recall: ``{k: percent}``; rerank: ``{k: figures}``.
    """

    spec: RarSpec
    world: dict[str, Any]
    encoder_training: dict[str, Any]
    ranker_training: dict[str, Any]
    seconds: dict[str, float]
    total_seconds: float
    n_test: int
    chance: float
    encoder: RarFigures
    top_k_recall: dict[int, float] = field(default_factory=dict)
    rerank: dict[int, RarFigures] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """The runs' sizes and costs, then top-1, HCA, leaf and per-rank accuracy per arm."""
        from rich.console import Group

        enc, ranker = self.encoder_training, self.ranker_training
        sizes = figures_table(f"{self.spec.encoder} retrieves, {self.spec.ranker.model} reranks", {
            "species": self.world["species"],
            **{f"{split} records": n for split, n in self.world["records"].items()},
            "encoder steps": enc["steps"],
            "encoder first / last loss": f"{enc['first_loss']:.3f} / {enc['last_loss']:.3f}",
            "ranker questions": ranker["questions"], "ranker steps": ranker["steps"],
            "ranker first / last loss": f"{ranker['first_loss']:.3f} / {ranker['last_loss']:.3f}",
            **{f"{stage.replace('_', ' ')} s": v for stage, v in self.seconds.items()},
            "total s": self.total_seconds})
        ranks = list(self.encoder.per_rank)
        out = table(f"test photos ({self.n_test}; chance {self.chance:.1f}%), percent",
                    ("answer", "top-k recall", "top-1", "HCA", "leaf", *ranks), left=("answer",), no_wrap=True)
        arms = [("encoder top-1", "", self.encoder),
                *((f"top-{n} + rerank", f"{self.top_k_recall[n]:.1f}", r) for n, r in self.rerank.items())]
        for name, recall, r in arms:
            out.add_row(name, recall, *(f"{getattr(r, f):.1f}" for f in FIGURES),
                        *(f"{r.per_rank[rank]:.1f}" for rank in ranks))
        return Group(sizes, out)


def bench_rar_evidence(spec: RarSpec = RarSpec(), workdir: str | Path | None = None,
                       progress: Callable[[str], None] | None = None) -> RarResult:
    """Encoder top-1 vs retrieve (top ``k``) + LMM rerank, on the test photos of seen species.

    Args:
        workdir: where the world and both models are written (a temporary folder if None).
        progress: called with a line at the start of each stage.

    Raises:
        TaxonlensError: a k outside 2..26, or more than the world's species.
    """
    ks = tuple(sorted({int(k) for k in spec.ks}))
    if not ks or ks[0] < 2 or ks[-1] > 26:
        raise TaxonlensError(f"rerank k must lie in 2..26, got {list(ks)}")
    if ks[-1] > spec.world.n_species:
        raise TaxonlensError(f"k = {ks[-1]} needs at least {ks[-1]} species, got {spec.world.n_species}")
    say = progress or (lambda _msg: None)
    with bench_run(workdir, spec.threads, "rar") as work:
        return _run(replace(spec, ks=ks), work, say)


def _run(s: RarSpec, work: Path, say: Callable[[str], None]) -> RarResult:
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    say(f"synthworld: {s.world.n_species} species x {s.world.images_per_species} photos")
    tick = time.perf_counter()
    world = s.world.create()
    taxonomy: Taxonomy = world.taxonomy
    records = read_manifest(world.write(work / "world"), taxonomy)
    by_split = {split: [r for r in records if r.split == split] for split in ("train", "val", "test")}
    seconds["world"] = time.perf_counter() - tick

    say(f"training {s.encoder}: {len(by_split['train'])} photos x {s.encoder_epochs} epochs")
    tick = time.perf_counter()
    config = ContrastiveConfig(encoder=s.encoder, text_type="taxonomic", epochs=s.encoder_epochs,
                               batch_size=s.encoder_batch_size, lr=s.encoder_lr, seed=s.world.seed,
                               out=str(work / "encoder"), eval_every=0, **s.train_settings)
    trained = train_contrastive(config, by_split["train"], taxonomy=taxonomy)
    seconds["encoder_training"] = time.perf_counter() - tick
    losses = [m["train_loss"] for m in trained.metrics if "train_loss" in m]
    encoder_training = {"photos": len(by_split["train"]), "epochs": s.encoder_epochs, "steps": trained.steps,
                        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}
    encoder = s.scored(trained, load_encoder)
    recognizer = Recognizer(encoder, ZeroShotClassifier(encoder, taxonomy), TreeDecoder(taxonomy))

    max_k = s.ks[-1]
    say(f"ranker data: top-{max_k} candidates of {len(by_split['train'])} training photos")
    tick = time.perf_counter()
    train_questions = ranker_records(recognizer, by_split["train"], k=max_k, seed=s.world.seed)
    seconds["ranker_data"] = time.perf_counter() - tick
    ranks = [taxonomy.ranks[-1]]

    say(f"fine-tuning {s.ranker.model}: {len(train_questions)} questions x {s.ranker.epochs} epochs")
    tick = time.perf_counter()
    result = train_sft(s.ranker.config(work / "ranker", s, s.world.seed), train_questions, images=None,
                       ranks=ranks)
    seconds["ranker_training"] = time.perf_counter() - tick
    sft_losses = [m["train_loss"] for m in result.metrics]
    ranker_training = {"questions": len(check_records(train_questions, ranks)), "epochs": s.ranker.epochs,
                       "steps": result.steps, "train_seconds": sum(m["train_seconds"] for m in result.metrics),
                       "first_loss": sft_losses[0], "last_loss": sft_losses[-1]}

    test = by_split["test"]
    say(f"encoder on {len(test)} test photos")
    tick = time.perf_counter()
    images = [load_image(r.image) for r in test]
    truth = torch.tensor([taxonomy.leaf_index[taxonomy.node_of_path(r.path)] for r in test])
    truths = [list(r.path) for r in test]
    probs = encoder_probs(recognizer, images)
    encoder_figures = score_probs(recognizer.decoder, probs, truth, truths)
    recall = {k: top_k_recall(probs, truth, k) for k in s.ks}
    seconds["encoder_test"] = time.perf_counter() - tick

    reranked: dict[int, RarFigures] = {}
    ranker = s.scored(result, load_lmm)
    for k in s.ks:
        say(f"reranking the top {k} of {len(test)} test photos")
        tick = time.perf_counter()
        reranker = LMMReranker(ranker, taxonomy, k=k, method="score", answer="name", system=None)
        reranked[k] = score_probs(recognizer.decoder, rerank_probs(reranker, images, probs), truth, truths)
        seconds[f"rerank_k{k}"] = time.perf_counter() - tick
    return RarResult(spec=s, world={"species": taxonomy.n_leaves, "records": {k: len(v) for k, v in by_split.items()}},
                     encoder_training=encoder_training, ranker_training=ranker_training, seconds=seconds,
                     total_seconds=time.perf_counter() - start, n_test=len(test), chance=100.0 / taxonomy.n_leaves,
                     encoder=encoder_figures, top_k_recall=recall, rerank=reranked)


__all__ = ["FIGURES", "RAR_KS", "RarFigures", "RarResult", "RarSpec", "bench_rar_evidence", "encoder_probs", "rerank_probs", "score_probs",
           "top_k_recall"]

"""``taxonlens demo``: the main job on the built-in offline default.

1. Build a synthworld from real iNat21 plant taxa (the shipped taxonomy), with a
   novel split of held-out species whose genera are seen, and write it to disk.
2. Train a tiny BioCLIP-style encoder three times, same budget, with scientific-name,
   taxonomic and mixed captions (BioCLIP's text-type comparison).
3. Classify the seen-species test photos and the novel photos zero-shot against every
   species of the world, and decode four ways: independent per-rank argmax ("flat"),
   the most probable consistent path, per-rank scores fused over the tree, and the
   consistent path with back-off (thresholds calibrated on the validation photos).
4. Score with the hierarchical metrics and write ``report.html`` and ``report.json``.
5. Run the product path on the written test and novel photo files with the taxonomic
   model: ``predict`` with the calibrated back-off, into ``predictions.csv``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from taxonlens.data import read_manifest
from taxonlens.errors import DataError
from taxonlens.evaluate.metrics import hierarchical_report, reported_rank_accuracy
from taxonlens.evaluate.report import Report, Sample
from taxonlens.models.device import Precision
from taxonlens.models.encoders import OpenCLIPEncoder
from taxonlens.models.text import LabelTextType
from taxonlens.predict import Recognizer, predict_files
from taxonlens.predict.recognizer import RecognizerOptions
from taxonlens.recognize.decode import TreeDecoder, flat_paths, rank_scores_from_logits
from taxonlens.recognize.zeroshot import ZeroShotClassifier, rank_classifiers
from taxonlens.synthworld import SynthWorld
from taxonlens.taxonomy import load_taxonomy
from taxonlens.train.contrastive import ContrastiveConfig, Example, synthworld_examples, train_contrastive
from taxonlens.train.loop import MODEL_DIR

DEMO_TAXONOMY = "inat21-plantae"
TEXT_ARMS = ("scientific", "taxonomic", "mixed")
PREDICT_ARM = "taxonomic"  # the model whose predictions.csv the demo writes
DECODERS = ("flat per-rank argmax", "consistent path", "tree fusion", "consistent + back-off")


@dataclass
class DemoSettings:
    """What the demo builds and how long it trains (defaults: about 10 minutes on 2 cores)."""

    out: str = "taxonlens-demo"
    species: int = 200
    images_per_species: int = 12
    size: int = 64
    epochs: int = 24
    batch_size: int = 64
    lr: float = 1e-3
    precision_target: float = 0.8
    seed: int = 0


def _features(encoder: OpenCLIPEncoder, examples: Sequence[Example], batch: int = 128) -> torch.Tensor:
    return torch.cat([encoder.encode_images(torch.stack([encoder.preprocess(ex.image) for ex in examples[i:i + batch]]))
                      for i in range(0, len(examples), batch)])


def evaluate_arm(encoder: OpenCLIPEncoder, world: SynthWorld, splits: dict[str, list[Example]], text_type: str,
                 precision: float, cache_dir: Path) -> tuple[dict, dict, Recognizer]:
    """Decode the test and novel photos four ways; returns ``(metrics, paths, recognizer)``:
    ``metrics[split][decoder]`` figures, ``paths[split][decoder]`` predicted paths, and the
    zero-shot recognizer with its back-off thresholds calibrated on the validation photos."""
    tax = world.taxonomy
    label_type = "taxonomic" if text_type == "mixed" else text_type
    leaf_clf = ZeroShotClassifier(encoder, tax, None, label_type, cache_dir=cache_dir)
    per_rank = rank_classifiers(encoder, tax, label_type, cache_dir=cache_dir)
    decoder = TreeDecoder(tax)
    val_feats = _features(encoder, splits["val"])
    val_truth = np.asarray([tax.leaf_index[tax.node_of_path(ex.path)] for ex in splits["val"]])
    thresholds = decoder.calibrate(leaf_clf.predict_proba(val_feats), val_truth, precision=precision)
    metrics: dict = {"thresholds": thresholds}
    paths: dict = {}
    for split in ("test", "novel"):
        feats = _features(encoder, splits[split])
        probs = leaf_clf.predict_proba(feats)
        logits = {r: c.logits(feats) for r, c in per_rank.items()}
        leaf_paths = tax.leaf_paths()
        decoded = decoder.decode(probs, "exact", top_k=1)
        paths[split] = {
            "flat per-rank argmax": flat_paths(tax, logits),
            "consistent path": [p.path for p in decoded],
            "tree fusion": [leaf_paths[i] for i in decoder.fuse(rank_scores_from_logits(logits)).tolist()],
            "consistent + back-off": [p.reached_path for p in decoded],
        }
        truths = [ex.path for ex in splits[split]]
        metrics[split] = {}
        for name, preds in paths[split].items():
            rep = hierarchical_report(truths, preds, range(tax.max_depth), tax)
            metrics[split][name] = {
                "hca": rep.hca, "acc_leaf": rep.acc_leaf, "por": rep.por, "s_por": rep.s_por, "tor": rep.tor,
                "valid_path_pct": rep.valid_path_pct if rep.valid_path_pct is not None else 0.0,
                "reported_rank_acc": reported_rank_accuracy(truths, preds),
                "per_rank": {tax.ranks[k]: v for k, v in rep.per_level.items()},
            }
            counts: dict[str, int] = {}
            for p in preds:
                key = tax.ranks[len(p) - 1] if p else "none"
                counts[key] = counts.get(key, 0) + 1
            metrics[split][name]["reported_ranks"] = {k: 100.0 * v / len(preds) for k, v in counts.items()}
    return metrics, paths, Recognizer(encoder, leaf_clf, decoder)


def run_demo(settings: DemoSettings | None = None,
             progress: Callable[[str, int], Callable[[int], None]] | None = None) -> dict:
    """Run the demo (see the module docstring). Re-running resumes: finished photos and
    training runs are kept. Returns the figures also written to ``report.json``."""
    settings = settings or DemoSettings()
    out = Path(settings.out)
    tax = load_taxonomy(DEMO_TAXONOMY)
    world = SynthWorld.create(tax, settings.species, settings.images_per_species, novel_fraction=0.15,
                              size=settings.size, seed=settings.seed)
    step = progress("writing synthworld", len(world.index())) if progress else None
    manifest = world.write(out / "world", progress=step)
    splits = {s: synthworld_examples(world, s) for s in ("train", "val", "test", "novel")}
    results: dict = {"settings": asdict(settings), "world": world.config(), "arms": {}}
    samples: dict = {}
    recognizers: dict[str, Recognizer] = {}
    for arm in TEXT_ARMS:
        config = ContrastiveConfig(encoder="tiny-clip", text_type=arm, epochs=settings.epochs,
                                   batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed,
                                   out=str(out / "runs" / arm), eval_every=0)
        n_steps = settings.epochs * max(1, len(splits["train"]) // settings.batch_size)
        step = progress(f"training ({arm} text)", n_steps) if progress else None
        trained = train_contrastive(config, splits["train"], taxonomy=world.taxonomy, resume=True,
                                    progress=(lambda log, step=step: step(1)) if step else None)
        metrics, paths, recognizers[arm] = evaluate_arm(trained.model, world, splits, arm,
                                                        settings.precision_target, out / "cache")
        results["arms"][arm] = metrics
        samples[arm] = paths
    # the product path: the written photo files through `predict` (safe decoding, back-off, resumable CSV)
    photos = [r.image for r in read_manifest(manifest) if r.split in ("test", "novel")]
    step = progress("predicting photo files", len(photos)) if progress else None
    predictions, _ = predict_files(recognizers[PREDICT_ARM], photos, out / "predictions.csv", progress=step)
    results["predictions"] = str(predictions)
    (out / "report.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, splits, samples, out / "report.html")
    return results


def write_report(results: dict, splits: dict[str, list[Example]], paths: dict, path: Path) -> Path:
    """The HTML report: text-type comparison, decoder comparison, back-off, sample photos."""
    rep = Report("taxonlens demo: BioCLIP-style training on a synthworld of iNat21 plant taxa")
    world = results["world"]
    rep.paragraph(f"{world['species']} species ({len(world['novel_species'])} held out as novel), "
                  f"{world['images_per_split']} photos of {world['size']} px; tiny-clip trained "
                  f"{results['settings']['epochs']} epochs per text type, same budget.")
    rep.heading("Training text: accuracy per rank, consistent path (percent)")
    for split, label in (("test", "seen species"), ("novel", "novel species")):
        series = {arm: m[split]["consistent path"]["per_rank"] for arm, m in results["arms"].items()}
        rep.rank_plot(series, f"{label}: accuracy per rank by training text")
        ranks = list(next(iter(series.values())))
        rep.table(["training text", *ranks], [[arm, *s.values()] for arm, s in series.items()], caption=label)
    rep.heading("Decoding (taxonomic training text)")
    arm = results["arms"]["taxonomic"]
    cols = ["hca", "acc_leaf", "por", "s_por", "tor", "valid_path_pct", "reported_rank_acc"]
    for split, label in (("test", "seen species"), ("novel", "novel species")):
        rows = [[name, *(m[c] for c in cols)] for name, m in arm[split].items()]
        rep.table(["decoder", "HCA", "leaf acc", "POR", "S-POR", "TOR", "valid paths", "acc at reported rank"], rows,
                  caption=label)
    rep.heading("Back-off: where answers stop (percent of photos)")
    rows = []
    for split in ("test", "novel"):
        dist = arm[split]["consistent + back-off"]["reported_ranks"]
        rows.append([split, *(dist.get(r, 0.0) for r in ("none", *world_ranks(results)))])
    rep.table(["split", "none", *world_ranks(results)], rows)
    rep.paragraph("thresholds calibrated on validation photos: " + ", ".join(
        f"{r} {t:.2f}" for r, t in arm["thresholds"].items()))
    rep.heading("Novel species: consistent path with back-off (taxonomic text)")
    novel = splits["novel"]
    picks = np.linspace(0, len(novel) - 1, min(24, len(novel))).astype(int)
    rep.samples([Sample(novel[i].image, novel[i].path, paths["taxonomic"]["novel"]["consistent + back-off"][i])
                 for i in picks])
    return rep.write(path)


@dataclass(frozen=True)
class DemoModel:
    """The recognizer the demo's ``predictions.csv`` came from, as files: what ``taxonlens serve``
    serves when no model is named.

    Attributes:
        options: the recognizer options (the taxonomic model and the world's taxonomy).
        thresholds: its back-off thresholds (calibrated on the validation photos).
        cache_dir: the demo's label-embedding cache.
    """

    options: RecognizerOptions
    thresholds: dict[str, float]
    cache_dir: Path


def demo_model(out: str | Path = DemoSettings.out) -> DemoModel:
    """The model and thresholds a finished demo wrote under ``out``.

    Raises:
        DataError: the demo has not run (to the end) there.
    """
    out = Path(out)
    model, report = out / "runs" / PREDICT_ARM / MODEL_DIR, out / "report.json"
    world = out / "world" / "world.json"
    if not (model.is_dir() and report.is_file() and world.is_file()):
        raise DataError(f"no demo model in {out}: run `taxonlens demo` first, or pass --model")
    taxonomy = out / "world" / json.loads(world.read_text())["taxonomy"]
    thresholds = json.loads(report.read_text())["arms"][PREDICT_ARM]["thresholds"]
    options = RecognizerOptions(model=str(model), taxonomy=str(taxonomy), text_type=LabelTextType(PREDICT_ARM),
                                precision=Precision.fp32)  # as the demo predicted
    return DemoModel(options, thresholds, out / "cache")


def world_ranks(results: dict) -> list[str]:
    """Rank names of the demo's taxonomy, first to last."""
    return list(next(iter(results["arms"].values()))["test"]["consistent path"]["per_rank"])

"""Contrastive training of an open_clip encoder on captioned images: the BioCLIP objective.

Each image is paired with a caption of its taxon (:func:`taxonlens.models.text.taxon_text`,
text type ``taxonomic`` / ``scientific`` / ``common`` / ... / ``mixed``), and image and
text embeddings are pulled together by the symmetric InfoNCE loss with CLIP's
learnable temperature. A BioCLIP batch holds several photos of one species, so
several captions in a batch name the same taxon: :class:`~taxonlens.train.clip_loss.MultiPositiveClipLoss`
treats all of them as positives instead of as negatives.

Everything that is random in a run is a pure function of ``(seed, epoch, index)``:
the shuffle of every epoch, the caption type drawn for ``mixed`` and the
augmentation of every image. With the model, optimizer, scheduler and random
states in ``out/checkpoint.pt`` (written at every epoch end and every
``checkpoint_every`` steps), a killed run resumes to the same weights as one
that was never stopped.

Output folder: ``checkpoint.pt``, ``metrics.jsonl`` (one line per epoch: train loss,
learning rate, temperature, speed, and zero-shot accuracy on the validation data),
``config.json`` and ``model/`` (``load_encoder(out / "model")`` loads the result).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from taxonlens.data import Record, load_image
from taxonlens.errors import DataError, TaxonlensError
from taxonlens.models.encoders import OpenCLIPEncoder, load_encoder
from taxonlens.models.text import FIXED_TEXT_TYPES, TEXT_TYPES, taxon_text
from taxonlens.recognize.decode import TreeDecoder
from taxonlens.recognize.zeroshot import ZeroShotClassifier
from taxonlens.taxonomy import Taxonomy
from taxonlens.train.config import LoopConfig, with_defaults
from taxonlens.train.loop import (
    MODEL_DIR,
    EpochTask,
    LoopRun,
    StepLog,
    TrainResult,
    adamw,
    seed_everything,
    train_epochs,
)
from taxonlens.train.parallel import Placement


# ------------------------------------------------------------------ config
@dataclass
@with_defaults(out="taxonlens-train", epochs=10, batch_size=64, lr=5e-4, weight_decay=0.2, warmup=0.1)
class ContrastiveConfig(LoopConfig):
    """Settings of a contrastive run: :class:`~taxonlens.train.config.LoopConfig` (each field's help
    is in its metadata) and the encoder, the captions and the data pipeline. The last incomplete
    batch of an epoch is dropped unless the data is smaller than one batch."""

    encoder: str = field(default="tiny-clip", metadata={
        "help": "the encoder trained, starting from its weights: what load_encoder builds (a preset, bioclip, an "
                "open_clip architecture, a folder)"})
    text_type: str = field(default="taxonomic", metadata={
        "help": f"caption type of the training images, one of {', '.join(TEXT_TYPES)} (mixed: drawn per image "
                "and epoch)"})
    augment: bool = field(default=True, metadata={
        "help": "use the encoder's training transform (random resized crop) rather than its evaluation "
                "preprocessing"})
    eval_text_type: str | None = field(default=None, metadata={
        "help": "text type of the zero-shot label embeddings of the evaluation (None: text_type, or taxonomic "
                "for mixed)"})
    num_workers: int = field(default=0, metadata={
        "help": "DataLoader worker processes (results do not depend on it)"})

    RESUMABLE_CHANGES = (*LoopConfig.RESUMABLE_CHANGES, "eval_text_type", "num_workers")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.text_type not in TEXT_TYPES:
            raise TaxonlensError(f"unknown text type {self.text_type!r}; choose one of {', '.join(TEXT_TYPES)}")
        if self.eval_text_type is not None and self.eval_text_type not in FIXED_TEXT_TYPES:
            raise TaxonlensError(f"evaluation text type must be one of {', '.join(FIXED_TEXT_TYPES)}, "
                                 f"not {self.eval_text_type!r}")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or not 0 <= self.warmup < 1:
            raise TaxonlensError("training needs epochs >= 1, batch size >= 2, lr > 0 and 0 <= warmup < 1")
        if self.eval_every < 0 or self.checkpoint_every < 0 or self.num_workers < 0:
            raise TaxonlensError("eval_every, checkpoint_every and num_workers must be >= 0")

    @property
    def zeroshot_text_type(self) -> str:
        """Text type of the evaluation's label embeddings."""
        if self.eval_text_type:
            return self.eval_text_type
        return "taxonomic" if self.text_type == "mixed" else self.text_type


# -------------------------------------------------------------------- data
class Example(NamedTuple):
    """One training image: a PIL image or a file path, its taxon's name path, a common name."""

    image: Image.Image | str | Path
    path: tuple[str, ...]
    common_name: str | None = None


TrainData = Iterable[Record | Example | Sequence[Any]]


def as_examples(data: TrainData) -> list[Example]:
    """Normalise training data: :class:`~taxonlens.data.Record` objects or tuples
    ``(image, path)`` / ``(image, path, common_name)``, image a PIL image or a path.

    Raises:
        DataError: an item of another kind, or without a taxon path.
    """
    out = []
    for i, item in enumerate(data):
        if isinstance(item, Record):
            ex = Example(item.image, tuple(item.path), item.common_name)
        elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
            ex = Example(item[0], tuple(str(n) for n in item[1]), item[2] if len(item) == 3 else None)
        else:
            raise DataError(f"training item {i}: expected a Record or (image, path[, common name]), "
                            f"got {type(item).__name__}")
        if not isinstance(ex.image, (Image.Image, str, Path)):
            raise DataError(f"training item {i}: image must be a PIL image or a file path, "
                            f"not {type(ex.image).__name__}")
        if not ex.path:
            raise DataError(f"training item {i} ({_image_name(ex.image)}): no taxon path; contrastive training "
                            "needs labelled images")
        out.append(ex)
    return out


def synthworld_examples(world, split: str | None = "train") -> list[Example]:
    """The photos of one split of a :class:`~taxonlens.synthworld.SynthWorld`, rendered
    in memory (nothing is written to disk)."""
    tax = world.taxonomy
    return [Example(world.photo(leaf, k).image, tax.path_names(int(tax.leaves[leaf])))
            for leaf, k in world.index(split)]


def _image_name(image: Image.Image | str | Path) -> str:
    return str(image) if isinstance(image, (str, Path)) else "<in-memory image>"


def _open(image: Image.Image | str | Path) -> Image.Image:
    return image if isinstance(image, Image.Image) else load_image(image)


def _sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The random stream of one sample in one epoch (string seeds hash the same in every process)."""
    return random.Random(f"taxonlens-contrastive:{seed}:{epoch}:{index}")


class CaptionedImages(torch.utils.data.Dataset):
    """Images paired with a caption of their taxon, for contrastive training.

    Item ``i`` is ``(pixels [3, H, W] float, caption str, group int)``; ``group``
    numbers the distinct taxon paths, so items of one group are positives of each
    other. Caption type (for ``mixed``) and augmentation are drawn from a stream
    seeded by ``(seed, epoch, i)``: an item is the same whichever worker or
    resumed run produces it. Call :meth:`set_epoch` before each epoch.

    Args:
        examples: see :func:`as_examples`.
        transform: PIL image -> ``[3, H, W]`` tensor (may draw from torch's global RNG).
        text_type: one of :data:`~taxonlens.models.text.TEXT_TYPES`.
    """

    def __init__(self, examples: TrainData, transform: Callable[[Image.Image], torch.Tensor],
                 text_type: str = "taxonomic", seed: int = 0):
        if text_type not in TEXT_TYPES:
            raise TaxonlensError(f"unknown text type {text_type!r}; choose one of {', '.join(TEXT_TYPES)}")
        self.examples = as_examples(examples)
        self.transform, self.text_type, self.seed = transform, text_type, seed
        self.epoch = 0
        ids: dict[tuple[str, ...], int] = {}
        self.groups = np.asarray([ids.setdefault(ex.path, len(ids)) for ex in self.examples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.examples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def caption(self, i: int, rng: random.Random | None = None) -> str:
        """Caption of item ``i`` in the current epoch."""
        ex = self.examples[i]
        return taxon_text(ex.path, self.text_type, ex.common_name, rng or _sample_rng(self.seed, self.epoch, i))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int]:
        rng = _sample_rng(self.seed, self.epoch, i)
        caption = self.caption(i, rng)
        image = _open(self.examples[i].image)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.getrandbits(63))
            pixels = self.transform(image)
        return pixels, caption, int(self.groups[i])


class _Collate:
    """``[(pixels, caption, group)]`` -> ``(pixels [B,3,H,W], tokens [B,L], groups [B])``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items):
        pixels, captions, groups = zip(*items)
        return torch.stack(pixels), self.tokenizer(list(captions)), torch.tensor(groups, dtype=torch.long)


def data_fingerprint(examples: Sequence[Example]) -> str:
    """A hash of the training items (file paths, or pixels of in-memory images; paths; common names)."""
    h = hashlib.sha256()
    for ex in examples:
        image = ex.image
        h.update(image.tobytes() if isinstance(image, Image.Image) else str(image).encode())
        h.update(json.dumps([list(ex.path), ex.common_name]).encode())
    return h.hexdigest()[:16]


# -------------------------------------------------------------- evaluation
def evaluate_zeroshot(encoder: OpenCLIPEncoder, examples: TrainData, taxonomy: Taxonomy,
                      text_type: str = "taxonomic", cache_dir: str | Path | None = None,
                      batch_size: int = 256) -> dict[str, Any]:
    """Zero-shot accuracy of ``encoder`` on labelled images, against every leaf of ``taxonomy``.

    Leaf accuracy takes the most probable leaf; the accuracy at each rank takes the
    taxon of highest marginal probability at that rank (leaf probabilities summed
    with :class:`~taxonlens.recognize.decode.TreeDecoder`).

    Args:
        cache_dir: label-embedding cache (``None``: a temporary folder, removed after).

    Returns:
        ``{"n": N, "text_type": ..., "leaf_acc": percent, "rank_acc": {rank: percent}}``.

    Raises:
        DataError: an image whose path is not a class (leaf) of ``taxonomy``.
    """
    examples = as_examples(examples)
    truth = np.empty(len(examples), dtype=np.int64)
    common: dict[int, str] = {}
    for i, ex in enumerate(examples):
        node = taxonomy.try_node_of_path(ex.path)
        if node is None or taxonomy.leaf_index[node] < 0:
            raise DataError(f"evaluation image {i} ({_image_name(ex.image)}): {' > '.join(ex.path)} is not a class "
                            "of the taxonomy")
        truth[i] = node
        if ex.common_name:
            common.setdefault(node, ex.common_name)
    feats = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        feats.append(encoder.encode_images(torch.stack([encoder.preprocess(_open(ex.image)) for ex in batch])))
    features = torch.cat(feats) if feats else torch.zeros(0, encoder.embed_dim)
    with tempfile.TemporaryDirectory() as tmp:
        clf = ZeroShotClassifier(encoder, taxonomy, None, text_type, common_names=common,
                                 cache_dir=cache_dir if cache_dir is not None else tmp)
    probs = clf.predict_proba(features)
    pred_leaf = probs.argmax(dim=1).numpy()
    out: dict[str, Any] = {"n": len(examples), "text_type": text_type,
                           "leaf_acc": 100.0 * float(np.mean(pred_leaf == taxonomy.leaf_index[truth]))}
    decoder = TreeDecoder(taxonomy)
    rank_acc = {}
    for d, rank in enumerate(taxonomy.ranks):
        has = taxonomy.ancestor_table[truth, d] >= 0
        if not has.any():
            continue
        marg, nodes = decoder.rank_marginals(probs, rank)
        pred = nodes[marg.argmax(dim=1).numpy()]
        rank_acc[rank] = 100.0 * float(np.mean(pred[has] == taxonomy.ancestor_table[truth, d][has]))
    out["rank_acc"] = rank_acc
    return out


# ---------------------------------------------------------------- training
def _optimizer(model: torch.nn.Module, config: ContrastiveConfig) -> torch.optim.AdamW:
    """AdamW as open_clip builds it: no weight decay on gains, biases and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": config.weight_decay}]
    return adamw(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


def train_contrastive(
    config: ContrastiveConfig,
    train_data: TrainData,
    val_data: TrainData | None = None,
    taxonomy: Taxonomy | None = None,
    resume: bool = False,
    progress: Callable[[StepLog], None] | None = None,
) -> TrainResult[OpenCLIPEncoder]:
    """Train ``config.encoder`` with the CLIP loss on captioned images, in the epoch loop
    (:func:`~taxonlens.train.loop.train_epochs`).

    Args:
        train_data: records or ``(image, path[, common_name])`` items (see :func:`as_examples`).
        val_data: the same, evaluated zero-shot every ``config.eval_every`` epochs.
        taxonomy: the label tree of the evaluation (default: built from the paths of
            the training and validation data).
        resume: continue from ``out/checkpoint.pt`` if it exists (the same settings and
            data are required); without it, an existing checkpoint is an error.
        progress: called with a :class:`~taxonlens.train.loop.StepLog` after every optimizer step
            (figures: ``logit_scale``).

    Returns:
        the result; its model is the trained encoder.

    Raises:
        CheckpointError: a checkpoint exists and ``resume`` is off, or it belongs to another run.
        DataError: fewer than two training images, or unusable items.
    """
    train = as_examples(train_data)
    val = as_examples(val_data) if val_data is not None else []
    if len(train) < 2:
        raise DataError(f"contrastive training needs at least 2 labelled images, got {len(train)}")
    if taxonomy is None:
        taxonomy = Taxonomy.from_paths(sorted({ex.path for ex in train + val}), allow_homonyms=True)

    def build(place: Placement) -> LoopRun[OpenCLIPEncoder]:
        encoder = load_encoder(config.encoder, precision="fp32", seed=config.seed, device=place.device)
        model = encoder.model
        dataset = CaptionedImages(train, encoder.train_transform if config.augment else encoder.preprocess,
                                  config.text_type, config.seed)
        collate = _Collate(encoder.tokenizer)
        optimizer = _optimizer(model, config)
        from taxonlens.train.clip_loss import MultiPositiveClipLoss  # open_clip: imported when training starts

        loss_fn = MultiPositiveClipLoss()
        seed_everything(config.seed)

        def load(epoch: int, batches: list[list[int]]) -> torch.utils.data.DataLoader:
            dataset.set_epoch(epoch)
            return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                                               num_workers=config.num_workers, generator=torch.Generator())

        def loss(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
            """The CLIP loss of the whole step's batch: this process's share (``[b, 3, H, W]``
            pixels, ``[b, L]`` tokens, ``[b]`` groups) encoded here, the features of every share
            gathered (``[B, D]``), so every process computes the same loss."""
            pixels, tokens, groups = (t.to(place.device) for t in batch)
            image_features = place.gather(model.encode_image(pixels, normalize=True).float())
            text_features = place.gather(model.encode_text(tokens, normalize=True).float())
            with torch.autocast(place.device.type, enabled=False):  # the loss in float32
                return loss_fn(image_features, text_features, model.logit_scale.exp(), place.gather(groups)), {}

        def clamp() -> None:
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))

        def evaluate() -> dict[str, Any]:
            return evaluate_zeroshot(encoder, val, taxonomy, config.zeroshot_text_type)

        task = EpochTask(lambda epoch: range(len(dataset)), loss, evaluate if val else None, after_step=clamp,
                         figures=lambda: {"logit_scale": encoder.logit_scale}, items="images", load=load,
                         drop_last=True, weight=None)
        identities = {"data": (data_fingerprint(train), "resume with the same training items in the same order")}
        model_dir = Path(config.out) / MODEL_DIR
        return LoopRun(model, optimizer, task, identities,
                       lambda write: (encoder, encoder.save(model_dir) if write else model_dir))

    return train_epochs(config, build, resume, progress)


__all__ = [
    "CaptionedImages",
    "ContrastiveConfig",
    "Example",
    "as_examples",
    "data_fingerprint",
    "evaluate_zeroshot",
    "synthworld_examples",
    "train_contrastive",
]

"""Finedefics (ICLR 2025): attribute descriptions aligned with objects and categories inside a
multimodal LLM, then recognition-centric instruction tuning.

Stage I, attribute-augmented alignment (:func:`train_stage1`): every training photo comes with
an attribute description (``record.attributes["description"]``, what ``taxonlens attributes
describe`` writes; synthworld manifests carry one) and its category (the taxonomy leaf of its
path, named as the taxonomy writes it; its surface forms, :func:`surface_forms`: that name,
the taxonomic string of its path and the common name some photo of it carries). The loss of a
batch is

    ``w_ntp * NTP + w_oac * OAC + w_acc * ACC + w_ccc * CCC + w_occ * OCC``

- NTP: next-token prediction of the photo's description after :data:`DESCRIBE_QUESTION`
  (teacher-forced, :func:`~taxonlens.train.sft.sft_loss`);
- OAC: object <-> attribute description, ACC: attribute description <-> category name, each a
  symmetric InfoNCE over the cosine similarities of global representations (the LLM's last
  hidden state at an EOS token after the image alone or the text alone) with its own learnable
  temperature (:mod:`taxonlens.train.finedefics_losses`);
- CCC: category <-> category, inside the LLM's text space: a category's surface forms are
  positives of each other, the forms of the batch's other categories (the hard negatives among
  them) negatives (:func:`~taxonlens.train.finedefics_losses.category_nce`, where the paper's
  definition and its reference code are discussed);
- OCC: object <-> category name, the same InfoNCE; not a term of the paper, weighted 0 by
  default and kept as an ablation (an arm with OCC in place of CCC).

The defaults are the reference code's weights (1 for NTP, 0.5 for each of its three contrasts). A weight of 0 switches
a part off (not computed): the ablation arms are configurations (``w_oac=0``; ``w_acc=0``;
``w_ccc=0, w_occ=0.5``; ...). CCC needs every category written more than one way: a path
with ranks above the leaf, or a common name (a flat taxonomy without common names is refused).

Negatives: the batch's other categories, plus per photo hard negatives: the descriptions,
names and surface forms of the ``similar`` (3) training categories most similar to its own, by
cosine of the encoder's text embeddings of the categories (:func:`leaf_embeddings`: the
taxonomic label prompts the zero-shot classifier and ``vqa build --mode similar`` use; or
embeddings passed in). They join the batch's candidate texts, so every photo also meets the others' hard
negatives. A category with fewer than ``similar`` others gets all of them, with a warning in
the log (none: in-batch negatives only). Texts of one category are never negatives of its
photos: the positives of a photo are all texts of its category in the batch (its own
description, another photo's description of that category, a hard negative's when it is
that category). A category's description as a hard negative is its most frequent one.

Stage II, recognition-centric instruction tuning (:func:`train_stage2`): for every photo an
open-set question (:data:`OPEN_QUESTION`: "What is the species of the organism in this
image?" -> the species name) and a closed-set one (the benchmark's 4-option question,
:func:`~taxonlens.recognize.answers.question_text`, the distractors the ``similar`` most
similar species of the whole taxonomy by the same embeddings, chosen and ordered by
:func:`~taxonlens.data.vqa_build.build_vqa`), both answered by the lower-case name as the
benchmark writes it. Every epoch trains one of the two per photo: a fraction ``open_fraction``
(exactly, rounded) of the photos, drawn anew per epoch, get the open question. Trained by the
SFT loop (:func:`~taxonlens.train.sft.tune_lmm` with
:func:`~taxonlens.train.sft.examples_task`), so ``out/model`` is a plain model that ``vqa
answer`` and ``predict --rerank`` load; ``model`` may be a Stage I ``out/model``.

Both stages: LoRA (target sets as in SFT) or full fine-tuning (``full_finetune``), checkpoints
at epoch ends and every ``checkpoint_every`` steps with exact resume, ``metrics.jsonl`` per
epoch (Stage I: every part's mean, the temperatures, and with validation photos the
image->category retrieval of :func:`measure_alignment`; Stage II: closed-set accuracy).

Data-parallel (``accelerate launch``, ``--num-processes``; :mod:`taxonlens.train.parallel`):
Stage II's answers weigh their tokens, so N processes train as one with the same global batch.
Stage I's contrasts are computed by each process over its share of the batch (its photos, their
texts and their hard negatives: fewer in-batch negatives), and the shares count by photos; N
processes are a different, equally valid Stage I run, not one process's losses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from taxonlens.data import Record, VQARecord
from taxonlens.data.records import record_leaves
from taxonlens.data.vqa_build import build_vqa
from taxonlens.errors import DataError, TaxonlensError
from taxonlens.models.mllm import LMM
from taxonlens.models.text import LabelTextType, taxon_name
from taxonlens.recognize.answers import question_text
from taxonlens.taxonomy import Taxonomy
from taxonlens.train.config import with_defaults
from taxonlens.train.finedefics_losses import (
    PARTS,
    AlignmentBatch,
    Temperatures,
    alignment_batch,
    finedefics_loss,
    image_reps,
    text_reps,
)
from taxonlens.train.loop import EpochTask, StepLog, TrainResult
from taxonlens.train.sft import (
    ImageSource,
    SFTExample,
    TuneConfig,
    data_fingerprint,
    evaluate_sft,
    examples_task,
    image_loader,
    tune_lmm,
)

log = logging.getLogger(__name__)
DESCRIBE_QUESTION = "Describe the attributes of the {organism} in this image."
OPEN_QUESTION = "What is the {rank} of the {organism} in this image?"


# ------------------------------------------------------------------ configs
@dataclass
class FinedeficsConfig(TuneConfig):
    """Settings both stages share: :class:`~taxonlens.train.sft.TuneConfig` (each field's help is in
    its metadata) and full fine-tuning, the similarity encoder and how many similar categories."""

    full_finetune: bool = field(default=False, metadata={
        "help": "train every weight instead of LoRA adapters (the lora_* settings are then unused)"})
    encoder: str = field(default="bioclip", metadata={
        "help": "the encoder whose text embeddings of the categories define 'similar' (unused when embeddings are "
                "passed in)"})
    similar: int = field(default=3, metadata={
        "help": "the most similar wrong categories: Stage I's hard negatives per photo, Stage II's distractors per "
                "closed-set question"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.similar < 0 or not isinstance(self.encoder, str) or not self.encoder.strip():
            raise TaxonlensError("similar must be >= 0 and encoder name an encoder")


@dataclass
@with_defaults(out="taxonlens-finedefics-1")
class Stage1Config(FinedeficsConfig):
    """Stage I (alignment): :class:`FinedeficsConfig` and the weights of the loss parts (0 switches
    one off) and the contrasts' initial temperature."""

    w_ntp: float = field(default=1.0, metadata={
        "help": "Stage I: weight of next-token prediction of the photo's attribute description"})
    w_oac: float = field(default=0.5, metadata={
        "help": "Stage I: weight of the object <-> attribute description contrast (0: off)"})
    w_acc: float = field(default=0.5, metadata={
        "help": "Stage I: weight of the attribute description <-> category name contrast (0: off)"})
    w_ccc: float = field(default=0.5, metadata={
        "help": "Stage I: weight of the category <-> category contrast (a category's surface forms - scientific, "
                "taxonomic, common name - against the similar categories'; 0: off)"})
    w_occ: float = field(default=0.0, metadata={
        "help": "Stage I: weight of the object <-> category name contrast (an ablation, not in the paper; 0: off)"})
    temperature: float = field(default=0.07, metadata={
        "help": "Stage I: initial temperature of every contrast (learned), in [0.001, 0.5]"})

    def __post_init__(self) -> None:
        super().__post_init__()
        weights = self.weights
        if min(weights.values()) < 0 or not any(weights.values()):
            raise TaxonlensError(f"loss weights must be >= 0 and not all 0, got {weights}")
        Temperatures(self.temperature)  # checks the range

    @property
    def weights(self) -> dict[str, float]:
        return {p: float(getattr(self, f"w_{p}")) for p in PARTS}


@dataclass
@with_defaults(out="taxonlens-finedefics-2")
class Stage2Config(FinedeficsConfig):
    """Stage II (instruction tuning): :class:`FinedeficsConfig` and the share of open-set questions."""

    open_fraction: float = field(default=0.5, metadata={
        "help": "Stage II: share of the photos asked the open-set question in each epoch (the rest the "
                "closed-set one)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.open_fraction <= 1 or self.similar < 1:
            raise TaxonlensError(f"stage II needs 0 <= open_fraction <= 1 and similar >= 1 (distractors); got "
                                 f"{self.open_fraction} and {self.similar}")


# --------------------------------------------------------------------- data
def record_descriptions(records: Sequence[Record]) -> list[str]:
    """Each photo's attribute description (``record.attributes["description"]``), read by
    :func:`~taxonlens.knowledge.descriptions.descriptions_for`.

    Raises:
        DataError: no photo, or photos without one, saying to run ``taxonlens attributes describe``.
    """
    from taxonlens.knowledge.descriptions import descriptions_for

    found = descriptions_for(records)
    return [found[r.image] for r in records]


#: the label text types a category's surface forms are written in (:func:`surface_forms`)
FORM_TYPES = (LabelTextType.scientific, LabelTextType.taxonomic, LabelTextType.common)


def surface_forms(path: Sequence[str], common_name: str | None = None) -> tuple[str, ...]:
    """The distinct ways :data:`FORM_TYPES` write a taxon (:func:`~taxonlens.models.text.taxon_name`):
    its scientific name (``path[-1]``, first), its taxonomic string, its common name when known."""
    return tuple(dict.fromkeys(taxon_name(path, t, common_name) for t in FORM_TYPES))


def leaf_embeddings(encoder, taxonomy: Taxonomy) -> np.ndarray:
    """``[n_leaves, D]`` unit text embeddings of the taxonomy's leaves (its taxonomic label prompts,
    as the zero-shot classifier embeds them; cached) by ``encoder`` (a name or an encoder)."""
    from taxonlens.models.encoders import load_encoder
    from taxonlens.recognize.labels import label_embeddings, taxon_prompts

    enc = load_encoder(encoder) if isinstance(encoder, str) else encoder
    return label_embeddings(enc, taxon_prompts(taxonomy, taxonomy.leaves)).numpy()


def _unit_rows(embeddings: np.ndarray, taxonomy: Taxonomy) -> np.ndarray:
    m = np.asarray(embeddings, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != taxonomy.n_leaves:
        raise DataError(f"category embeddings must be [{taxonomy.n_leaves}, D] (one row per leaf of the taxonomy), "
                        f"got shape {m.shape}")
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    if not np.isfinite(m).all() or (norms == 0).any():
        raise DataError("category embeddings hold a zero or non-finite row")
    return m / norms


def most_similar(embeddings: np.ndarray, k: int) -> list[list[int]]:
    """For every row of ``embeddings [C, D]``, the (up to) ``k`` other rows of highest cosine
    similarity, most similar first (ties: the lower index). A row with fewer than ``k``
    others gets all of them, and the log says so."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    if len(sims) - 1 < k:
        log.warning("only %d categories besides each one: %s hard negatives instead of %d", len(sims) - 1,
                    f"all {len(sims) - 1}" if len(sims) > 1 else "in-batch negatives only, no", k)
    return [np.argsort(-row, kind="stable")[:min(k, len(sims) - 1)].tolist() for row in sims]


@dataclass(frozen=True)
class AlignmentData:
    """Stage I's training photos and their texts.

    Attributes:
        records: ``[N]`` the photos.
        descriptions: ``[N]`` each photo's own attribute description.
        category: ``[N]`` each photo's category, an index into ``names``.
        leaves: ``[C]`` the categories' leaf indices in the taxonomy (ascending).
        names: ``[C]`` their names, as the taxonomy writes them.
        category_descriptions: ``[C]`` the most frequent description of each category's photos.
        neighbours: ``[C]`` the most similar other categories of each (indices into ``names``).
        forms: ``[C]`` the surface forms of each (:func:`surface_forms`; ``names[c]`` first).
    """

    records: list[Record]
    descriptions: list[str]
    category: list[int]
    leaves: list[int]
    names: list[str]
    category_descriptions: list[str]
    neighbours: list[list[int]]
    forms: list[tuple[str, ...]]

    def batch(self, items: Sequence[int]) -> AlignmentBatch:
        """The :class:`~taxonlens.train.finedefics_losses.AlignmentBatch` of photos ``items``: their
        own texts and those of their categories' neighbours."""
        own = [(self.category[i], self.descriptions[i], self.names[self.category[i]]) for i in items]
        hard = dict.fromkeys(n for i in items for n in self.neighbours[self.category[i]])
        return alignment_batch([c for c, _, _ in own],
                               own + [(c, self.category_descriptions[c], self.names[c]) for c in hard],
                               dict(enumerate(self.forms)))

    def fingerprint(self) -> str:
        """A hash of the photos (image names), descriptions, categories, neighbours and surface forms."""
        h = hashlib.sha256(json.dumps([self.names, self.neighbours, self.category_descriptions,
                                       self.forms]).encode())
        for r, d, c in zip(self.records, self.descriptions, self.category):
            h.update(json.dumps([r.image, d, c]).encode())
        return h.hexdigest()[:16]


def alignment_data(records: Sequence[Record], taxonomy: Taxonomy, embeddings: np.ndarray,
                   similar: int = 3) -> AlignmentData:
    """Stage I's :class:`AlignmentData` of ``records`` (each labelled with a class of ``taxonomy``,
    each with a description), neighbours by ``embeddings [n_leaves, D]``; a category's common
    name is the first one its photos carry.

    Raises:
        DataError: no photo, a photo without a description or not labelled with a class.
    """
    records = list(records)
    descriptions = record_descriptions(records)
    leaf_of = record_leaves(records, taxonomy)
    unit = _unit_rows(embeddings, taxonomy)
    leaves = sorted(set(leaf_of))
    index = {leaf: c for c, leaf in enumerate(leaves)}
    category = [index[leaf] for leaf in leaf_of]
    counts = [Counter(d for d, c in zip(descriptions, category) if c == k) for k in range(len(leaves))]
    common: dict[int, str] = {}
    for r, c in zip(records, category):
        if r.common_name:
            common.setdefault(c, r.common_name)
    forms = [surface_forms(taxonomy.path_names(int(taxonomy.leaves[leaf])), common.get(c))
             for c, leaf in enumerate(leaves)]
    return AlignmentData(records, descriptions, category, leaves, [f[0] for f in forms],
                         [cnt.most_common(1)[0][0] for cnt in counts], most_similar(unit[leaves], similar), forms)


def _species_similarity(taxonomy: Taxonomy, unit: np.ndarray) -> Callable[[int, np.ndarray], np.ndarray]:
    """``build_vqa``'s similarity: cosine of the leaves' embeddings at the leaves; flat (0) at
    the ranks above, whose questions Stage II does not ask."""
    def sims(true_node: int, candidates: np.ndarray) -> np.ndarray:
        truth, rows = int(taxonomy.leaf_index[true_node]), taxonomy.leaf_index[candidates]
        if truth < 0:
            return np.zeros(len(candidates))
        out = np.full(len(candidates), -np.inf)
        out[rows >= 0] = unit[rows[rows >= 0]] @ unit[truth]
        return out

    return sims


def species_questions(records: Sequence[Record], taxonomy: Taxonomy, embeddings: np.ndarray, similar: int = 3,
                      seed: int = 0) -> tuple[list[VQARecord], list[str]]:
    """One closed-set question per photo at the rank of its label: the truth and its ``similar``
    most similar other taxa of that rank (:func:`~taxonlens.data.vqa_build.build_vqa`, mode
    ``similar``, lower case, shuffled by ``(seed, image)``), as one-level :class:`VQARecord`\\ s,
    and the rank name of each.

    Raises:
        DataError: a photo not labelled with a class of ``taxonomy``.
    """
    record_leaves(records, taxonomy)
    full = build_vqa(records, taxonomy, similar + 1, "similar", seed, _species_similarity(taxonomy,
                                                                                         _unit_rows(embeddings, taxonomy)))
    questions = [VQARecord(q.image, q.label, q.split, q.levels[-1:], q.choices[-1:], q.line) for q in full]
    return questions, [taxonomy.ranks[len(q.levels) - 1] for q in full]


def recognition_examples(lmm: LMM, questions: Sequence[VQARecord], ranks: Sequence[str],
                         organism: str = "organism") -> list[SFTExample]:
    """Two examples per photo ``i`` (``SFTExample.level`` 0: open-set, 1: closed-set, at
    positions ``2i`` and ``2i + 1``), both answered by the true name and the end of turn."""
    out = []
    for i, (q, rank) in enumerate(zip(questions, ranks)):
        target = q.levels[0] + lmm.end_of_turn
        out.append(SFTExample(i, 0, lmm.chat(OPEN_QUESTION.format(rank=rank, organism=organism)), target))
        out.append(SFTExample(i, 1, lmm.chat(question_text(rank, q.choices[0], organism)), target))
    return out


def mixed_plan(n: int, open_fraction: float, seed: int, epoch: int) -> list[int]:
    """The examples of ``n`` photos trained in ``epoch``: ``2i`` (open) for ``round(open_fraction
    * n)`` photos drawn by ``(seed, epoch)``, ``2i + 1`` (closed) for the others."""
    rng = random.Random(f"taxonlens-finedefics:{seed}:{epoch}")
    opened = set(rng.sample(range(n), round(open_fraction * n)))
    return [2 * i + (i not in opened) for i in range(n)]


# --------------------------------------------------------------- alignment
@dataclass
class AlignmentReport:
    """How well images and category names align inside an LMM (:func:`measure_alignment`).

    Attributes:
        n: images.
        accuracy: percent of images whose nearest category name (cosine of global
            representations) is their own.
        correct: ``[N]`` bool, whether each image's nearest category name is its own.
        gap: mean over images of ``cos(image, true name) - max cos(image, wrong name)``.
        names: ``[C]`` the category names.
        image_xy, category_xy: ``[N, 2]`` and ``[C, 2]`` coordinates of the unit representations
            on their first two principal components (one projection for both), for a plot.
    """

    n: int
    accuracy: float
    correct: np.ndarray
    gap: float
    names: list[str]
    image_xy: np.ndarray
    category_xy: np.ndarray

    def summary(self) -> dict[str, float]:
        return {"n": self.n, "retrieval_acc": self.accuracy, "cosine_gap": self.gap}


def pca_2d(x: np.ndarray) -> np.ndarray:
    """``[N, H]`` -> ``[N, 2]``: coordinates on the first two principal components (centred; each
    component's sign fixed so its largest loading is positive; zeros past the rank)."""
    centred = np.asarray(x, dtype=np.float64) - np.asarray(x, dtype=np.float64).mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:2] * np.sign(vt[:2][np.arange(min(2, len(vt))), np.abs(vt[:2]).argmax(axis=1)])[:, None]
    out = np.zeros((len(centred), 2))
    out[:, :len(comps)] = centred @ comps.T
    return out


@torch.inference_mode()
def measure_alignment(lmm: LMM, images: Sequence, labels: Sequence[int], names: Sequence[str],
                      load: Callable[[Any], Image.Image] | None = None, batch_size: int = 16) -> AlignmentReport:
    """Image -> category retrieval inside ``lmm``: global representations of the images and of
    the category ``names`` (:mod:`~taxonlens.train.finedefics_losses`), compared by cosine.

    Args:
        images: PIL images, or items ``load`` turns into them.
        labels: ``[N]`` each image's category, an index into ``names``.
        names: ``[C]`` category names, at least 2.
    """
    if len(images) != len(labels) or not images:
        raise DataError(f"one label per image, at least one: got {len(images)} images and {len(labels)} labels")
    if len(names) < 2 or not all(0 <= int(y) < len(names) for y in labels):
        raise DataError(f"labels must index {len(names)} category names (at least 2)")
    reps = [image_reps(lmm, [load(x) if load else x for x in images[s:s + batch_size]])
            for s in range(0, len(images), batch_size)]
    img = torch.nn.functional.normalize(torch.cat(reps), dim=-1)
    cat = torch.nn.functional.normalize(torch.cat([text_reps(lmm, names[s:s + batch_size])
                                                   for s in range(0, len(names), batch_size)]), dim=-1)
    cos = img @ cat.T  # [N, C]
    y = torch.as_tensor([int(v) for v in labels])
    true = cos[torch.arange(len(y)), y]
    wrong = cos.scatter(1, y[:, None], -torch.inf).max(dim=1).values
    xy = pca_2d(torch.cat([img, cat]).numpy())
    correct = (cos.argmax(dim=1) == y).numpy()
    return AlignmentReport(len(y), 100.0 * float(correct.mean()), correct, float((true - wrong).mean()), list(names),
                           xy[:len(y)], xy[len(y):])


# ---------------------------------------------------------------- training
def _embeddings(config: FinedeficsConfig, taxonomy: Taxonomy, embeddings: np.ndarray | None) -> np.ndarray:
    return embeddings if embeddings is not None else leaf_embeddings(config.encoder, taxonomy)


def train_stage1(config: Stage1Config, records: Sequence[Record], taxonomy: Taxonomy, images: ImageSource = None,
                 val_records: Sequence[Record] | None = None, embeddings: np.ndarray | None = None,
                 resume: bool = False, progress: Callable[[StepLog], None] | None = None) -> TrainResult[LMM]:
    """Stage I: attribute-augmented contrastive alignment of ``config.model`` (see the module docstring).

    Args:
        records: training photos, labelled with classes of ``taxonomy``, with descriptions; their
            order is part of the run.
        images: a function ``record -> PIL image``, a folder the image paths are relative to, or
            ``None`` (paths as written).
        val_records: photos whose image -> category retrieval (:func:`measure_alignment`, among
            the categories of the training and validation photos) is measured every
            ``config.eval_every`` epochs and after the last.
        embeddings: ``[n_leaves, D]`` category embeddings defining the hard negatives (default:
            :func:`leaf_embeddings` of ``config.encoder``).
        resume: continue from ``out/checkpoint.pt`` (same settings, data and base model).
        progress: called after every optimizer step.

    Returns:
        the result; ``out/model`` is the aligned model (adapters merged).

    Raises:
        DataError: photos without descriptions, not labelled with a class, unreadable images; a
            non-zero ``w_ccc`` and a category written only one way.
        CheckpointError: a checkpoint exists and ``resume`` is off, or belongs to another run.
    """
    data = alignment_data(records, taxonomy, _embeddings(config, taxonomy, embeddings), config.similar)
    single = [f[0] for f in data.forms if len(f) < 2]
    if config.w_ccc and single:
        raise DataError(f"the category-category contrast (w_ccc) needs every category written two ways (a path with "
                        f"ranks above the leaf, or a common name); {len(single)} are not, e.g. {single[0]!r}. "
                        "Set w_ccc to 0 to train without it")
    val = list(val_records or [])
    val_leaves = record_leaves(val, taxonomy) if val else []
    val_names = sorted(set(data.leaves) | set(val_leaves))
    load = image_loader(images)

    def prepare(lmm: LMM) -> EpochTask:
        temperatures = Temperatures(config.temperature)
        prompt = lmm.chat(DESCRIBE_QUESTION.format(organism=config.organism))
        ntp = [SFTExample(i, 0, prompt, d + lmm.end_of_turn) for i, d in enumerate(data.descriptions)]
        cache: dict[str, list[int]] = {}

        def loss(items: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
            photos = [load(data.records[i]) for i in items]
            return finedefics_loss(lmm, photos, data.batch(items), [ntp[i] for i in items], temperatures,
                                   config.weights, cache)

        def evaluate() -> dict[str, Any]:
            return measure_alignment(lmm, val, [val_names.index(leaf) for leaf in val_leaves],
                                     [taxonomy.names[taxonomy.leaves[leaf]] for leaf in val_names], load,
                                     config.eval_batch_size).summary()

        return EpochTask(lambda epoch: range(len(data.records)), loss, evaluate if val else None, temperatures,
                         temperatures.clamp_, lambda: {"temperature": temperatures.values()}, "images")

    return tune_lmm(config, prepare, data.fingerprint(), resume, progress, config.full_finetune)


def _closed_set_accuracy(lmm: LMM, questions: Sequence[VQARecord], ranks: Sequence[str], load, organism: str,
                         batch_size: int) -> dict[str, Any]:
    """:func:`~taxonlens.train.sft.evaluate_sft` (names, no system prompt) of the closed-set
    questions, rank by rank, pooled: ``{"n", "acc", "chance", "level_acc"}``."""
    parts = []
    for rank in dict.fromkeys(ranks):
        group = [q for q, r in zip(questions, ranks) if r == rank]
        parts.append(evaluate_sft(lmm, group, load, [rank], "name", False, organism, batch_size))
    n = sum(p["n"] for p in parts)
    return {"n": n, "acc": sum(p["acc"] * p["n"] for p in parts) / n,
            "chance": sum(p["chance"] * p["n"] for p in parts) / n,
            "level_acc": {k: v for p in parts for k, v in p["level_acc"].items()}}


def train_stage2(config: Stage2Config, records: Sequence[Record], taxonomy: Taxonomy, images: ImageSource = None,
                 val_records: Sequence[Record] | None = None, embeddings: np.ndarray | None = None,
                 resume: bool = False, progress: Callable[[StepLog], None] | None = None) -> TrainResult[LMM]:
    """Stage II: recognition-centric instruction tuning of ``config.model`` (a Stage I
    ``out/model``, or any LMM) with open-set and closed-set questions (see the module docstring).

    Args:
        records: training photos labelled with classes of ``taxonomy`` (descriptions not needed).
        val_records: photos whose closed-set questions are scored (names, option log-likelihood)
            every ``config.eval_every`` epochs and after the last.
        embeddings, images, resume, progress: as in :func:`train_stage1`.

    Raises:
        DataError: no photo, a photo not labelled with a class, unreadable images.
        CheckpointError: a checkpoint exists and ``resume`` is off, or belongs to another run.
    """
    records, val = list(records), list(val_records or [])
    if not records:
        raise DataError("no training photos")
    emb = _embeddings(config, taxonomy, embeddings)
    questions, ranks = species_questions(records, taxonomy, emb, config.similar, config.seed)
    val_questions, val_ranks = species_questions(val, taxonomy, emb, config.similar, config.seed) if val else ([], [])
    load = image_loader(images)

    def prepare(lmm: LMM) -> EpochTask:
        examples = recognition_examples(lmm, questions, ranks, config.organism)

        def evaluate() -> dict[str, Any]:
            return _closed_set_accuracy(lmm, val_questions, val_ranks, load, config.organism, config.eval_batch_size)

        return examples_task(lmm, examples, lambda i: load(records[i]),
                             lambda epoch: mixed_plan(len(records), config.open_fraction, config.seed, epoch),
                             evaluate if val else None)

    return tune_lmm(config, prepare, data_fingerprint(questions, ranks), resume, progress, config.full_finetune)


__all__ = [
    "DESCRIBE_QUESTION",
    "FORM_TYPES",
    "OPEN_QUESTION",
    "AlignmentData",
    "AlignmentReport",
    "FinedeficsConfig",
    "Stage1Config",
    "Stage2Config",
    "alignment_data",
    "leaf_embeddings",
    "measure_alignment",
    "mixed_plan",
    "most_similar",
    "pca_2d",
    "recognition_examples",
    "record_descriptions",
    "species_questions",
    "surface_forms",
    "train_stage1",
    "train_stage2",
]

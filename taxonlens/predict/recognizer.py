"""The recognizer: photos in, a consistent taxonomy path per photo out.

:class:`Recognizer` is the whole model (encoder -> classifier over the leaves ->
tree-consistent decoder); :func:`build_recognizer` assembles it from names (a model,
and BioCLIP's TreeOfLife labels, a taxonomy, a list of labels, an exemplar memory or a
few-shot classifier). Its :attr:`Recognizer.settings` say what determines its answers, so
files made with one recognizer (rows, thresholds) can be checked against another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from enum import nonmember
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from taxonlens.choices import Choice
from taxonlens.data.treeoflife import LabelSet, hub_treeoflife, read_treeoflife, subset_leaves
from taxonlens.errors import DataError
from taxonlens.models.device import Device, Precision
from taxonlens.models.encoders import Encoder, load_encoder
from taxonlens.models.text import LabelTextType, PromptTemplates
from taxonlens.predict.rows import prediction_row
from taxonlens.recognize.answers import AnswerFormat
from taxonlens.recognize.decode import DecodingMethod, Prediction, TreeDecoder
from taxonlens.recognize.rerank import RerankMethod
from taxonlens.recognize.zeroshot import Combine, PerRankClassifier, ZeroShotClassifier
from taxonlens.taxonomy import Taxonomy

if TYPE_CHECKING:
    from taxonlens.recognize.rerank import LMMReranker

class Scores(Choice):
    """What label text is embedded and scored: each ``leaves``' text, or each rank's taxa on their
    own (``per-rank``), combined over the tree."""

    what = nonmember("scores")
    leaves = "leaves"
    per_rank = "per-rank"


@dataclass
class Recognizer:
    """Encoder + leaf classifier + decoder: images -> :class:`Prediction`.

    Attributes:
        encoder: turns images into unit features ``[B, D]``.
        classifier: anything with ``predict_proba(features [B, D]) -> [B, n_leaves]`` over
            ``taxonomy``'s leaves (zero-shot, few-shot, ...).
        decoder: the taxonomy's :class:`TreeDecoder` (holds back-off thresholds).
        method: ``exact`` or ``greedy`` consistent decoding.
        common_names: node id -> common name, for the output rows.
        reranker: RAR: a multimodal LLM that reranks the classifier's top-k leaves.
        labels: what the classifier was made from, beyond the encoder and the taxonomy (label
            text type and templates, a subset, a memory or classifier folder): part of
            :attr:`settings`.
    """

    encoder: Encoder
    classifier: object
    decoder: TreeDecoder
    method: str = "exact"
    common_names: dict[int, str] = field(default_factory=dict)
    reranker: LMMReranker | None = None
    labels: dict = field(default_factory=dict)

    @property
    def taxonomy(self) -> Taxonomy:
        return self.decoder.taxonomy

    @property
    def settings(self) -> dict:
        """What determines this recognizer's answers (JSON values): the encoder's and the
        taxonomy's fingerprints, :attr:`labels`, the decoding method and the reranker."""
        rerank = None
        if self.reranker is not None:
            r = self.reranker
            rerank = {"model": r.lmm.fingerprint(), "k": r.k, "method": r.method, "answer": r.answer,
                      "system": r.system}
        return {"model": self.encoder.fingerprint(), "taxonomy": self.taxonomy.fingerprint, "labels": self.labels,
                "method": self.method, "rerank": rerank}

    @property
    def needs_images(self) -> bool:
        """Whether the decoded images are needed beside their pixels (a reranker looks at them)."""
        return self.reranker is not None

    def leaf_probs(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``[B, n_leaves]`` probabilities of a batch of RGB images."""
        return self.pixel_probs(torch.stack([self.encoder.preprocess(img) for img in images]), images)

    def pixel_probs(self, pixels: torch.Tensor, images: Sequence[Image.Image] = ()) -> torch.Tensor:
        """``[B, n_leaves]`` probabilities of images already preprocessed by the encoder, ``pixels
        [B, 3, H, W]`` (``images``: the images themselves, needed when :attr:`needs_images`)."""
        probs = self.classifier.predict_proba(self.encoder.encode_images(pixels))
        return self.reranker.rerank(images, probs) if self.reranker is not None else probs

    def predict(self, images: Sequence[Image.Image], top_k: int = 5, rank: str | None = None) -> list[Prediction]:
        """Predictions for a batch of images (see :meth:`TreeDecoder.decode` and :meth:`leaf_probs`)."""
        return self.decoder.decode(self.leaf_probs(images), self.method, top_k=top_k, rank=rank)

    def predict_pixels(self, pixels: torch.Tensor, images: Sequence[Image.Image] = (), top_k: int = 5,
                       rank: str | None = None) -> list[Prediction]:
        """:meth:`predict` of preprocessed images (see :meth:`pixel_probs`)."""
        return self.decoder.decode(self.pixel_probs(pixels, images), self.method, top_k=top_k, rank=rank)

    def row(self, file_name: str, prediction: Prediction | None, error: str | None = None) -> dict:
        """One output row (see the module docstring); ``prediction`` is ``None`` for an unreadable file."""
        return prediction_row(self.taxonomy, file_name, prediction, error, self.common_names)


def plain_labels(path: str | Path) -> Taxonomy:
    """A one-rank taxonomy (rank ``label``) from a text file with one label per line
    (blank lines and ``#`` comments skipped).

    Raises:
        DataError: a missing or empty file, or a label listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labels file {path} does not exist")
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    labels = [x for x in labels if x and not x.startswith("#")]
    if not labels:
        raise DataError(f"{path}: no labels (one label per line)")
    seen: set[str] = set()
    twice = [x for x in labels if x in seen or seen.add(x)]
    if twice:
        raise DataError(f"{path}: labels listed twice: {', '.join(twice[:10])}")
    return Taxonomy.from_paths([(x,) for x in labels], ranks=("label",))


def _is_treeoflife_names(path: Path) -> bool:
    """Whether a ``.json`` file is a TreeOfLife names file (a list) rather than a taxonomy (an object)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with path.open(encoding="utf-8") as f:
        head = f.read(64).lstrip()
    return head.startswith("[")


@dataclass(frozen=True)
class RecognizerOptions:
    """What :func:`build_recognizer` builds from, as ``predict``, ``calibrate`` and the
    thresholds file name it: one set of options with one meaning (``precision`` is the model's
    number format everywhere). Each field's help is the command line's."""

    model: str = field(default="bioclip-2", metadata={
        "help": "encoder: bioclip, bioclip-2, hf-hub:ORG/REPO, a model folder, an open_clip ARCH[:FILE|:TAG], or a "
                "tiny preset"})
    taxonomy: str | None = field(default=None, metadata={
        "help": "label tree (.json/.csv/.tsv/.jsonl or a built-in name), or a TreeOfLife txt_emb_species.json; "
                "default: the TreeOfLife labels of the model, as pybioclip"})
    labels: Path | None = field(default=None, metadata={
        "help": "plain labels, one per line, instead of a taxonomy"})
    subset: str | None = field(default=None, metadata={
        "help": "only these taxa: RANK=NAME[,NAME...] or a CSV whose first column is headed by a rank (as "
                "pybioclip's --subset)"})
    text_type: LabelTextType = field(default=LabelTextType.taxonomic, metadata={
        "help": "label text embedded for each taxon"})
    templates: PromptTemplates = field(default=PromptTemplates.photo, metadata={
        "help": "photo (one caption) or openai (80 templates averaged)"})
    method: DecodingMethod = field(default=DecodingMethod.exact, metadata={
        "help": "exact (most probable leaf) or greedy (top-down)"})
    scores: Scores = field(default=Scores.leaves, metadata={
        "help": "leaves (each leaf's text scored) or per-rank (each rank's taxa embedded and scored on their own, "
                "combined by --combine)"})
    combine: Combine = field(default=Combine.fuse, metadata={
        "help": "with --scores per-rank: fuse (product over ranks: the tree-fusion path) or leaves (mean of ranks "
                "spread over the leaves)"})
    precision: Precision = field(default=Precision.auto, metadata={
        "help": "number format of the models (the encoder and the --rerank LLM): auto (bf16 on GPUs that support it, fp16 on older ones, on the CPU "
                "bf16 where it is fast), fp32, bf16 or fp16"})
    device: Device = field(default=Device.auto, metadata={
        "help": "where the models run: auto (a CUDA GPU, then Apple MPS, else the CPU), cpu, cuda or mps"})
    memory: Path | None = field(default=None, metadata={
        "help": "classify by nearest exemplars in a memory from `taxonlens index build` (instead of label text)"})
    classifier: Path | None = field(default=None, metadata={
        "help": "classify with a few-shot classifier from `taxonlens fewshot fit` (instead of label text)"})
    rerank: str | None = field(default=None, metadata={
        "help": "RAR: a multimodal LLM (preset, folder or hub name) that reranks the top --rerank-k candidates"})
    rerank_k: int = field(default=5, metadata={"help": "candidates the LLM ranks"})
    rerank_method: RerankMethod = field(default=RerankMethod.score, metadata={
        "help": "score (option likelihoods) or generate (a ranked list)"})
    rerank_answer: AnswerFormat = field(default=AnswerFormat.letter, metadata={
        "help": "how the ranker answers: letter or name (as fine-tuned)"})
    rerank_system: bool = field(default=True, metadata={
        "help": "ask the ranker with the reference system prompt"})

    def build(self, thresholds: dict[str, float] | None = None, cache_dir: str | Path | None = None,
              progress: Callable[[int], None] | None = None) -> Recognizer:
        """:func:`build_recognizer` with these options."""
        return build_recognizer(**{f.name: getattr(self, f.name) for f in fields(self)}, thresholds=thresholds,
                                cache_dir=cache_dir, progress=progress)


def build_recognizer(
    model: str = "bioclip-2",
    taxonomy: str | Path | Taxonomy | None = None,
    labels: str | Path | None = None,
    subset: str | None = None,
    text_type: str = "taxonomic",
    templates: str = "photo",
    precision: str = "auto",
    thresholds: dict[str, float] | None = None,
    method: str = "exact",
    cache_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    rerank: str | None = None,
    rerank_k: int = 5,
    rerank_method: str = "score",
    memory: str | Path | None = None,
    rerank_answer: str = "letter",
    rerank_system: bool = True,
    classifier: str | Path | None = None,
    scores: str = "leaves",
    combine: str = "fuse",
    device: str = "cpu",
) -> Recognizer:
    """A :class:`Recognizer` from names, as ``taxonlens predict`` builds it.

    Args:
        model: what :func:`~taxonlens.models.encoders.load_encoder` accepts.
        taxonomy: the label tree, embedded from its names with ``text_type`` (cached); a
            TreeOfLife ``txt_emb_species.json`` (embeddings read from the ``.npy`` beside it);
            or ``None``: the TreeOfLife labels that pybioclip pairs with ``model``.
        labels: instead of a taxonomy, a text file of plain labels (one per line).
        subset: keep only the taxa named (``RANK=NAME,...`` or a CSV, see
            :func:`~taxonlens.data.treeoflife.subset_leaves`).
        thresholds: rank -> minimum confidence to report it (back-off, see
            :meth:`~taxonlens.recognize.decode.TreeDecoder.calibrate`).
        progress: called with the number of labels embedded, while label embeddings are built.
        rerank: a multimodal LLM (what :func:`~taxonlens.models.mllm.load_lmm` accepts) that reranks
            the top ``rerank_k`` leaves of each photo by ``rerank_method`` (RAR, see
            :mod:`taxonlens.recognize.rerank`); ``rerank_answer`` (``letter`` or ``name``) and
            ``rerank_system`` (the reference system prompt or none) as the ranker was fine-tuned.
        memory: instead of label text, an image-exemplar memory folder (``taxonlens index build``):
            its label tree and its ``k`` best classes per photo by nearest exemplar.
        classifier: instead of label text, a few-shot classifier folder (``taxonlens fewshot fit``):
            prototypes or a linear probe over the encoder's features of labelled photos.
        scores: ``leaves`` (each leaf's text embedded, one softmax over the leaves) or
            ``per-rank`` (each rank's taxa embedded and scored on their own, combined over the
            tree by ``combine``: ``fuse`` or ``leaves``, see
            :class:`~taxonlens.recognize.zeroshot.PerRankClassifier`).
        device: where the encoder (and the reranker) run (``auto``: a GPU when there is one);
            features, classifier and decoder stay on the CPU.

    Raises:
        TaxonlensError: an unknown model, taxonomy or option, missing weights or label files, a bad subset.
    """
    if sum(x is not None for x in (taxonomy, labels, memory, classifier)) > 1:
        raise DataError("give one of a taxonomy, a labels file, a memory or a classifier")
    scores = Scores(scores)
    if scores == Scores.per_rank and (memory is not None or classifier is not None):
        raise DataError("--scores per-rank embeds label text; it does not apply to a memory or a classifier")
    encoder = load_encoder(model, precision=precision, device=device)
    if memory is not None or classifier is not None:
        if subset:
            raise DataError("--subset applies to label sets, not to an exemplar memory or a classifier")
        clf, tax, described = _image_classifier(encoder, memory, classifier, rerank_k)
        common: dict[int, str] = {}
    else:
        clf, tax, common, described = _text_classifier(encoder, model, taxonomy, labels, subset, text_type, templates,
                                                       scores, combine, cache_dir, progress)
    return Recognizer(encoder, clf, TreeDecoder(tax, thresholds), method, common,
                      _reranker(rerank, tax, rerank_k, rerank_method, rerank_answer, rerank_system, device,
                                precision), described)


def _image_classifier(encoder: Encoder, memory: str | Path | None, classifier: str | Path | None, rerank_k: int
                      ) -> tuple[object, Taxonomy, dict]:
    """The classifier of an exemplar memory or a few-shot classifier folder, its tree, and what
    identifies it (for :attr:`Recognizer.labels`)."""
    if memory is not None:
        from taxonlens.index.exemplars import MemoryClassifier

        clf, tax = MemoryClassifier.load(memory, encoder, k=max(rerank_k, 10))
        return clf, tax, {"memory": str(Path(memory).resolve())}
    from taxonlens.index.fewshot import load_fewshot

    clf, tax, fingerprint = load_fewshot(classifier, encoder)
    return clf, tax, {"classifier": fingerprint}


def _text_classifier(encoder: Encoder, model: str, taxonomy: str | Path | Taxonomy | None, labels: str | Path | None,
                     subset: str | None, text_type: str, templates: str, scores: str, combine: str,
                     cache_dir: str | Path | None, progress: Callable[[int], None] | None
                     ) -> tuple[object, Taxonomy, dict[int, str], dict]:
    """The zero-shot classifier of a label source (see :func:`build_recognizer`), its tree, its
    common names and what identifies it (for :attr:`Recognizer.labels`)."""
    from taxonlens.data import taxonomy_or_benchmark

    label_set: LabelSet | None = None
    if labels is not None:
        tax = plain_labels(labels)
    elif isinstance(taxonomy, Taxonomy):
        tax = taxonomy
    elif taxonomy is None:
        label_set = hub_treeoflife(model)
    elif _is_treeoflife_names(Path(taxonomy)):
        label_set = read_treeoflife(taxonomy)
    else:
        tax = taxonomy_or_benchmark(taxonomy, allow_homonyms=True)
    if label_set is not None:
        if scores != Scores.leaves:
            raise DataError("TreeOfLife labels hold species embeddings only; --scores per-rank needs a taxonomy")
        if label_set.embeddings.shape[1] != encoder.embed_dim:
            raise DataError(f"the label embeddings have {label_set.embeddings.shape[1]} dimensions, the model "
                            f"{model!r} {encoder.embed_dim}: they belong to another model")
        if subset:
            label_set = label_set.subset(subset_leaves(label_set.taxonomy, subset))
        return (ZeroShotClassifier.from_labels(encoder, label_set), label_set.taxonomy, label_set.common_names,
                {"embeddings": label_set.fingerprint})
    if subset:
        tax = tax.subset(subset_leaves(tax, subset))
    if scores == Scores.leaves:
        clf = ZeroShotClassifier(encoder, tax, None, text_type, templates, cache_dir=cache_dir, progress=progress)
        return clf, tax, {}, {"text_type": text_type, "templates": templates, "scores": scores}
    clf = PerRankClassifier(encoder, tax, text_type, templates, combine, cache_dir=cache_dir)
    return clf, tax, {}, {"text_type": text_type, "templates": templates, "scores": scores, "combine": combine}


def _reranker(model: str | None, taxonomy: Taxonomy, k: int, method: str, answer: str,
              system: bool, device: str, precision: str) -> LMMReranker | None:
    if not model:
        return None
    from taxonlens.models.mllm import load_lmm
    from taxonlens.recognize.answers import SYSTEM_PROMPT
    from taxonlens.recognize.rerank import LMMReranker

    return LMMReranker(load_lmm(model, precision, device=device), taxonomy, k, method, answer=answer,
                       system=SYSTEM_PROMPT if system else None)

"""``taxonlens predict``: photos in, a consistent taxonomy path per photo out.

:class:`Recognizer` is the whole model (encoder -> classifier over the leaves ->
tree-consistent decoder); :func:`build_recognizer` assembles it from names (a model,
and BioCLIP's TreeOfLife labels, a taxonomy or a list of labels). :func:`predict_files`
runs it over files in batches and appends each batch's rows to a journal, so a
killed run resumes and skips the photos already done. Unreadable files become rows
with an ``error`` and are never fatal. The journal is turned into the requested
CSV, JSONL or Parquet file at the end.

Each row (:func:`prediction_row`) carries pybioclip's columns (``file_name``, one per
rank, ``species_epithet``, ``common_name``, ``score``) for the answer, so notebooks
written for pybioclip keep working, and ours: ``path``, ``confidence_<rank>``,
``rank_reached`` and ``reached_path`` (back-off), ``alternatives`` and ``error``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from taxonlens.data.images import IMAGE_SUFFIXES, load_image
from taxonlens.data.treeoflife import LabelSet, bioclip_name, hub_treeoflife, read_treeoflife, subset_leaves
from taxonlens.errors import DataError, ImageError
from taxonlens.journal import append_journal, read_journal
from taxonlens.models.encoders import Encoder, load_encoder
from taxonlens.recognize.decode import Prediction, TreeDecoder
from taxonlens.recognize.zeroshot import ZeroShotClassifier
from taxonlens.taxonomy import Taxonomy

if TYPE_CHECKING:
    from taxonlens.recognize.rerank import LMMReranker

OUTPUT_FORMATS = (".csv", ".jsonl", ".parquet")


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
    """

    encoder: Encoder
    classifier: object
    decoder: TreeDecoder
    method: str = "exact"
    common_names: dict[int, str] = field(default_factory=dict)
    reranker: LMMReranker | None = None

    @property
    def taxonomy(self) -> Taxonomy:
        return self.decoder.taxonomy

    def leaf_probs(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``[B, n_leaves]`` probabilities of a batch of RGB images."""
        pixels = torch.stack([self.encoder.preprocess(img) for img in images])
        probs = self.classifier.predict_proba(self.encoder.encode_images(pixels))
        return self.reranker.rerank(images, probs) if self.reranker is not None else probs

    def predict(self, images: Sequence[Image.Image], top_k: int = 5, rank: str | None = None) -> list[Prediction]:
        """Predictions for a batch of images (see :meth:`TreeDecoder.decode`)."""
        return self.decoder.decode(self.leaf_probs(images), self.method, top_k=top_k, rank=rank)

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

    Raises:
        TaxonlensError: an unknown model or taxonomy, missing weights or label files, a bad subset.
    """
    from taxonlens.data import taxonomy_or_benchmark

    if sum(x is not None for x in (taxonomy, labels, memory)) > 1:
        raise DataError("give one of a taxonomy, a labels file or a memory")
    encoder = load_encoder(model, precision=precision)
    label_set: LabelSet | None = None
    if memory is not None:
        from taxonlens.index.exemplars import MemoryClassifier

        if subset:
            raise DataError("--subset applies to label sets, not to an exemplar memory")
        classifier, tax = MemoryClassifier.load(memory, encoder, k=max(rerank_k, 10))
        return Recognizer(encoder, classifier, TreeDecoder(tax, thresholds), method, {},
                          _reranker(rerank, tax, rerank_k, rerank_method, rerank_answer, rerank_system))
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
        if label_set.embeddings.shape[1] != encoder.embed_dim:
            raise DataError(f"the label embeddings have {label_set.embeddings.shape[1]} dimensions, the model "
                            f"{model!r} {encoder.embed_dim}: they belong to another model")
        if subset:
            label_set = label_set.subset(subset_leaves(label_set.taxonomy, subset))
        classifier = ZeroShotClassifier.from_labels(encoder, label_set)
        tax, common = label_set.taxonomy, label_set.common_names
    else:
        if subset:
            tax = tax.subset(subset_leaves(tax, subset))
        classifier = ZeroShotClassifier(encoder, tax, None, text_type, templates, cache_dir=cache_dir,
                                        progress=progress)
        common = {}
    return Recognizer(encoder, classifier, TreeDecoder(tax, thresholds), method, common,
                      _reranker(rerank, tax, rerank_k, rerank_method, rerank_answer, rerank_system))


def _reranker(model: str | None, taxonomy: Taxonomy, k: int, method: str, answer: str,
              system: bool) -> LMMReranker | None:
    if not model:
        return None
    from taxonlens.models.mllm import load_lmm
    from taxonlens.recognize.answers import SYSTEM_PROMPT
    from taxonlens.recognize.rerank import LMMReranker

    return LMMReranker(load_lmm(model), taxonomy, k, method, answer=answer, system=SYSTEM_PROMPT if system else None)


def prediction_row(taxonomy: Taxonomy, file_name: str, prediction: Prediction | None, error: str | None = None,
                   common_names: dict[int, str] | None = None) -> dict:
    """The output row of one photo: pybioclip's columns, then ours (see the module docstring).

    Rank columns hold the answer's names (pybioclip's ``""`` for an unnamed rank and below
    the answer); ``species_epithet`` is added when the last rank is ``species``; ``score`` is
    the confidence of the answer's last taxon.
    """
    ranks = taxonomy.ranks
    path = prediction.path if prediction else ()
    row: dict = {"file_name": file_name}
    for d, r in enumerate(ranks):
        name = bioclip_name(path[d]) if d < len(path) else ""
        if r == "species" and d == len(ranks) - 1:
            genus = row.get(ranks[d - 1], "") if d else ""
            row["species_epithet"] = name[len(genus) + 1:] if genus and name.startswith(genus + " ") else name
        row[r] = name
    node = taxonomy.node_of_path(path) if path else -1
    row["common_name"] = (common_names or {}).get(node, "")
    row["score"] = prediction.confidence[ranks[len(path) - 1]] if prediction else None
    row["path"] = " > ".join(path)
    for r in ranks:
        row[f"confidence_{r}"] = prediction.confidence.get(r) if prediction else None
    row["rank_reached"] = (prediction.rank_reached or "") if prediction else ""
    row["reached_path"] = " > ".join(prediction.reached_path) if prediction else ""
    row["alternatives"] = json.dumps([{"path": " > ".join(p), "score": round(float(s), 6)}
                                      for p, s in prediction.alternatives]) if prediction else "[]"
    row["error"] = error or ""
    return row


def expand_inputs(paths: Iterable[str | Path]) -> list[str]:
    """Image files named directly, and every image file under named folders (sorted).

    Raises:
        DataError: a path that does not exist, or no images at all.
    """
    files: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(str(f) for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.exists():
            files.append(str(p))
        else:
            raise DataError(f"{p} does not exist")
    if not files:
        raise DataError("no image files found in the given paths")
    return files


def _journal_of(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        import csv

        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return read_journal(path)  # a line cut by a crash mid-write is skipped: that photo is redone


def _write_rows(rows: list[dict], out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    suffix = out.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    elif suffix == ".csv":
        import csv

        columns = list(dict.fromkeys(k for r in rows for k in r))
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, out)


def predict_files(
    recognizer: Recognizer,
    paths: Sequence[str],
    out: str | Path,
    batch_size: int = 32,
    top_k: int = 5,
    rank: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Path, list[ImageError]]:
    """Predict every file of ``paths`` into ``out`` (``.csv``, ``.jsonl`` or ``.parquet``).

    Photos already in ``out`` or in its journal (``out.partial.jsonl``) are skipped, so a
    killed run resumes. Rows come from :meth:`Recognizer.row`.

    Returns:
        the output path, and the files that could not be read (also written as rows
        with an ``error``).
    """
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_FORMATS:
        raise DataError(f"{out}: unknown output format; use {', '.join(OUTPUT_FORMATS)}")
    journal = _journal_of(out)
    previous = _read_rows(out) + _read_rows(journal)
    done = {r["file_name"] for r in previous if not r.get("error")}  # unreadable files are tried again
    todo = [p for p in paths if p not in done]
    if progress and len(paths) > len(todo):
        progress(len(paths) - len(todo))
    failures: list[ImageError] = []
    with append_journal(journal) as log:  # a line cut by a crash is removed first
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            images, names, rows = [], [], []
            for path in batch:
                try:
                    images.append(load_image(path))
                    names.append(path)
                except ImageError as e:
                    failures.append(e)
                    rows.append(recognizer.row(path, None, e.reason))
            if images:
                rows.extend(recognizer.row(n, p) for n, p in zip(names, recognizer.predict(images, top_k, rank)))
            for r in rows:
                log.write(json.dumps(r, ensure_ascii=False) + "\n")
            log.flush()
            if progress:
                progress(len(batch))
    latest = {r["file_name"]: r for r in _read_rows(out) + _read_rows(journal)}  # a retried file's last row wins
    _write_rows(list(latest.values()), out)
    journal.unlink()
    return out, failures


def calibrate_thresholds(recognizer: Recognizer, data: str | Path, precision: float = 0.9, batch_size: int = 32,
                         progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Back-off thresholds of ``recognizer`` from labelled photos (a manifest or an image
    folder; its ``val`` split when it has one), set on its decoder and returned (see
    :meth:`~taxonlens.recognize.decode.TreeDecoder.calibrate`). Names compare case-insensitively.

    Raises:
        DataError: no labelled photo, or labels that are not classes of the recognizer's taxonomy.
    """
    from taxonlens.data import read_image_folder, read_manifest
    from taxonlens.data.records import record_leaves

    data = Path(data)
    records = read_image_folder(data) if data.is_dir() else read_manifest(data)
    records = [r for r in records if r.path]
    if any(r.split == "val" for r in records):
        records = [r for r in records if r.split == "val"]
    if not records:
        raise DataError(f"{data}: no labelled photos to calibrate on")
    classes = record_leaves(records, recognizer.taxonomy)
    probs, truth = [], []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        images, leaves = [], []
        for r, leaf in zip(batch, classes[start : start + batch_size]):
            try:
                images.append(load_image(r.image))
                leaves.append(leaf)
            except ImageError:
                continue  # an unreadable photo says nothing about the thresholds
        if images:
            probs.append(recognizer.leaf_probs(images))
            truth.extend(leaves)
        if progress:
            progress(start + len(batch), len(records))
    if not truth:
        raise DataError(f"{data}: none of the labelled photos could be read")
    return recognizer.decoder.calibrate(torch.cat(probs), torch.tensor(truth), precision, recognizer.method)

"""Few-shot classifier folders: prototypes or a linear probe over an encoder's features of
labelled photos (``taxonlens fewshot fit``), loaded by ``predict --classifier``.

A folder holds ``classifier.safetensors`` (the fitted tensors of
:class:`~taxonlens.recognize.fewshot.SimpleShot` or
:class:`~taxonlens.recognize.fewshot.LinearProbe`), the label tree (``taxonomy.csv``; the
classes are its leaves) and ``fewshot.json`` (method, shots, seed, photos used, and the
encoder's name and fingerprint: a classifier only answers for the encoder whose features it
was fitted on).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from taxonlens.data import Record
from taxonlens.data.records import record_leaves
from taxonlens.errors import DataError
from taxonlens.index.exemplars import encode_records, read_encoder_meta
from taxonlens.models.encoders import Encoder
from taxonlens.recognize.fewshot import _FewShotClassifier, classifier_class, sample_shots
from taxonlens.taxonomy import Taxonomy, load_taxonomy, save_taxonomy

TENSORS_FILE, META_FILE, TAXONOMY_FILE = "classifier.safetensors", "fewshot.json", "taxonomy.csv"


def fit_fewshot(records: Sequence[Record], encoder: Encoder, out: str | Path, shots: int | None = 5,
                method: str = "simpleshot", seed: int = 0, taxonomy: Taxonomy | None = None, batch_size: int = 32,
                progress: Callable[[int, int], None] | None = None) -> Path:
    """Fit a few-shot classifier on ``shots`` labelled photos per class (``None``: all of them,
    drawn with ``seed``) and save it under ``out``.

    Args:
        taxonomy: the label tree whose leaves are the classes (default: the records' paths);
            leaves without a photo get probability 0.

    Raises:
        DataError: an unknown method, a photo whose path is not a class, or no readable photo.
    """
    try:
        cls = classifier_class(method)
    except ValueError as e:
        raise DataError(str(e)) from None
    if shots is not None and shots < 1:
        raise DataError(f"shots must be at least 1 (or all), got {shots}")
    taxonomy = taxonomy or Taxonomy.from_paths(sorted({tuple(r.path) for r in records if r.path}),
                                               allow_homonyms=True)
    records = [r for r in records if r.path]
    classes = np.asarray(record_leaves(records, taxonomy))
    picked = sample_shots(classes, shots, seed) if shots else np.arange(len(records))
    features, kept = encode_records(encoder, [records[i] for i in picked], batch_size, progress)
    if not kept:
        raise DataError("no readable labelled photo to fit the classifier on")
    clf = cls().fit(features, classes[picked[kept]], taxonomy.n_leaves)
    params, tensors = clf.get_state()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / TENSORS_FILE)
    save_taxonomy(taxonomy, out / TAXONOMY_FILE)
    meta = {"method": method, "params": params, "shots": shots or "all", "seed": seed, "photos": len(kept),
            "classes_with_photos": len(np.unique(classes[picked[kept]])),
            "encoder": getattr(encoder, "name", ""), "fingerprint": encoder.fingerprint()}
    (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def load_fewshot(directory: str | Path, encoder: Encoder) -> tuple[_FewShotClassifier, Taxonomy, str]:
    """The classifier of a folder written by :func:`fit_fewshot`, its label tree, and a
    fingerprint of the folder's contents.

    Raises:
        DataError: not a classifier folder, or one fitted on another encoder's features.
    """
    directory = Path(directory)
    meta = read_encoder_meta(directory, META_FILE, "a few-shot classifier", "fit one with `taxonlens fewshot fit`",
                             encoder)
    digest = hashlib.sha256((directory / META_FILE).read_bytes())
    digest.update((directory / TENSORS_FILE).read_bytes())
    clf = classifier_class(meta["method"]).from_state(meta["params"], load_file(directory / TENSORS_FILE))
    return clf, load_taxonomy(directory / TAXONOMY_FILE, allow_homonyms=True), digest.hexdigest()[:16]

"""Image-exemplar memories: photo embeddings of an encoder with their class, saved beside the
label tree, and the classifier that retrieves from them (RAR's memory; few-shot at scale).

A memory folder holds :class:`~taxonlens.index.memory.VectorMemory`'s files, the taxonomy
(``taxonomy.csv``; labels are its leaf indices) and ``exemplars.json`` (the encoder's name
and fingerprint: a memory only answers for the encoder that built it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from taxonlens.data import Record
from taxonlens.data.loader import PhotoLoader
from taxonlens.data.records import record_leaves
from taxonlens.errors import DataError
from taxonlens.index.memory import VectorMemory
from taxonlens.models.encoders import Encoder, load_encoder
from taxonlens.taxonomy import Taxonomy, load_taxonomy, save_taxonomy

TAXONOMY_FILE, EXEMPLARS_FILE = "taxonomy.csv", "exemplars.json"


def encode_records(encoder: Encoder, records: Sequence[Record], batch_size: int = 32,
                   progress: Callable[[int, int], None] | None = None,
                   known: Mapping[str, np.ndarray] | None = None, workers: int = 0) -> tuple[np.ndarray, list[int]]:
    """Unit image features of the records' photos: float32 ``[M, D]`` and the indices of the
    ``M`` records whose photo could be read (unreadable ones are skipped). ``progress`` gets
    (photos done, photos).

    Args:
        known: features already computed by this encoder, by resolved photo path
            (:func:`~taxonlens.index.embeddings.read_embeddings`); those photos are not read.
        workers: processes that read and preprocess the photos (0: this one; see
            :class:`~taxonlens.data.loader.PhotoLoader`).

    Raises:
        TaxonlensError: a ``batch_size`` too large for the device's memory (naming one that fits).
    """
    known = known or {}
    rows: dict[int, np.ndarray] = {}
    todo = []
    for i, r in enumerate(records):
        cached = known.get(str(Path(r.image).resolve()))
        if cached is not None:
            rows[i] = cached
        else:
            todo.append(i)
    loader, start = PhotoLoader.of(encoder, batch_size, workers), 0
    for batch in loader.batches([records[i].image for i in todo]):
        if batch.read:
            feats = loader.run(lambda b: encoder.encode_images(b.pixels), batch).float().numpy()
            rows.update(zip((todo[start + k] for k in batch.read), feats))
        start += len(batch.paths)
        if progress:
            progress(len(records) - len(todo) + start, len(records))
    kept = sorted(rows)
    return (np.stack([rows[i] for i in kept]) if kept else np.zeros((0, 0), np.float32)), kept


def build_exemplar_memory(records: Sequence[Record], model: str | Encoder, out: str | Path,
                          taxonomy: Taxonomy | None = None, kind: str = "flat", per_class: int = 0,
                          batch_size: int = 32, seed: int = 0,
                          progress: Callable[[int, int], None] | None = None,
                          known: Mapping[str, np.ndarray] | None = None, workers: int = 0) -> VectorMemory:
    """Encode labelled photos (``per_class`` drawn per class with ``seed``, 0 for all) and save
    them as a memory under ``out``. Unreadable photos are skipped; photos in ``known`` (their
    features by resolved path, from ``taxonlens embed`` with this encoder) are not encoded again;
    the others are read by ``workers`` processes (see :func:`encode_records`).

    Raises:
        DataError: a photo whose path is not a class of ``taxonomy``, or no readable photo.
    """
    from taxonlens.recognize.fewshot import sample_shots

    encoder = load_encoder(model) if isinstance(model, str) else model
    taxonomy = taxonomy or Taxonomy.from_paths(sorted({tuple(r.path) for r in records}), allow_homonyms=True)
    classes = record_leaves(records, taxonomy)
    picked = sample_shots(np.asarray(classes), per_class, seed) if per_class else np.arange(len(records))
    feats, kept = encode_records(encoder, [records[i] for i in picked], batch_size, progress, known, workers)
    if not kept:
        raise DataError("no readable photo to put in the memory")
    labels = np.asarray(classes)[picked[kept]]
    memory = VectorMemory.build(feats, labels, kind=kind)
    out = Path(out)
    memory.save(out)
    save_taxonomy(taxonomy, out / TAXONOMY_FILE)
    (out / EXEMPLARS_FILE).write_text(json.dumps({"encoder": getattr(encoder, "name", str(model)),
                                                  "fingerprint": encoder.fingerprint()}, indent=1) + "\n")
    return memory


def read_encoder_meta(directory: Path, meta_name: str, what: str, how: str, encoder: Encoder) -> dict:
    """The JSON metadata file ``meta_name`` of a folder built from ``encoder``'s features (an exemplar
    memory, a few-shot classifier): it names the encoder and its fingerprint.

    Raises:
        DataError: no such file (``what`` the folder is not; ``how`` to make one), or a folder made
            with another encoder, precision or weights (features of different models do not compare).
    """
    meta_file = directory / meta_name
    if not meta_file.is_file():
        raise DataError(f"{directory} is not {what} (no {meta_name}); {how}")
    meta = json.loads(meta_file.read_text())
    if meta["fingerprint"] != encoder.fingerprint():
        raise DataError(f"{directory} was built with encoder {meta['encoder']!r} at another precision or "
                        "with other weights; use that --model and --precision (features of different "
                        "models do not compare)")
    return meta


class MemoryClassifier:
    """Leaf probabilities from the ``k`` best classes retrieved in an exemplar memory: a softmax of
    their best cosine similarities times the encoder's logit scale; other leaves get 0.

    Attributes:
        memory: the vector memory; ``taxonomy``: its label tree.
    """

    def __init__(self, memory: VectorMemory, taxonomy: Taxonomy, logit_scale: float, k: int = 10):
        self.memory, self.taxonomy, self.logit_scale, self.k = memory, taxonomy, logit_scale, k

    @classmethod
    def load(cls, directory: str | Path, encoder: Encoder, k: int = 10) -> tuple[MemoryClassifier, Taxonomy]:
        """Open a memory written by :func:`build_exemplar_memory` for ``encoder``.

        Raises:
            DataError: not a memory folder, or one built by another encoder.
        """
        directory = Path(directory)
        read_encoder_meta(directory, EXEMPLARS_FILE, "an exemplar memory", "build one with `taxonlens index build`",
                          encoder)
        taxonomy = load_taxonomy(directory / TAXONOMY_FILE, allow_homonyms=True)
        return cls(VectorMemory.load(directory), taxonomy, encoder.logit_scale, k), taxonomy

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, n_leaves]`` probabilities of unit image features ``[B, D]``."""
        classes, scores = self.memory.retrieve(features.numpy(), min(self.k, self.taxonomy.n_leaves))
        logits = torch.from_numpy(scores * self.logit_scale)  # -inf where fewer classes were found
        p = torch.softmax(logits, dim=1).nan_to_num(0.0)
        out = torch.zeros(len(features), self.taxonomy.n_leaves)
        found = torch.from_numpy(classes) >= 0
        out[torch.nonzero(found, as_tuple=True)[0], torch.from_numpy(classes)[found]] = p[found]
        return out

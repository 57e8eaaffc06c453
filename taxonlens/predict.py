"""``taxonlens predict``: photos in, a consistent taxonomy path per photo out.

:class:`Recognizer` is the whole model (encoder -> classifier over the leaves ->
tree-consistent decoder); :func:`predict_files` runs it over files in batches
and appends each batch's rows to a journal, so a killed run resumes and skips
the photos already done. Unreadable files become rows with an ``error`` and are
never fatal. The journal is turned into the requested CSV, JSONL or Parquet
file at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from taxonlens.data.images import IMAGE_SUFFIXES, load_image
from taxonlens.errors import DataError, ImageError
from taxonlens.models.encoders import Encoder
from taxonlens.recognize.decode import Prediction, TreeDecoder
from taxonlens.taxonomy import Taxonomy

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
    """

    encoder: Encoder
    classifier: object
    decoder: TreeDecoder
    method: str = "exact"

    @property
    def taxonomy(self) -> Taxonomy:
        return self.decoder.taxonomy

    def leaf_probs(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``[B, n_leaves]`` probabilities of a batch of RGB images."""
        pixels = torch.stack([self.encoder.preprocess(img) for img in images])
        return self.classifier.predict_proba(self.encoder.encode_images(pixels))

    def predict(self, images: Sequence[Image.Image], top_k: int = 5, rank: str | None = None) -> list[Prediction]:
        """Predictions for a batch of images (see :meth:`TreeDecoder.decode`)."""
        return self.decoder.decode(self.leaf_probs(images), self.method, top_k=top_k, rank=rank)


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
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write: that photo is redone
                break
    return rows


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
    row: Callable[[str, Prediction | None, str | None], dict],
    batch_size: int = 32,
    top_k: int = 5,
    rank: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Path, list[ImageError]]:
    """Predict every file of ``paths`` into ``out`` (``.csv``, ``.jsonl`` or ``.parquet``).

    Photos already in ``out`` or in its journal (``out.partial.jsonl``) are skipped, so a
    killed run resumes. ``row(file_name, prediction, error)`` makes each output row.

    Returns:
        the output path, and the files that could not be read (also written as rows
        with an ``error``).
    """
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_FORMATS:
        raise DataError(f"{out}: unknown output format; use {', '.join(OUTPUT_FORMATS)}")
    journal = _journal_of(out)
    previous = _read_rows(out) + _read_rows(journal)
    done = {r["file_name"] for r in previous}
    todo = [p for p in paths if p not in done]
    if progress and len(paths) > len(todo):
        progress(len(paths) - len(todo))
    failures: list[ImageError] = []
    with journal.open("a", encoding="utf-8") as log:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            images, names, rows = [], [], []
            for path in batch:
                try:
                    images.append(load_image(path))
                    names.append(path)
                except ImageError as e:
                    failures.append(e)
                    rows.append(row(path, None, e.reason))
            if images:
                rows.extend(row(n, p, None) for n, p in zip(names, recognizer.predict(images, top_k, rank)))
            for r in rows:
                log.write(json.dumps(r, ensure_ascii=False) + "\n")
            log.flush()
            if progress:
                progress(len(batch))
    _write_rows(_read_rows(out) + _read_rows(journal), out)
    journal.unlink()
    return out, failures

"""``taxonlens embed``: one unit image feature per photo (as pybioclip's ``bioclip embed``), into
a resumable table that ``index build --embeddings`` reads instead of encoding the photos again.

It runs on the same resumable photo loop as ``predict`` (:func:`~taxonlens.predict.files.journal_photos`):
rows are journaled as photos are done, the encoder's fingerprint is recorded beside the output,
and unreadable photos are rows with an ``error``. The journal holds each feature as the base64 of
its float32 bytes, so a resumed run writes exactly what an uninterrupted one writes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from taxonlens.data.loader import PhotoBatch, PhotoLoader
from taxonlens.errors import ImageError
from taxonlens.index.embeddings import COLUMNS, embedding_row
from taxonlens.models.encoders import Encoder
from taxonlens.predict.files import check_output, journal_photos
from taxonlens.tables import write_table


def embed_files(encoder: Encoder, paths: Sequence[str], out: str | Path, batch_size: int = 32,
                progress: Callable[[int], None] | None = None, overwrite: bool = False, workers: int = 0
                ) -> tuple[Path, list[ImageError]]:
    """Embed every file of ``paths`` into the table ``out`` (see the module docstring), the photos
    read and preprocessed by ``workers`` processes (0: this one; see
    :class:`~taxonlens.data.loader.PhotoLoader`).

    Returns:
        the output path, and the files that could not be read (also rows with an ``error``).

    Raises:
        DataError: an unknown format, an unwritable ``out``, or ``out`` written by another encoder.
        TaxonlensError: a ``batch_size`` too large for the device's memory (naming one that fits).
    """
    out = check_output(out)
    model = encoder.fingerprint()

    def work(batch: PhotoBatch) -> list[dict]:
        feats = encoder.encode_images(batch.pixels).float().numpy()
        return [{"file_name": batch.paths[k], "b64": base64.b64encode(f.astype(np.float32).tobytes()).decode(),
                 "error": ""} for k, f in zip(batch.read, feats)]

    rows, failures = journal_photos(paths, out, {"model": model, "what": "embeddings"}, overwrite,
                                    PhotoLoader.of(encoder, batch_size, workers), work,
                                    lambda path, reason: {"file_name": path, "b64": "", "error": reason}, progress)
    table = [embedding_row(r["file_name"], model, np.frombuffer(base64.b64decode(r["b64"]), dtype=np.float32)
                           if r["b64"] else None, r["error"]) for r in rows]
    write_table(table, out, "output", COLUMNS)
    return out, failures

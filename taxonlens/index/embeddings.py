"""Photo embedding tables (``taxonlens embed``): one unit image feature per photo, with the file
name, the encoder's fingerprint and the dimension, in any table format (Parquet is the compact
one). :func:`read_embeddings` gives them back keyed by resolved path, so ``index build`` uses them
instead of encoding the photos again.

Columns: ``file_name``, ``embedding`` (a list of ``dim`` floats; empty for an unreadable photo),
``dim``, ``model`` (the encoder's fingerprint) and ``error``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from taxonlens.errors import DataError
from taxonlens.tables import read_table

COLUMNS = ("file_name", "embedding", "dim", "model", "error")


def embedding_row(file_name: str, model: str, vector: np.ndarray | None = None, error: str = "") -> dict:
    """The row of one photo: its unit feature ``[D]`` (``None`` for an unreadable photo)."""
    values = [] if vector is None else [float(x) for x in np.asarray(vector, dtype=np.float32)]
    return {"file_name": file_name, "embedding": values, "dim": len(values), "model": model, "error": error}


def read_embeddings(path: str | Path, fingerprint: str | None = None) -> dict[str, np.ndarray]:
    """Resolved photo path -> float32 unit feature ``[D]`` of every readable photo of an
    embedding table.

    Args:
        fingerprint: refuse a table made by another encoder (:meth:`Encoder.fingerprint`).

    Raises:
        DataError: a file that is not an embedding table, rows of another encoder, or mixed dimensions.
    """
    out: dict[str, np.ndarray] = {}
    for where, row in read_table(path, "embeddings"):
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise DataError(f"{where}: no {', '.join(missing)}; is this a table written by `taxonlens embed`?")
        if row["error"]:
            continue
        if fingerprint is not None and row["model"] != fingerprint:
            raise DataError(f"{where}: embedded by another encoder (or precision) than the one given; embed the "
                            "photos again with this --model and --precision")
        vector = json.loads(row["embedding"]) if isinstance(row["embedding"], str) else row["embedding"]
        out[str(Path(row["file_name"]).resolve())] = np.asarray(vector, dtype=np.float32)
    dims = {v.shape[0] for v in out.values()}
    if len(dims) > 1:
        raise DataError(f"{path}: embeddings of several dimensions ({sorted(dims)})")
    return out

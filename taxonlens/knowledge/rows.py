"""Attribute rows: reading the JSON-lines files ``taxonlens attributes extract`` and ``describe``
write, and pairing their lines with manifest records.

A row is ``{"image": str, "label": str | null, "attributes": {name: value}}``, plus
``"description": str`` in a described file (see :mod:`taxonlens.knowledge`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from taxonlens.data.records import Record
from taxonlens.errors import DataError
from taxonlens.knowledge.template import DESCRIPTION
from taxonlens.textio import read_jsonl


def read_attribute_rows(path: str | Path, described: bool = False) -> list[dict]:
    """The rows of an extracted (or, with ``described``, a described) attributes file, in file order.

    Raises:
        DataError: a missing or empty file, a line that is not JSON (a run that was cut: rerun it
            to complete the file), or a row without ``image``, ``attributes`` (name -> text) or,
            with ``described``, ``description`` (file and line named).
    """
    kind = "described attributes" if described else "extracted attributes"
    rows = []
    for line, row in read_jsonl(path, kind):
        attrs = row.get("attributes")
        if not isinstance(row.get("image"), str) or not isinstance(attrs, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()):
            raise DataError(f"{path}:{line}: expected {{\"image\": str, \"label\": str, \"attributes\": {{name: value}}}}"
                            f" as `taxonlens attributes extract` writes")
        if described and not isinstance(row.get(DESCRIPTION), str):
            raise DataError(f"{path}:{line}: no 'description'; is this the output of `taxonlens attributes describe`?")
        rows.append(row)
    return rows


def _resolved(image: str) -> str:
    return str(Path(image).resolve())


def match_rows(records: Sequence[Record], rows: Sequence[dict]) -> list[tuple[Record, dict]]:
    """``(record, row)`` for every record that has a row, in record order.

    A row belongs to a record when its ``image`` is the record's ``image`` as written (both as
    :func:`~taxonlens.data.read_manifest` gives it), else when both name the same file as
    absolute paths (a manifest read from another folder). The last row of an image wins.
    """
    exact = {row["image"]: row for row in rows}
    resolved = {_resolved(row["image"]): row for row in rows}
    pairs = []
    for r in records:
        row = exact.get(r.image) or resolved.get(_resolved(r.image))
        if row is not None:
            pairs.append((r, row))
    return pairs

"""Tables of rows (CSV, TSV, JSON lines, Parquet): the one reader and writer that manifests,
predictions and every command that writes rows go through.

Every error is a :class:`~taxonlens.errors.DataError` that names the file (and the line or row).
Writes are atomic: rows go to a temporary file beside the target, which then replaces it, so a
crash never leaves a half-written table; :func:`check_writable` lets a command fail on a bad
output path before it does any work.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from taxonlens.errors import DataError
from taxonlens.textio import read_jsonl, read_text

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
PATH_SEPARATOR = " > "
"""How a taxon path is written in a text cell (CSV, TSV): ``"Animalia > Chordata > Aves"``."""


def table_format(path: str | Path, kind: str, suffixes: Sequence[str] = TABLE_SUFFIXES) -> str:
    """The lower-case suffix of ``path`` when it is one of ``suffixes``.

    Raises:
        DataError: another suffix (``kind`` names the table in the message).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in suffixes:
        raise DataError(f"{path}: unknown {kind} format {suffix or '(no suffix)'!r}; use {', '.join(suffixes)}")
    return suffix


def check_writable(path: str | Path) -> Path:
    """``path`` when a file can be written there: its folder exists and is writable, and it is not a
    folder itself. Commands call this before any work, so a bad ``--out`` costs nothing.

    Raises:
        DataError: what is wrong, and what to do.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise DataError(f"cannot write {path}: it is a folder; name a file")
    if not folder.is_dir():
        raise DataError(f"cannot write {path}: folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK):
        raise DataError(f"cannot write {path}: folder {folder} is not writable")
    return path


def read_table(path: str | Path, kind: str) -> list[tuple[str, dict]]:
    """``(where, row)`` for every row of a table, ``where`` naming the file and line (or row).

    CSV and TSV cells are strings, as written; JSON lines and Parquet keep their types.

    Raises:
        DataError: a missing file or folder, an unknown format, unreadable text, a malformed
            line, or a CSV row whose number of fields differs from the header.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a {kind} file")
    if not path.is_file():
        raise DataError(f"{kind} file {path} does not exist")
    suffix = table_format(path, kind)
    if suffix == ".jsonl":
        return [(f"{path}:{i}", obj) for i, obj in read_jsonl(path, kind)]
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(read_text(path, kind), newline=""),
                                delimiter="\t" if suffix == ".tsv" else ",")
        rows = []
        for row in reader:
            if None in row or None in row.values():
                raise DataError(f"{path}:{reader.line_num}: number of fields differs from the header")
            rows.append((f"{path}:{reader.line_num}", row))
        return rows
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    return [(f"{path}:row {i + 1}", r) for i, r in enumerate(table.to_pylist())]


def _cell(value: object) -> object:
    """A CSV cell: lists and objects as JSON text, ``None`` as an empty cell."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value


def write_table(rows: Iterable[Mapping[str, object]], path: str | Path, kind: str,
                columns: Sequence[str] | None = None) -> Path:
    """Write rows atomically as CSV/TSV (lists and objects as JSON text), JSON lines or Parquet.

    Args:
        columns: the column order (CSV/TSV: also the header); default: keys in first-seen order.

    Raises:
        DataError: an unknown format or an unwritable path.
    """
    path = check_writable(path)
    suffix = table_format(path, kind)
    rows = list(rows)
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if suffix == ".jsonl":
            with tmp.open("w", encoding="utf-8") as f:
                f.writelines(json.dumps({c: r.get(c) for c in columns if c in r}, ensure_ascii=False) + "\n"
                             for r in rows)
        elif suffix in (".csv", ".tsv"):
            with tmp.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f, delimiter="\t" if suffix == ".tsv" else ",")
                writer.writerow(columns)
                writer.writerows([_cell(r.get(c)) for c in columns] for r in rows)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

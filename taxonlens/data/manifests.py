"""Manifests: tables of :class:`Record` in JSONL, CSV/TSV or Parquet.

One logical schema in every format:

- ``image`` (required): path, relative to the manifest's folder or absolute;
- the taxon, as one of: ``path`` (list of names from the first rank; JSONL and
  Parquet), one column per rank (``kingdom`` ... ``species`` or ``level1`` ...;
  empty trailing cells shorten the path), or ``label`` (a leaf name, resolved
  with a taxonomy);
- ``split`` (default ``train``), ``common_name``, ``attributes`` (an object in
  JSONL / Parquet, a JSON string in CSV).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from taxonlens.data.records import Record
from taxonlens.errors import DataError, TaxonlensError
from taxonlens.tables import read_table, table_format, write_table
from taxonlens.taxonomy import Taxonomy
from taxonlens.taxonomy.loaders import is_rank_column

_RESERVED = frozenset({"image", "path", "label", "split", "common_name", "attributes"})


def _rank_keys(keys: Iterable[str]) -> list[str]:
    ranks = [k for k in keys if is_rank_column(k)]
    return [k for k in ranks if k.lower() not in _RESERVED]


def _record_from_row(row: Mapping[str, object], where: str, root: Path, taxonomy: Taxonomy | None,
                     rank_keys: list[str]) -> Record:
    image = row.get("image")
    if not isinstance(image, str) or not image.strip():
        raise DataError(f"{where}: missing 'image'")
    cells = [str(row.get(k) or "").strip() for k in rank_keys]
    while cells and not cells[-1]:
        cells.pop()
    if row.get("path") not in (None, "", []):
        path = row["path"]
        if isinstance(path, str):
            try:
                path = json.loads(path) if path.startswith("[") else [p.strip() for p in path.split(">")]
            except json.JSONDecodeError:
                raise DataError(f"{where}: 'path' is not a JSON list of names: {path!r}") from None
        names = tuple(str(p) for p in path)
    elif cells:  # rank columns; a row whose rank cells are all empty may still give a label
        if "" in cells:
            raise DataError(f"{where}: empty rank {rank_keys[cells.index('')]!r} above a named one in {cells}")
        names = tuple(cells)
    elif row.get("label") not in (None, ""):
        if taxonomy is None:
            raise DataError(f"{where}: the manifest gives only 'label'; pass a taxonomy to resolve it to a path")
        try:
            names = taxonomy.path_names(taxonomy.find(str(row["label"]), rank=None))
        except TaxonlensError as e:
            raise DataError(f"{where}: {e}") from None
    else:
        names = ()
    if taxonomy is not None and names and taxonomy.try_node_of_path(names) is None:
        raise DataError(f"{where}: path {' > '.join(names)} is not in the taxonomy")
    attributes = row.get("attributes") or {}
    if isinstance(attributes, str):
        try:
            attributes = json.loads(attributes)
        except json.JSONDecodeError:
            raise DataError(f"{where}: 'attributes' is not a JSON object: {attributes!r}") from None
    if isinstance(attributes, list) and all(isinstance(kv, (list, tuple)) and len(kv) == 2 for kv in attributes):
        # Parquet map columns arrive as (key, value) pairs
        attributes = dict(attributes)
    if not isinstance(attributes, dict):
        raise DataError(f"{where}: 'attributes' must be an object of name -> value, got {attributes!r}")
    img = Path(image)
    return Record(
        image=str(img if img.is_absolute() else root / img),
        path=names,
        split=str(row.get("split") or "train"),
        attributes={str(k): str(v) for k, v in attributes.items()},
        common_name=(str(row["common_name"]) if row.get("common_name") else None),
    )


def read_manifest(path: str | Path, taxonomy: Taxonomy | None = None) -> list[Record]:
    """Read a ``.jsonl``, ``.csv``, ``.tsv`` or ``.parquet`` manifest.

    Args:
        path: the manifest file; relative image paths are resolved against its folder.
        taxonomy: if given, resolves ``label``-only rows and checks every path is in it.

    Raises:
        DataError: a missing file, an unknown format or a malformed row (file and line named).
    """
    path = Path(path)
    root = path.parent
    rows = read_table(path, "manifest")
    keys: list[str] = []
    for _, r in rows:  # rank columns in first-seen order
        keys.extend(k for k in r if k not in keys)
    rank_keys = _rank_keys(keys)
    return [_record_from_row(r, where, root, taxonomy, rank_keys) for where, r in rows]


def _relative(image: str, root: Path) -> str:
    try:
        return str(Path(image).resolve().relative_to(root.resolve()))
    except ValueError:
        return image


def write_manifest(records: Iterable[Record], path: str | Path, ranks: Iterable[str] | None = None) -> Path:
    """Write records as ``.jsonl``, ``.csv`` / ``.tsv`` (needs ``ranks`` for the columns)
    or ``.parquet``; image paths under the manifest's folder are written relative to it."""
    path = Path(path)
    root = path.parent
    rows = []
    for r in records:
        d = r.to_dict()
        d["image"] = _relative(r.image, root)
        rows.append(d)
    if table_format(path, "manifest") in (".csv", ".tsv"):
        rank_cols = list(ranks or [])
        if not rank_cols:
            raise DataError("writing a CSV manifest needs the rank names for its columns")
        flat = []
        for d in rows:
            names = list(d["path"]) + [""] * (len(rank_cols) - len(d["path"]))
            flat.append({"image": d["image"], **dict(zip(rank_cols, names)), "split": d["split"],
                         "common_name": d.get("common_name", ""), "attributes": d.get("attributes") or ""})
        write_table(flat, path, "manifest", ["image", *rank_cols, "split", "common_name", "attributes"])
    elif path.suffix.lower() == ".parquet":
        for d in rows:
            d["attributes"] = json.dumps(d.get("attributes", {}), ensure_ascii=False)
            d.setdefault("common_name", None)
        write_table(rows, path, "manifest")
    else:
        write_table(rows, path, "manifest")
    return path

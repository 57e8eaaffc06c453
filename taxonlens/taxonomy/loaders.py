"""Read and write taxonomies: taxonomy JSON and CSV/TSV with one column per rank, or a
built-in taxonomy by name. (The tree of a hierarchical-VQA benchmark's true paths comes from
:func:`taxonlens.data.vqa.benchmark_taxonomy`: reading benchmarks is the data layer's job.)

Every loader validates its input and names the file, line and values of the
first problem it finds.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

from taxonlens.errors import TaxonomyError
from taxonlens.resources import BUILTIN_TAXONOMIES, taxonomy_file
from taxonlens.tables import write_table
from taxonlens.taxonomy.tree import Taxonomy
from taxonlens.textio import read_text

_RANK_COLUMN = re.compile(
    r"(level\d+|(super|sub|infra|parv)?(domain|kingdom|phylum|class|order|family|tribe|genus|species)"
    r"|variety|species_epithet)$",
    re.IGNORECASE,
)


def is_rank_column(name: str) -> bool:
    """Whether a column header names a rank: ``levelK``, a Linnaean rank or its
    super-/sub-/infra- rank (``subclass``, ``superfamily``, ``tribe``, ``subspecies``, ...)."""
    return bool(_RANK_COLUMN.match(name.strip()))


def load_taxonomy(
    path: str | Path, ranks: Sequence[str] | None = None, allow_homonyms: bool = False
) -> Taxonomy:
    """Load a taxonomy from ``.json`` (``{leaf: [level1, ..., leaf]}``) or ``.csv`` /
    ``.tsv`` (one column per rank), or a built-in taxonomy by name (``imagenet-animal``, see
    :data:`taxonlens.resources.BUILTIN_TAXONOMIES`).

    Args:
        path: the file, or a built-in name.
        ranks: rank names (JSON) or the rank columns to read (CSV / TSV).
        allow_homonyms: accept a name whose parent changes within one top-level taxon.

    Raises:
        TaxonomyError: the file is missing or malformed; the message says where.

    >>> load_taxonomy("imagenet-animal").n_leaves
    397
    """
    path = taxonomy_file(path)
    if not path.is_file():
        raise TaxonomyError(f"taxonomy file {path} does not exist (built-in names: {', '.join(BUILTIN_TAXONOMIES)})")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _load_json(path, ranks, allow_homonyms)
    if suffix in (".csv", ".tsv"):
        return _load_table(path, ranks, allow_homonyms)
    if suffix == ".jsonl":
        raise TaxonomyError(f"{path}: a .jsonl file is a hierarchical-VQA benchmark, not a taxonomy; "
                            "taxonlens.data.vqa.benchmark_taxonomy builds the tree of its true paths")
    raise TaxonomyError(f"{path}: unknown taxonomy format {suffix!r}; use .json, .csv or .tsv")


def _line_of_key(text: str, key: str, occurrence: int) -> int:
    """1-based line of the ``occurrence``-th (0-based) appearance of ``key`` as an object key; 0 if not found."""
    for form in (json.dumps(key, ensure_ascii=False), json.dumps(key)):  # raw or \u-escaped in the file
        hits = [m.start() for m in re.finditer(re.escape(form) + r"\s*:", text)]
        if len(hits) > occurrence:
            return text.count("\n", 0, hits[occurrence]) + 1
    return 0


class _KeyLines:
    """``where`` strings for JSON keys (one per top-level pair, repeats included),
    computed only when an error needs one."""

    def __init__(self, path: Path, text: str, keys: list[str]):
        self.path, self.text, self.keys = path, text, keys

    def __getitem__(self, i: int) -> str:
        key = self.keys[i]
        return f"{self.path}:{_line_of_key(self.text, key, self.keys[:i].count(key))}"


def _load_json(path: Path, ranks: Sequence[str] | None, allow_homonyms: bool) -> Taxonomy:
    text = read_text(path, "taxonomy", TaxonomyError)
    top_pairs: list[tuple[str, object]] = []

    def keep_pairs(kv: list[tuple[str, object]]) -> dict:
        top_pairs[:] = kv  # the outermost object is decoded last, so this ends as its pairs
        return dict(kv)

    try:
        top = json.loads(text, object_pairs_hook=keep_pairs)
    except json.JSONDecodeError as e:
        raise TaxonomyError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(top, dict):
        raise TaxonomyError(f"{path}: expected a JSON object {{leaf: [level1, ..., leaf]}}, got {type(top).__name__}")
    lines = _KeyLines(path, text, [k for k, _ in top_pairs])
    seen: dict[str, list] = {}
    paths, keys = [], []
    for i, (key, value) in enumerate(top_pairs):
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise TaxonomyError(f"{lines[i]}: path of {key!r} must be a list of names, got {value!r}")
        if key in seen:
            if seen[key] != value:
                raise TaxonomyError(
                    f"{lines[i]}: leaf {key!r} is listed twice with different paths: {seen[key]!r} and {value!r}"
                )
            continue
        if value and value[-1] != key:
            raise TaxonomyError(f"{lines[i]}: key {key!r} differs from the last name of its path {value!r}")
        seen[key] = value
        paths.append(value)
        keys.append(key)
    return Taxonomy.from_paths(paths, ranks=ranks, sources=_KeyLines(path, text, keys), allow_homonyms=allow_homonyms)


def _rank_columns(header: list[str], ranks: Sequence[str] | None, where: str) -> list[int]:
    lowered = [h.strip().lower() for h in header]
    if ranks is not None:
        missing = [r for r in ranks if r.lower() not in lowered]
        if missing:
            raise TaxonomyError(f"{where}: rank columns {missing} not in the header {header}")
        return [lowered.index(r.lower()) for r in ranks]
    cols = [i for i, h in enumerate(header) if is_rank_column(h)]
    return cols or list(range(len(header)))


def _load_table(path: Path, ranks: Sequence[str] | None, allow_homonyms: bool) -> Taxonomy:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(read_text(path, "taxonomy", TaxonomyError), newline=""), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise TaxonomyError(f"{path}: empty file; expected a header row naming the rank columns")
    cols = _rank_columns(header, ranks, str(path))
    paths, sources = [], []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise TaxonomyError(f"{where}: {len(row)} fields but the header has {len(header)}: {row!r}")
        names = [row[c].strip() for c in cols]
        while names and not names[-1]:  # trailing empty cells: a shorter (variable-depth) path
            names.pop()
        paths.append(names)
        sources.append(where)
    rank_names = [header[c].strip() for c in cols]
    return Taxonomy.from_paths(paths, ranks=rank_names, sources=sources, allow_homonyms=allow_homonyms)


def save_taxonomy(taxonomy: Taxonomy, path: str | Path) -> Path:
    """Write ``taxonomy`` as ``.json`` (``{leaf: path}``; leaf names must be unique)
    or ``.csv`` / ``.tsv`` (one column per rank; homonymous leaves allowed)."""
    path = Path(path)
    paths = taxonomy.leaf_paths()
    suffix = path.suffix.lower()
    if suffix == ".json":
        out: dict[str, list[str]] = {}
        for p in paths:
            if p[-1] in out:
                raise TaxonomyError(f"leaf name {p[-1]!r} occurs twice; save as .csv to keep homonymous leaves")
            out[p[-1]] = list(p)
        path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    elif suffix in (".csv", ".tsv"):
        write_table([dict(zip(taxonomy.ranks, p)) for p in paths], path, "taxonomy", taxonomy.ranks)
    else:
        raise TaxonomyError(f"{path}: cannot save a taxonomy as {suffix!r}; use .json, .csv or .tsv")
    return path

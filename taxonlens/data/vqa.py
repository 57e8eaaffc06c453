"""The hierarchical-VQA benchmark JSONL: one multiple-choice question per rank.

Each line holds ``image``, ``label``, ``split`` and, for K = 1..depth, ``levelK``
(the true name, lower case) and ``choices_levelK`` (the offered names).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from taxonlens.data.records import Record
from taxonlens.errors import DataError
from taxonlens.tables import write_table
from taxonlens.taxonomy import Taxonomy, load_taxonomy
from taxonlens.textio import read_jsonl

_LEVEL_KEY = re.compile(r"level(\d+)$")


@dataclass(frozen=True)
class VQARecord:
    """One benchmark question set: the truth and the options at every level.

    Attributes:
        image: image path as written in the file.
        label: the class name as written (original case).
        split: the split named in the file.
        levels: true names at levels 1..depth.
        choices: offered names at each level (same length as ``levels``).
        line: 1-based line number in the file, for error messages.
    """

    image: str
    label: str
    split: str
    levels: tuple[str, ...]
    choices: tuple[tuple[str, ...], ...]
    line: int

    @property
    def where(self) -> str:
        """How error messages name the record: ``record 'IMAGE' (line N)``."""
        return f"record {self.image!r} (line {self.line})"

    def to_record(self) -> Record:
        return Record(image=self.image, path=self.levels, split=self.split)


def _parse_line(obj: object, where: str, line: int) -> VQARecord:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
    if "image" not in obj:
        raise DataError(f"{where}: missing key 'image'")
    depths = sorted(int(m.group(1)) for k in obj if (m := _LEVEL_KEY.match(k)))
    if not depths:
        raise DataError(f"{where}: no 'levelK' keys; is this a hierarchical-VQA benchmark file?")
    if depths != list(range(1, len(depths) + 1)):
        raise DataError(f"{where}: levels {depths} are not consecutive from level1")
    levels, choices = [], []
    for k in depths:
        truth, offered = obj[f"level{k}"], obj.get(f"choices_level{k}", [obj[f"level{k}"]])
        if not isinstance(truth, str) or not truth.strip():
            raise DataError(f"{where}: level{k} must be a non-empty name, got {truth!r}")
        if not isinstance(offered, list) or not all(isinstance(c, str) for c in offered):
            raise DataError(f"{where}: choices_level{k} must be a list of names, got {offered!r}")
        if truth.lower() not in (c.lower() for c in offered):
            raise DataError(f"{where}: the truth {truth!r} of level{k} is not among its choices {offered}")
        levels.append(truth)
        choices.append(tuple(offered))
    return VQARecord(
        image=str(obj["image"]),
        label=str(obj.get("label", levels[-1])),
        split=str(obj.get("split", "test")),
        levels=tuple(levels),
        choices=tuple(choices),
        line=line,
    )


def read_vqa_benchmark(path: str | Path) -> list[VQARecord]:
    """Read a hierarchical-VQA JSONL file; raises :class:`DataError` naming the line of any problem."""
    return [_parse_line(obj, f"{path}:{i}", i) for i, obj in read_jsonl(path, "benchmark")]


def benchmark_taxonomy(
    path: str | Path, ranks: Sequence[str] | None = None, allow_homonyms: bool = False
) -> Taxonomy:
    """The tree of a hierarchical-VQA benchmark's true paths (``levelK`` of every line, as
    written: lower case in the real benchmark), each taxon's source its line.

    Args:
        path: the benchmark JSONL.
        ranks: rank names (default: the standard ranks for their depth).
        allow_homonyms: accept a name whose parent changes within one top-level taxon.

    Raises:
        DataError: a malformed line; TaxonomyError: the paths do not form a tree.
    """
    records = read_vqa_benchmark(path)
    paths = [list(r.levels) for r in records]
    sources = [f"{path}:{r.line}" for r in records]
    return Taxonomy.from_paths(paths, ranks=ranks, sources=sources, allow_homonyms=allow_homonyms)


def taxonomy_or_benchmark(source: str | Path, allow_homonyms: bool = False) -> Taxonomy:
    """The taxonomy a ``--taxonomy`` option names: a built-in name or a taxonomy file
    (:func:`~taxonlens.taxonomy.load_taxonomy`), or a ``.jsonl`` benchmark (:func:`benchmark_taxonomy`)."""
    if Path(source).suffix.lower() == ".jsonl":
        return benchmark_taxonomy(source, allow_homonyms=allow_homonyms)
    return load_taxonomy(source, allow_homonyms=allow_homonyms)


def write_vqa_benchmark(records: list[VQARecord], path: str | Path) -> Path:
    """Write records in the benchmark's JSONL format (inverse of :func:`read_vqa_benchmark`)."""
    rows = []
    for r in records:
        obj: dict[str, object] = {"image": r.image, "label": r.label, "split": r.split}
        for k, (truth, offered) in enumerate(zip(r.levels, r.choices), start=1):
            obj[f"level{k}"] = truth
            obj[f"choices_level{k}"] = list(offered)
        rows.append(obj)
    return write_table(rows, path, "benchmark")
    return path

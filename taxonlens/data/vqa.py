"""The hierarchical-VQA benchmark JSONL: one multiple-choice question per rank.

Each line holds ``image``, ``label``, ``split`` and, for K = 1..depth, ``levelK``
(the true name, lower case) and ``choices_levelK`` (the offered names).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from taxonlens.data.records import Record
from taxonlens.errors import DataError
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


def write_vqa_benchmark(records: list[VQARecord], path: str | Path) -> Path:
    """Write records in the benchmark's JSONL format (inverse of :func:`read_vqa_benchmark`)."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            obj: dict[str, object] = {"image": r.image, "label": r.label, "split": r.split}
            for k, (truth, offered) in enumerate(zip(r.levels, r.choices), start=1):
                obj[f"level{k}"] = truth
                obj[f"choices_level{k}"] = list(offered)
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return path

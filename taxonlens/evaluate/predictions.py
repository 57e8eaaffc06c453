"""Prediction files, and scoring them against a benchmark.

Two prediction formats, told apart by content (both may be JSONL or a JSON list):

- taxonlens JSONL: one ``{"image": ..., "path": [level 1 name, ..., leaf]}`` per line
  (other keys are ignored); ``taxonlens predict``'s own output is read as such, in any of its
  formats (``file_name`` names the image; a CSV holds the path as ``"a > b > c"``);
- the result JSON of the reference evaluation scripts (LLM-Hierarchical-Consistency,
  TARA): a JSON list of objects with ``image``, ``ground_truth_levelK`` and
  ``predicted_levelK`` for K = 1, 2, ...  As the reference does, the path is read
  while ``predicted_levelK`` exists, and ``null`` answers are skipped (later levels
  move up one place). The file's ground truth must agree with the benchmark's.

A benchmark is a hierarchical-VQA JSONL (:func:`taxonlens.data.read_vqa_benchmark`,
recognised by its ``choices_levelK`` keys) or any manifest
(:func:`taxonlens.data.read_manifest`). Predictions are matched to it by image:
a benchmark image without a prediction is scored as an empty (wrong) path and
listed in ``missing``; predicted images outside the benchmark are listed in
``extra`` and not scored.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from taxonlens.data import read_manifest, read_vqa_benchmark
from taxonlens.errors import DataError, TaxonNotFoundError
from taxonlens.evaluate.metrics import HierarchicalReport, hierarchical_report
from taxonlens.tables import PATH_SEPARATOR, read_table, write_table
from taxonlens.taxonomy import Taxonomy
from taxonlens.textio import read_jsonl, read_text

_PREDICTED = re.compile(r"predicted_level(\d+)$")
_SEPARATOR = re.compile(r"\s*,?\s*")


@dataclass(frozen=True)
class Prediction:
    """One predicted path.

    Attributes:
        image: the image as written in the file.
        path: predicted names from level 1 down (empty: no answer).
        line: 1-based line where the record starts, for error messages.
        truth: ground truth written beside the prediction (reference result files
            only; empty otherwise).
    """

    image: str
    path: tuple[str, ...]
    line: int
    truth: tuple[str, ...] = ()


def _levels_of(obj: dict, prefix: str, where: str) -> tuple[str, ...]:
    """``obj[prefix + K]`` for K = 1, 2, ... while the key exists, ``null`` values skipped."""
    names = []
    k = 1
    while f"{prefix}{k}" in obj:
        value = obj[f"{prefix}{k}"]
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: {prefix}{k} must be a name or null, got {value!r}")
        if value is not None:
            names.append(value)
        k += 1
    return tuple(names)


def _parse_record(obj: object, where: str, line: int) -> Prediction:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with 'image' and 'path', got {type(obj).__name__}")
    image = obj.get("image", obj.get("file_name"))
    if not isinstance(image, str) or not image:
        raise DataError(f"{where}: missing 'image' (the image path, as in the benchmark)")
    if "path" in obj:
        path = obj["path"]
        if not isinstance(path, list) or not all(isinstance(x, str) for x in path):
            raise DataError(f"{where}: 'path' must be a list of names from level 1 down, got {path!r}")
        return Prediction(image, tuple(path), line)
    if not any(_PREDICTED.match(k) for k in obj):
        raise DataError(
            f"{where}: no 'path' (list of names) nor the reference's 'predicted_levelK' keys; "
            "write one {\"image\": ..., \"path\": [...]} object per image"
        )
    return Prediction(image, _levels_of(obj, "predicted_level", where), line, _levels_of(obj, "ground_truth_level", where))


def _json_list_items(text: str, path: Path) -> list[tuple[int, object]]:
    """The items of a JSON list with the line each starts on."""
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    decoder = json.JSONDecoder()
    items: list[tuple[int, object]] = []
    pos, line, counted = _SEPARATOR.match(text, text.index("[") + 1).end(), 1, 0
    while text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        obj, end = decoder.raw_decode(text, pos)
        items.append((line, obj))
        pos = _SEPARATOR.match(text, end).end()
    return items


def _unflat(row: dict) -> dict:
    """A row of a CSV written by ``taxonlens predict``, with its path as a list of names."""
    path = row.get("path")
    if isinstance(path, str):
        return {**row, "path": path.split(PATH_SEPARATOR) if path else []}
    return row


def read_predictions(path: str | Path) -> list[Prediction]:
    """Read a prediction file in either format (see the module docstring).

    Raises:
        DataError: a missing or empty file, malformed JSON or record, or an image
            predicted twice (both lines named).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a predictions file")
    if path.suffix.lower() in (".csv", ".tsv", ".parquet"):  # `taxonlens predict` output
        items = [(int(where.rsplit(":", 1)[1].removeprefix("row ")), _unflat(row))
                 for where, row in read_table(path, "predictions")]
    else:
        text = read_text(path, "predictions")
        items = _json_list_items(text, path) if text.lstrip().startswith("[") else read_jsonl(path, "predictions")
    if not items:
        raise DataError(f"{path}: no predictions")
    out: list[Prediction] = []
    first_line: dict[str, int] = {}
    for line, obj in items:
        p = _parse_record(obj, f"{path}:{line}", line)
        if p.image in first_line:
            raise DataError(
                f"{path}:{line}: image {p.image!r} is predicted again (first at line {first_line[p.image]}); "
                "keep one prediction per image"
            )
        first_line[p.image] = line
        out.append(p)
    return out


def write_predictions(predictions: Iterable[tuple[str, Sequence[str]]], path: str | Path) -> Path:
    """Write ``(image, path)`` pairs as taxonlens prediction JSONL (read back by
    :func:`read_predictions`)."""
    return write_table([{"image": image, "path": list(names)} for image, names in predictions], path, "predictions")


# ------------------------------------------------------------------ benchmark
@dataclass(frozen=True)
class _Benchmark:
    """Truth paths of a benchmark and how to find a record from a predicted image."""

    images: list[str]
    paths: list[tuple[str, ...]]
    where: list[str]
    options: list[int] | None  # VQA only: most options offered at each level
    folder: Path | None  # manifests only: relative images are resolved against it

    def keys(self, image: str) -> list[str]:
        """Lookup keys of a predicted image: as written for a VQA benchmark; for a
        manifest, the absolute path relative to the manifest's folder, then to the
        working directory."""
        if self.folder is None:
            return [image]
        if os.path.isabs(image):
            return [os.path.abspath(image)]
        return [os.path.abspath(self.folder / image), os.path.abspath(image)]

    def key(self, i: int) -> str:
        return self.images[i] if self.folder is None else os.path.abspath(self.images[i])


def _is_vqa(path: Path) -> bool:
    if path.suffix.lower() != ".jsonl":
        return False
    first = next((line for line in read_text(path, "benchmark").split("\n") if line.strip()), "")
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and any(str(k).startswith("choices_level") for k in obj)


def _read_benchmark(path: Path) -> _Benchmark:
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a benchmark file; name a hierarchical-VQA JSONL or a manifest")
    if not path.is_file():
        raise DataError(f"benchmark file {path} does not exist")
    if _is_vqa(path):
        vqa = read_vqa_benchmark(path)
        depth = max(len(r.levels) for r in vqa)
        options = [max(len(r.choices[k]) for r in vqa if k < len(r.choices)) for k in range(depth)]
        return _Benchmark([r.image for r in vqa], [r.levels for r in vqa], [f"{path}:{r.line}" for r in vqa],
                          options, None)
    records = read_manifest(path)
    if not records:
        raise DataError(f"{path}: no records")
    for i, r in enumerate(records, start=1):
        if not r.path:
            raise DataError(f"{path}: record {i} ({r.image}) has no taxon path; a benchmark needs the truth of "
                            "every image")
    return _Benchmark([r.image for r in records], [r.path for r in records],
                      [f"{path}: record {i}" for i in range(1, len(records) + 1)], None, path.parent)


def _rank_names(taxonomy: Taxonomy, depth: int) -> list[str]:
    """Names of levels 1..depth: the taxonomy's ranks, then ``levelK``."""
    names = list(taxonomy.ranks[:depth])
    return names + [f"level{k}" for k in range(len(names) + 1, depth + 1)]


def _explicit_levels(ranks: Sequence[str | int], names: list[str]) -> list[int]:
    """0-based level indices of rank names or 1-based level numbers."""
    if not ranks:
        raise TaxonNotFoundError(f"no ranks given to score; choose among {names} or 1..{len(names)}")
    lowered = [n.lower() for n in names]
    levels = set()
    for r in ranks:
        if isinstance(r, int):
            if not 1 <= r <= len(names):
                raise TaxonNotFoundError(f"level {r} is outside the benchmark's levels 1..{len(names)}")
            levels.add(r - 1)
        elif r.strip().lower() in lowered:
            levels.add(lowered.index(r.strip().lower()))
        else:
            raise TaxonNotFoundError(f"unknown rank {r!r}; the benchmark's ranks are {names}")
    return sorted(levels)


def _default_levels(bench: _Benchmark, source: Path, pred_depth: int) -> list[int]:
    """Every level of a manifest; for a VQA benchmark every level where some record
    offers a real choice (as the reference skips iNat's single-choice kingdom).
    Levels deeper than the benchmark's are scored too, so a too-deep prediction is wrong, as in the reference."""
    depth = max(len(p) for p in bench.paths)
    if bench.options is None:
        inside = list(range(depth))
    else:
        inside = [k for k, n in enumerate(bench.options) if n > 1]
        if not inside:
            raise DataError(f"{source}: no level offers more than one choice, so none is scored by default; "
                            "pass the ranks to score")
    return inside + list(range(depth, pred_depth))


def _match(bench: _Benchmark, predictions: list[Prediction], source: Path) -> tuple[dict[int, Prediction], list[str]]:
    """Predictions by benchmark record index, and the predicted images outside the benchmark."""
    index: dict[str, int] = {}
    for i in range(len(bench.images)):
        key = bench.key(i)
        if key in index:
            raise DataError(f"{bench.where[i]}: image {bench.images[i]!r} is listed again (first at "
                            f"{bench.where[index[key]]}); a benchmark needs one truth per image")
        index[key] = i
    matched: dict[int, Prediction] = {}
    extra: list[str] = []
    for p in predictions:
        i = next((index[k] for k in bench.keys(p.image) if k in index), None)
        if i is None:
            extra.append(p.image)
            continue
        if i in matched:
            raise DataError(f"{source}:{p.line}: image {p.image!r} names the same benchmark image as "
                            f"line {matched[i].line}; keep one prediction per image")
        truth = [x.lower() for x in bench.paths[i]]
        if p.truth and [x.lower() for x in p.truth] != truth[: len(p.truth)]:
            raise DataError(f"{source}:{p.line}: ground truth {list(p.truth)} of {p.image!r} differs from "
                            f"{list(bench.paths[i])} at {bench.where[i]}; score the results against the benchmark "
                            "they were produced from")
        matched[i] = p
    return matched, extra


# ------------------------------------------------------------------- evaluate
@dataclass(frozen=True)
class EvaluationReport:
    """The result of :func:`evaluate_files`.

    Attributes:
        metrics: every metric (see :class:`taxonlens.evaluate.metrics.HierarchicalReport`).
        rank_names: name of each level, 1 first (the taxonomy's ranks, then ``levelK``).
        missing: benchmark images without a prediction (scored as wrong).
        extra: predicted images that are not in the benchmark (not scored).
    """

    metrics: HierarchicalReport
    rank_names: tuple[str, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready figures: ``hca, acc_leaf, por, s_por, tor`` and ``per_rank``
        (rank -> accuracy) in percent, ``n``, ``valid_path_pct``, ``severity``,
        ``backoff`` (back-off ranks -> percent of back-offs) and the ``missing`` and
        ``extra`` counts."""
        m = self.metrics
        severity = m.severity
        return {
            "hca": m.hca,
            "acc_leaf": m.acc_leaf,
            "por": m.por,
            "s_por": m.s_por,
            "tor": m.tor,
            "per_rank": {self.rank_names[k]: acc for k, acc in m.per_level.items()},
            "n": m.n,
            "valid_path_pct": m.valid_path_pct,
            "severity": None if severity is None else {
                "n": severity.n,
                "mean_distance": severity.mean_distance,
                "mean_lca_depth": severity.mean_lca_depth,
            },
            "backoff": {
                "n": m.backoff.n,
                "accuracy": m.backoff.accuracy,
                "ranks": {self.rank_names[k]: pct for k, pct in m.backoff.level_pct.items()},
            },
            "missing": len(self.missing),
            "extra": len(self.extra),
        }


def evaluate_files(
    benchmark_path: str | Path,
    predictions_path: str | Path,
    ranks: Sequence[str | int] | None = None,
    taxonomy: Taxonomy | None = None,
) -> EvaluationReport:
    """Score a prediction file against a benchmark.

    Args:
        benchmark_path: hierarchical-VQA JSONL or a manifest (``.jsonl``, ``.csv``, ``.tsv``, ``.parquet``).
        predictions_path: taxonlens prediction JSONL or a reference result JSON.
        ranks: levels to score, as rank names or 1-based level numbers (e.g.
            ``["phylum", "genus"]`` or ``[2, 6]``). Default: for a VQA benchmark every
            level offering a real choice somewhere (the reference's default for iNat,
            its ``--cub`` behaviour for CUB), for a manifest every level.
        taxonomy: for valid-path and mistake-severity figures and rank names
            (default: built from the benchmark's true paths).

    Raises:
        DataError: unreadable files, duplicated images, a benchmark truth missing from
            ``taxonomy``, or a reference file whose ground truth disagrees with the benchmark.
        TaxonNotFoundError: an unknown rank in ``ranks``.
    """
    benchmark_path, predictions_path = Path(benchmark_path), Path(predictions_path)
    bench = _read_benchmark(benchmark_path)
    matched, extra = _match(bench, read_predictions(predictions_path), predictions_path)
    if taxonomy is None:
        taxonomy = Taxonomy.from_paths(bench.paths, sources=bench.where, allow_homonyms=True)
    else:
        for path, where in zip(bench.paths, bench.where):
            if taxonomy.try_node_of_path(path) is None:
                raise DataError(f"{where}: true path {' > '.join(path)} is not in the given taxonomy; pass the "
                                "taxonomy the benchmark was built from")
    preds = [matched[i].path if i in matched else () for i in range(len(bench.paths))]
    pred_depth = max(len(p) for p in preds)
    depth = max(len(p) for p in bench.paths)
    names = _rank_names(taxonomy, max(depth, pred_depth))
    levels = _default_levels(bench, benchmark_path, pred_depth) if ranks is None else _explicit_levels(
        ranks, names[:depth])
    return EvaluationReport(
        metrics=hierarchical_report(bench.paths, preds, levels, taxonomy),
        rank_names=tuple(names),
        missing=tuple(bench.images[i] for i in range(len(bench.images)) if i not in matched),
        extra=tuple(extra),
    )

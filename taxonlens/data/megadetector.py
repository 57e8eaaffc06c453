"""MegaDetector's batch output format: read and checked image by image, and written back.

A file holds ``detection_categories`` (id -> name: ``"1": "animal"``, ``"2": "person"``,
``"3": "vehicle"``) and ``images``, one object per photo::

    {"file": "cam1/IMG_0001.JPG",
     "detections": [{"category": "1", "conf": 0.93, "bbox": [0.31, 0.42, 0.20, 0.18]}]}

``bbox`` is normalised ``[x, y, width, height]``: the top-left corner and the size as fractions
of the photo's width and height. A photo the detector could not read has ``"failure": "..."``.
Classifiers add ``classifications`` to each detection (``[[category id, confidence], ...]``,
best first) and ``classification_categories`` (id -> name) to the file; Timelapse and the other
camera-trap tools read that.

:func:`read_detections` fails on the file as a whole only when it is not such a file at all (not
JSON, no ``images`` list, no ``detection_categories``); everything wrong with one photo or one
detection (a missing key, a box outside [0, 1], a box of zero area, an unknown category) is a
problem of that photo, listed on its :class:`DetectorImage`, and the other photos and detections
are kept.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxonlens.errors import DataError
from taxonlens.textio import read_text

#: MegaDetector's category names; only ``animal`` boxes are classified
ANIMAL, PERSON, VEHICLE = "animal", "person", "vehicle"
#: the categories MegaDetector 5 writes
DETECTION_CATEGORIES = {"1": ANIMAL, "2": PERSON, "3": VEHICLE}
#: how far a box may pass the photo's edge (MegaDetector rounds boxes to 4 decimals); it is clipped
EDGE_TOLERANCE = 1e-3
_DETECTION_KEYS = ("category", "conf", "bbox")


@dataclass(frozen=True)
class Detection:
    """One valid box of a photo.

    Attributes:
        index: its position in the photo's ``detections`` list.
        category: the detector's category id (a key of ``detection_categories``).
        conf: the detector's confidence, in [0, 1].
        bbox: normalised ``(x, y, width, height)``, inside [0, 1] and of positive area.
    """

    index: int
    category: str
    conf: float
    bbox: tuple[float, float, float, float]


@dataclass
class DetectorImage:
    """One entry of ``images``: its file (``None`` when missing), its valid detections and what is
    wrong with it (each problem a sentence naming the detection; a detector's own ``failure``)."""

    index: int
    file: str | None
    detections: list[Detection] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class DetectorFile:
    """A read MegaDetector file: ``document`` as parsed (untouched), its categories and photos."""

    path: Path
    document: dict[str, Any]
    categories: dict[str, str]
    images: list[DetectorImage]

    @property
    def animal(self) -> frozenset[str]:
        """The category ids named ``animal``."""
        return frozenset(k for k, v in self.categories.items() if v == ANIMAL)


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _detection(i: int, det: object, categories: dict[str, str]) -> Detection | str:
    """The :class:`Detection` of entry ``i`` of a photo's list, or what is wrong with it."""
    if not isinstance(det, dict):
        return f"detection {i} is not an object"
    missing = [k for k in _DETECTION_KEYS if k not in det]
    if missing:
        return f"detection {i} has no {', '.join(repr(k) for k in missing)}"
    category, conf, bbox = str(det["category"]), det["conf"], det["bbox"]
    if category not in categories:
        return f"detection {i}: category {category!r} is not in detection_categories"
    if not _number(conf) or not 0 <= conf <= 1:
        return f"detection {i}: conf {conf!r} is not a number in [0, 1]"
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_number, bbox)):
        return f"detection {i}: bbox {bbox!r} is not four numbers [x, y, width, height]"
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return f"detection {i}: bbox {bbox} has zero area (width and height must be above 0)"
    tol = EDGE_TOLERANCE
    if x < -tol or y < -tol or x + w > 1 + tol or y + h > 1 + tol:
        return f"detection {i}: bbox {bbox} lies outside [0, 1] (normalised [x, y, width, height])"
    if x < 0 or x + w > 1:  # within rounding of the edge: clipped
        x, w = max(x, 0.0), min(x + w, 1.0) - max(x, 0.0)
    if y < 0 or y + h > 1:
        y, h = max(y, 0.0), min(y + h, 1.0) - max(y, 0.0)
    return Detection(i, category, float(conf), (x, y, w, h))


def _image(i: int, entry: object, categories: dict[str, str]) -> DetectorImage:
    if not isinstance(entry, dict):
        return DetectorImage(i, None, problems=[f"images[{i}] is not an object"])
    file = entry.get("file")
    image = DetectorImage(i, file if isinstance(file, str) and file else None)
    if image.file is None:
        image.problems.append(f"images[{i}] has no 'file'")
    if entry.get("failure"):
        image.problems.append(f"the detector failed: {entry['failure']}")
        return image
    detections = entry.get("detections")
    if not isinstance(detections, list):
        image.problems.append(f"images[{i}] has no 'detections' list")
        return image
    for k, det in enumerate(detections):
        got = _detection(k, det, categories)
        if isinstance(got, str):
            image.problems.append(got)
        else:
            image.detections.append(got)
    return image


def read_detections(path: str | Path) -> DetectorFile:
    """Read a MegaDetector batch output file (see the module docstring).

    Raises:
        DataError: a missing file, not JSON, or no ``images`` list or ``detection_categories``
            object (problems of single photos are listed on them instead).
    """
    path = Path(path)
    text = read_text(path, "detections")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected MegaDetector's batch output") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"{path}: no 'images' list; expected MegaDetector's batch output "
                        "({'images': [...], 'detection_categories': {...}})")
    categories = doc.get("detection_categories")
    if not isinstance(categories, dict) or not categories:
        raise DataError(f"{path}: no 'detection_categories' object (id -> name, e.g. {{'1': 'animal'}})")
    categories = {str(k): str(v) for k, v in categories.items()}
    return DetectorFile(path, doc, categories, [_image(i, e, categories) for i, e in enumerate(doc["images"])])


def write_detections(document: dict[str, Any], path: str | Path) -> Path:
    """Write a MegaDetector-format ``document`` as JSON, atomically (a temporary file renamed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["ANIMAL", "DETECTION_CATEGORIES", "PERSON", "VEHICLE", "Detection", "DetectorFile", "DetectorImage",
           "read_detections", "write_detections"]

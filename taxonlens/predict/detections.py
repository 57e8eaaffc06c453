"""``taxonlens predict --detections md.json``: name the animals a detector boxed in camera-trap photos.

:func:`predict_detections` reads MegaDetector's batch output
(:mod:`taxonlens.data.megadetector`), crops every ``animal`` box whose detector confidence is at
least ``min_conf`` (:func:`crop_box`: the box grown by ``crop_pad`` of its size on each side, then
to a square, as the encoder's centre crop would otherwise cut a long animal), classifies the
crops with the recognizer (zero-shot, few-shot, a memory, or RAR reranking: the detection setting
of RAR, boxes -> retrieve -> rank) and rolls each photo's boxes up into one answer
(:mod:`taxonlens.predict.rollup`). Persons and vehicles pass through unclassified.

Outputs, by the suffix of ``out``:

- ``.json``: the detector's file with ``classifications`` added to each classified box
  (``[[category id, confidence], ...]``: the answer, then the alternatives) and
  ``classification_categories`` (id -> taxon path, ``"a > b > c"``), the format Timelapse and
  other camera-trap tools read; a photo's problems are in MegaDetector's own ``failure`` field;
- ``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``: a row per box at or above ``min_conf``
  (``file_name``, ``detection`` (its index in the photo's list), ``category``, ``detection_conf``,
  ``bbox``, then ``predict``'s columns; persons and vehicles with an empty path), a row per bad
  box or bad photo with its ``error``; and beside it ``OUT.images.<suffix>``, a row per photo:
  ``content`` (``animal``, else the most confident other category, else ``blank``), ``boxes``
  (animal boxes classified), ``agreeing`` (those within the answer), then ``predict``'s columns
  for the rolled-up answer.

Nothing is lost to a bad photo: a missing file, a box outside [0, 1] or of zero area, a missing
key are errors of that photo (its other boxes are still classified), never of the run. The run
resumes like ``predict`` (a journal per photo beside ``out``, keyed on the recognizer's settings,
the detector file's content, ``min_conf`` and ``crop_pad``). The same file listed twice is one
photo: its boxes are classified once.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from taxonlens.data.loader import PhotoBatch, PhotoLoader
from taxonlens.data.megadetector import (
    Detection,
    DetectorFile,
    DetectorImage,
    read_detections,
    write_detections,
)
from taxonlens.errors import DataError
from taxonlens.predict.files import journal_photos, run_settings
from taxonlens.predict.recognizer import Recognizer
from taxonlens.predict.rollup import rollup
from taxonlens.predict.rows import flat_row
from taxonlens.tables import PATH_SEPARATOR, TABLE_SUFFIXES, check_writable, table_format, write_table

#: what ``--out`` may be with ``--detections``: the detector's JSON, or tables
DETECTION_OUTPUTS = (".json", *TABLE_SUFFIXES)


def check_detections_output(out: str | Path) -> Path:
    """``out`` when the outputs of :func:`predict_detections` can be written there.

    Raises:
        DataError: an unwritable path or another suffix than :data:`DETECTION_OUTPUTS`.
    """
    out = check_writable(out)
    table_format(out, "output", DETECTION_OUTPUTS)
    return out


def images_table(out: str | Path) -> Path:
    """Where the per-photo rows go beside the per-box table ``out``: ``OUT.images.<suffix>``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.images{out.suffix}")


def crop_box(image: Image.Image, bbox: Sequence[float], pad: float = 0.1) -> Image.Image:
    """The crop of a normalised ``(x, y, w, h)`` box: grown by ``pad`` of its width and height on
    each side, then to a square of its longer side (centred), clipped to the photo."""
    width, height = image.size
    x, y, w, h = bbox
    bw, bh = w * width * (1 + 2 * pad), h * height * (1 + 2 * pad)
    side = max(bw, bh, 1.0)
    cx, cy = (x + w / 2) * width, (y + h / 2) * height
    left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    right, bottom = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    return image.crop((left, top, max(right, left + 1), max(bottom, top + 1)))


@dataclass
class DetectionRun:
    """What :func:`predict_detections` did: the files written, the photos, the boxes classified,
    and each photo's problems (``file (or images[i]): reason``)."""

    written: list[Path]
    photos: int
    classified: int
    problems: list[str]


def _photo_file(image: DetectorImage, root: Path) -> str | None:
    """The resolved path of a photo's file (relative names under ``root``); ``None`` without one."""
    if image.file is None:
        return None
    p = Path(image.file)
    return str((p if p.is_absolute() else root / p).resolve())


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def predict_detections(
    recognizer: Recognizer,
    detections: str | Path,
    out: str | Path,
    min_conf: float = 0.2,
    crop_pad: float = 0.1,
    image_root: str | Path | None = None,
    batch_size: int = 32,
    top_k: int = 5,
    rank: str | None = None,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
    workers: int = 0,
) -> DetectionRun:
    """Classify the animal boxes of a MegaDetector file into ``out`` (see the module docstring).

    Args:
        min_conf: the lowest detector confidence of a box that is classified (and listed).
        crop_pad: what each side of a box grows by, as a fraction of the box's side.
        image_root: the folder the file names are relative to (default: the detector file's).
        batch_size: photos read at a time (all their boxes are classified together).
        progress: called with the number of photos done.
        workers: loader processes that read and decode the photos (0: in this process).

    Raises:
        DataError: a bad ``out``, ``min_conf`` or ``crop_pad``; a file that is not MegaDetector's
            batch output; ``out`` written with other settings.
    """
    out = check_detections_output(out)
    if not 0 <= min_conf <= 1 or crop_pad < 0:
        raise DataError(f"--min-conf must lie in [0, 1] and --crop-pad be at least 0; got {min_conf}, {crop_pad}")
    md = read_detections(detections)
    root = Path(image_root) if image_root is not None else md.path.parent
    boxes: dict[str, dict[tuple[float, ...], Detection]] = {}  # photo -> its boxes to classify
    for image in md.images:
        if (file := _photo_file(image, root)) is not None:
            boxes.setdefault(file, {}).update((d.bbox, d) for d in image.detections
                                              if d.category in md.animal and d.conf >= min_conf)
    settings = {**run_settings(recognizer, top_k, rank, "detections"), "detections": _file_digest(md.path),
                "min_conf": min_conf, "crop_pad": crop_pad, "image_root": str(root.resolve())}

    def work(batch: PhotoBatch) -> list[dict]:
        names, images = [batch.paths[k] for k in batch.read], batch.images
        crops, owner, dets = [], [], []
        for n, (name, img) in enumerate(zip(names, images)):
            for det in boxes[name].values():
                crops.append(crop_box(img, det.bbox, crop_pad))
                owner.append(n)
                dets.append(det)
        entries = [{"file": name, "error": "", "crops": [], "image": None} for name in names]
        probs = recognizer.leaf_probs(crops) if crops else None
        predictions = recognizer.decoder.decode(probs, recognizer.method, top_k, rank) if crops else []
        for n, name in enumerate(names):
            mine = [i for i, o in enumerate(owner) if o == n]
            for i in mine:
                entries[n]["crops"].append({"bbox": list(dets[i].bbox), "row": recognizer.row(name, predictions[i])})
            image = rollup(recognizer.decoder, probs[mine] if mine else None, [predictions[i] for i in mine],
                           [dets[i].conf for i in mine], top_k)
            entries[n]["image"] = {"boxes": image.boxes, "agreeing": image.agreeing,
                                   "row": recognizer.row(name, image.prediction)}
        return entries

    loader = PhotoLoader(None, batch_size, workers, recognizer.encoder.device, keep_images=True)
    rows, _ = journal_photos(list(boxes), out, settings, overwrite, loader, work,
                             lambda path, reason: {"file": path, "error": reason, "crops": [], "image": None},
                             progress)
    return _write(recognizer, md, root, min_conf, {entry["file"]: entry for entry in rows}, out)


def _write(recognizer: Recognizer, md: DetectorFile, root: Path, min_conf: float, done: dict[str, dict],
           out: Path) -> DetectionRun:
    """The outputs of a finished run (see the module docstring)."""
    doc = copy.deepcopy(md.document)
    classes: dict[str, str] = {}  # taxon path text -> category id
    box_rows, image_rows, problems = [], [], []
    classified = 0
    for image in md.images:
        file = _photo_file(image, root)
        entry = done.get(file, {"error": "", "crops": [], "image": None}) if file else None
        failure = list(image.problems)
        if entry is not None and entry["error"]:
            failure.append(f"cannot read {file}: {entry['error']}")  # not found, not an image, ...
        name = image.file or f"images[{image.index}]"
        problems.extend(f"{name}: {p}" for p in failure)
        crops = {tuple(c["bbox"]): c["row"] for c in entry["crops"]} if entry else {}
        raw = doc["images"][image.index]
        for det in image.detections:
            row = crops.get(det.bbox)
            if row is not None:
                classified += 1
                answers = [(row["path"], row["score"]), *((a["path"], a["score"]) for a in row["alternatives"])]
                raw["detections"][det.index]["classifications"] = [
                    [classes.setdefault(PATH_SEPARATOR.join(p), str(len(classes) + 1)), round(float(s), 4)]
                    for p, s in answers if p]
            if det.conf >= min_conf:
                base = row or recognizer.row(name, None)
                box_rows.append(_box_row(base, name, det, md.categories[det.category]))
        box_rows.extend(_box_row(recognizer.row(name, None, p), name, None, "") for p in failure)
        if failure and isinstance(raw, dict) and not raw.get("failure"):
            raw["failure"] = "; ".join(failure)
        image_rows.append(_image_row(recognizer, name, image, md, min_conf, entry, "; ".join(failure)))
    doc["classification_categories"] = {cid: text for text, cid in classes.items()}
    if out.suffix.lower() == ".json":
        written = [write_detections(doc, out)]
    else:
        flat = out.suffix.lower() in (".csv", ".tsv")
        written = [write_table([flat_row(r) if flat else r for r in rows], path, "output")
                   for rows, path in ((box_rows, out), (image_rows, images_table(out)))]
    return DetectionRun(written, len(md.images), classified, problems)


def _box_row(row: dict, name: str, det: Detection | None, category: str) -> dict:
    """A per-box row: the box's columns after ``file_name``, then the prediction's."""
    rest = {k: v for k, v in row.items() if k != "file_name"}
    return {"file_name": name, "detection": det.index if det else None, "category": category,
            "detection_conf": det.conf if det else None, "bbox": list(det.bbox) if det else None, **rest}


def _image_row(recognizer: Recognizer, name: str, image: DetectorImage, md: DetectorFile, min_conf: float,
               entry: dict | None, error: str) -> dict:
    """A per-photo row: what the photo holds, its boxes and the rolled-up answer."""
    kept = sorted((d for d in image.detections if d.conf >= min_conf), key=lambda d: -d.conf)
    names = [md.categories[d.category] for d in kept]
    content = "animal" if any(d.category in md.animal for d in kept) else (names[0] if names else "blank")
    rolled = entry["image"] if entry and entry["image"] else {"boxes": 0, "agreeing": 0, "row": None}
    row = rolled["row"] or recognizer.row(name, None)
    rest = {k: v for k, v in row.items() if k not in ("file_name", "error")}
    return {"file_name": name, "content": content if not (entry and entry["error"]) else "",
            "boxes": rolled["boxes"], "agreeing": rolled["agreeing"], **rest, "error": error}


__all__ = ["DETECTION_OUTPUTS", "DetectionRun", "check_detections_output", "crop_box", "images_table",
           "predict_detections"]

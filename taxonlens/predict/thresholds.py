"""``taxonlens calibrate``: back-off thresholds from labelled photos, and their file.

:func:`calibrate_thresholds` scores labelled photos with a recognizer and sets, per rank, the
lowest confidence at which answers at that rank meet a target precision (one target, or one per
rank), with a reliability diagram of each rank's confidence. :func:`write_thresholds` saves them
as standard JSON (a rank that can never be trusted is ``null`` and listed under
``never_trusted``) together with the recognizer's settings, and the diagram as a PNG beside it;
:func:`read_thresholds` reads them back and refuses thresholds calibrated for another recognizer.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from taxonlens.data.loader import PhotoLoader
from taxonlens.errors import DataError
from taxonlens.journal import differing_settings
from taxonlens.predict.recognizer import Recognizer
from taxonlens.tables import check_writable

FORMAT = "taxonlens-thresholds/1"


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate_thresholds` found.

    Attributes:
        thresholds: rank -> minimum confidence (``inf``: never trusted; 0: always).
        targets: rank -> the precision aimed at.
        reliability: rank -> reliability diagram (see
            :meth:`~taxonlens.recognize.decode.TreeDecoder.reliability`).
        n_photos: labelled photos scored.
    """

    thresholds: dict[str, float]
    targets: dict[str, float]
    reliability: dict[str, dict[str, list]]
    n_photos: int


def calibrate_thresholds(recognizer: Recognizer, data: str | Path, precision: float = 0.9, batch_size: int = 32,
                         progress: Callable[[int, int], None] | None = None,
                         precision_at: Mapping[str, float] | None = None, workers: int = 0) -> Calibration:
    """Back-off thresholds of ``recognizer`` from labelled photos (a manifest or an image
    folder; its ``val`` split when it has one), set on its decoder (see
    :meth:`~taxonlens.recognize.decode.TreeDecoder.calibrate`). Names compare case-insensitively.

    Args:
        precision: the target precision of every rank not in ``precision_at``.
        precision_at: rank -> its own target.
        workers: processes that read and preprocess the photos (0: this one; see
            :class:`~taxonlens.data.loader.PhotoLoader`).

    Raises:
        DataError: no labelled photo, labels that are not classes of the recognizer's taxonomy,
            a target outside (0, 1] or a rank the taxonomy does not have.
        TaxonlensError: a ``batch_size`` too large for the device's memory (naming one that fits).
    """
    from taxonlens.data import read_image_folder, read_manifest
    from taxonlens.data.records import record_leaves

    ranks = recognizer.taxonomy.ranks
    targets = {r: float((precision_at or {}).get(r, precision)) for r in ranks}
    unknown = sorted(set(precision_at or {}) - set(ranks))
    if unknown:
        raise DataError(f"no rank {', '.join(unknown)} in the labels; their ranks are {', '.join(ranks)}")
    bad = {r: t for r, t in targets.items() if not 0 < t <= 1}
    if bad:
        raise DataError(f"target precision must lie in (0, 1]; got {bad}")
    data = Path(data)
    records = read_image_folder(data) if data.is_dir() else read_manifest(data)
    records = [r for r in records if r.path]
    if any(r.split == "val" for r in records):
        records = [r for r in records if r.split == "val"]
    if not records:
        raise DataError(f"{data}: no labelled photos to calibrate on")
    classes = record_leaves(records, recognizer.taxonomy)
    probs, truth, start = [], [], 0
    loader = PhotoLoader.of(recognizer.encoder, batch_size, workers, recognizer.needs_images)
    for batch in loader.batches([r.image for r in records]):
        if batch.read:  # an unreadable photo says nothing about the thresholds
            probs.append(loader.run(lambda b: recognizer.pixel_probs(b.pixels, b.images), batch))
            truth.extend(classes[start + k] for k in batch.read)
        start += len(batch.paths)
        if progress:
            progress(start, len(records))
    if not truth:
        raise DataError(f"{data}: none of the labelled photos could be read")
    leaf_probs, true_leaves = torch.cat(probs), torch.tensor(truth)
    decoder = recognizer.decoder
    thresholds = decoder.calibrate(leaf_probs, true_leaves, precision, recognizer.method, precision_at=targets)
    return Calibration(thresholds, targets, decoder.reliability(leaf_probs, true_leaves, recognizer.method),
                       len(truth))


def reliability_plot_path(out: str | Path) -> Path:
    """Where :func:`write_thresholds` draws the reliability diagram: ``T.json`` -> ``T.reliability.png``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.reliability.png")


def write_thresholds(calibration: Calibration, recognizer: Recognizer, out: str | Path) -> Path:
    """Save ``calibration`` as standard JSON with the recognizer's settings, and its reliability
    diagram as a PNG beside it (:func:`reliability_plot_path`); both written atomically.

    Returns:
        the JSON file.
    """
    out = check_writable(out)
    thresholds = {r: None if math.isinf(t) else t for r, t in calibration.thresholds.items()}
    doc = {"format": FORMAT,
           "thresholds": thresholds,
           "never_trusted": [r for r, t in thresholds.items() if t is None],
           "precision_target": calibration.targets,
           "n_photos": calibration.n_photos,
           "recognizer": recognizer.settings,  # thresholds depend on all of them
           "reliability": calibration.reliability}
    _plot_reliability(calibration, reliability_plot_path(out))
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


def _plot_reliability(calibration: Calibration, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = list(calibration.reliability)
    cols = min(4, len(ranks))
    rows = math.ceil(len(ranks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax, rank in zip(axes.flat, ranks):
        rel = calibration.reliability[rank]
        edges = rel["bin_edges"]
        centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        acc = [a if a is not None else 0.0 for a in rel["accuracy"]]
        ax.bar(centres, acc, width=edges[1] - edges[0], edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="calibrated")
        t = calibration.thresholds[rank]
        if not math.isinf(t):
            ax.axvline(t, color="tab:red", linewidth=1, label="threshold")
        ax.set(title=f"{rank} (n={sum(rel['count'])})", xlim=(0, 1), ylim=(0, 1), xlabel="confidence")
    for ax in list(axes.flat)[len(ranks):]:
        ax.axis("off")
    axes[0][0].set_ylabel("fraction right")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(out)


def read_thresholds(path: str | Path, recognizer: Recognizer | None = None) -> dict[str, float]:
    """Thresholds from a file of :func:`write_thresholds` (``null``: never trusted, read as
    ``inf``), or a plain ``{rank: minimum confidence}`` object written by hand.

    Args:
        recognizer: refuse thresholds calibrated for another one (hand-written files are not checked).

    Raises:
        DataError: an unreadable or malformed file, or thresholds made for another recognizer.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"thresholds file {path}: {e}") from None
    calibrated = isinstance(doc, dict) and doc.get("format") == FORMAT
    values = doc.get("thresholds") if calibrated else doc
    if not isinstance(values, dict) or not all(v is None or isinstance(v, (int, float)) for v in values.values()):
        raise DataError(f"thresholds file {path}: expected the JSON written by `taxonlens calibrate`, or an "
                        "object {rank: minimum confidence}")
    if calibrated and recognizer is not None:
        differ = differing_settings(doc.get("recognizer", {}), recognizer.settings)
        if differ:
            raise DataError(f"{path} was calibrated with another {', '.join(differ)}; calibrate again with the "
                            "options you predict with")
    return {str(k): math.inf if v is None else float(v) for k, v in values.items()}
